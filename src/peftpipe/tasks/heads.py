"""What the classification tasks share: a pretrained model with a fresh head sized for the
label set, and logits predicted in length-sorted batches (generation batches that way too)."""

from __future__ import annotations

import numpy as np

from peftpipe.errors import ModelError
from peftpipe.progress import progress


def load_with_head(auto_class: str, path: str, labels: list[str], revision: str | None, options: dict,
                   unsuitable: str):
    """``auto_class`` (e.g. AutoModelForTokenClassification) from ``path`` with a new head
    for ``labels``; a model without such a head stops with ``unsuitable`` as advice."""
    import transformers

    try:
        return getattr(transformers, auto_class).from_pretrained(
            path,
            revision=revision,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            **options,
        )
    except ValueError as err:
        if "Unrecognized configuration class" not in str(err):
            raise
        kind = type(transformers.AutoConfig.from_pretrained(path, revision=revision)).__name__
        raise ModelError(f"model {path!r} ({kind}) {unsuitable}") from None


# The names transformers gives a new classification head: BERT-style ``classifier``, a
# decoder's ``score``. Trained and saved with the adapter, and kept out of 4-bit quantization.
HEAD_NAMES = ("classifier", "score")


def head_modules(model) -> list[str]:
    """The freshly initialised head, which must be trained and saved with the adapter."""
    return [name for name in HEAD_NAMES if hasattr(model, name)]


def length_sorted_batches(lengths, batch_size: int, what: str):
    """Row indices in batches of similar length, shortest first (ties keep the dataset's
    order), with progress: batches waste no padding."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    starts = range(0, len(order), batch_size)
    for start in progress(starts, len(starts), what):
        yield order[start : start + batch_size]


def predict_in_length_order(model, features, batch_size: int, data_collator) -> list[np.ndarray]:
    """Logits per example (cut to its own length where they are per position), batched
    by length to waste no padding, returned in the dataset's order."""
    import torch

    lengths = [len(ids) for ids in features["input_ids"]]
    device = model.device  # transformers and peft models say; an ONNX Runtime one runs on the CPU
    out: list[np.ndarray] = [np.empty(0)] * len(features)
    model.eval()
    with torch.inference_mode():
        for rows in length_sorted_batches(lengths, batch_size, "predict (batches)"):
            batch = data_collator([features[int(i)] for i in rows])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            for j, i in enumerate(rows):
                out[i] = logits[j, : lengths[i]] if logits.ndim == 3 else logits[j]
    return out
