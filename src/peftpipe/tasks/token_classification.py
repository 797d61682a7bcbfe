"""Token classification (NER): align word tags to sub-words, predict, decode, score.

Scoring is at word level against the full gold tags of the split: each word's prediction
is the one at its first sub-word, and a word cut off by ``max_length`` counts as ``O``, so
truncation costs recall instead of silently shrinking the test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftpipe.errors import DataError, ModelError
from peftpipe.progress import progress

PEFT_TASK_TYPE = "TOKEN_CLS"
# Columns the model's forward takes; the others (tokens, tags, word_ids) are for scoring.
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")
IGNORE = -100


def continuation_labels(labels: list[str]) -> list[int]:
    """For each label id, the id a continuation sub-word gets: B-X becomes I-X when it exists."""
    index = {name: i for i, name in enumerate(labels)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(labels)]


def align_labels(word_ids: list[int | None], word_labels: list[int], label_all_tokens: bool,
                 continuation: list[int]) -> list[int]:
    """First sub-word of a word gets its label; special tokens get -100; continuation
    sub-words get -100, or the word's I- label when ``label_all_tokens``."""
    aligned, previous = [], None
    for word in word_ids:
        if word is None:
            aligned.append(IGNORE)
        elif word != previous:
            aligned.append(word_labels[word])
        else:
            aligned.append(continuation[word_labels[word]] if label_all_tokens else IGNORE)
        previous = word
    return aligned


def tokenize(frame: pd.DataFrame, tokenizer, labels: list[str], max_length: int,
             label_all_tokens: bool):
    """A datasets.Dataset with model inputs, aligned labels, word_ids and the gold tags."""
    import datasets

    label_ids = {name: i for i, name in enumerate(labels)}
    continuation = continuation_labels(labels)

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        encoded["labels"], encoded["word_ids"] = [], []
        for i, tags in enumerate(batch["tags"]):
            word_ids = encoded.word_ids(i)
            word_labels = [label_ids[t] for t in tags]
            encoded["labels"].append(align_labels(word_ids, word_labels, label_all_tokens, continuation))
            encoded["word_ids"].append([-1 if w is None else w for w in word_ids])
        return encoded

    dataset = datasets.Dataset.from_pandas(frame[["tokens", "tags"]], preserve_index=False)
    return dataset.map(encode, batched=True, desc="tokenize")


def load_model(path: str, labels: list[str], revision: str | None = None):
    """The base model with a new token-classification head sized for ``labels``."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    try:
        return AutoModelForTokenClassification.from_pretrained(
            path,
            revision=revision,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
    except ValueError as err:
        if "Unrecognized configuration class" not in str(err):
            raise
        kind = type(AutoConfig.from_pretrained(path, revision=revision)).__name__
        raise ModelError(
            f"model {path!r} ({kind}) has no token-classification head; use an encoder "
            f"such as BERT, RoBERTa or DeBERTa for task.kind token_classification"
        ) from None


def head_modules(model) -> list[str]:
    """The freshly initialised head, which must be trained and saved with the adapter."""
    return [name for name in ("classifier", "score") if hasattr(model, name)]


def collator(tokenizer):
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)


def model_inputs(dataset):
    return dataset.select_columns([c for c in MODEL_COLUMNS if c in dataset.column_names])


def predict_logits(model, dataset, batch_size: int, data_collator) -> list[np.ndarray]:
    """Logits per example (positions x labels), batched by length to waste no padding."""
    import torch

    features = model_inputs(dataset).remove_columns("labels")
    lengths = np.array([len(ids) for ids in features["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    device = next(model.parameters()).device
    out: list[np.ndarray] = [np.empty(0)] * len(features)
    model.eval()
    with torch.inference_mode():
        starts = range(0, len(order), batch_size)
        for start in progress(starts, len(starts), "predict (batches)"):
            rows = order[start : start + batch_size]
            batch = data_collator([features[int(i)] for i in rows])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            for j, i in enumerate(rows):
                out[i] = logits[j, : lengths[i]]
    return out


def decode(logits: list[np.ndarray], dataset, labels: list[str]) -> list[list[str]]:
    """Word-level tags: each word takes the prediction at its first sub-word; words cut by
    truncation are ``O``."""
    predictions = []
    for row_logits, word_ids, tags in zip(logits, dataset["word_ids"], dataset["tags"]):
        words = ["O"] * len(tags)
        previous = -1
        for position, word in enumerate(word_ids):
            if word >= 0 and word != previous:
                words[word] = labels[int(row_logits[position].argmax())]
            previous = word
        predictions.append(words)
    return predictions


def confusion_rows(gold: list[list[str]], predicted: list[list[str]]) -> list[dict]:
    """One row per word: its gold and predicted entity type (O outside entities), for DVC's
    confusion template. Word level, so a type mix-up and a missed entity both show."""
    def kind(tag: str) -> str:
        return tag[2:] if tag[:2] in ("B-", "I-") else tag

    return [{"actual": kind(g), "predicted": kind(p)}
            for gold_row, pred_row in zip(gold, predicted) for g, p in zip(gold_row, pred_row)]


def reference_predictions(gold: list[list[str]]) -> list[list[str]]:
    """The trivial reference: every word is O."""
    return [["O"] * len(tags) for tags in gold]


def compute_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """seqeval entity-level precision/recall/F1 (overall and per type) and token accuracy."""
    from seqeval.metrics import accuracy_score, classification_report

    if not gold:
        raise DataError("cannot score an empty split")
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    micro, macro = report["micro avg"], report["macro avg"]
    return {
        "overall": {
            "precision": float(micro["precision"]),
            "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]),
            "macro_f1": float(macro["f1-score"]),
            "accuracy": float(accuracy_score(gold, predicted)),
        },
        "per_type": {
            name: {
                "precision": float(row["precision"]),
                "recall": float(row["recall"]),
                "f1": float(row["f1-score"]),
                "support": int(row["support"]),
            }
            for name, row in sorted(report.items())
            if not name.endswith(" avg")
        },
        "examples": len(gold),
    }


def trainer_metrics(labels: list[str]):
    """compute_metrics for the Trainer's evaluation on validation (labelled sub-words)."""

    def compute(eval_prediction) -> dict:
        logits, label_ids = eval_prediction
        predicted_ids = logits.argmax(-1)
        gold, predicted = [], []
        for row_pred, row_gold in zip(predicted_ids, label_ids):
            keep = row_gold != IGNORE
            gold.append([labels[i] for i in row_gold[keep]])
            predicted.append([labels[i] for i in row_pred[keep]])
        overall = compute_metrics(gold, predicted)["overall"]
        return {"f1": overall["f1"], "precision": overall["precision"], "recall": overall["recall"]}

    return compute
