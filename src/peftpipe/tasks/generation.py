"""Generation: the model writes the label's text after the input (Financial PhraseBank
sentiment as words). Works with encoder-decoders (T5: SEQ_2_SEQ_LM, the input encoded and
the target decoded) and with decoder LLMs (CAUSAL_LM: the target follows a prompt made of
the input, and only the target's tokens are learned).

Canonical columns are those of sequence classification (``text``, ``label``); the label
texts are the "classes", so the same scores apply: exact-match accuracy (a generated text
counts only when it equals the gold label after stripping), balanced accuracy, macro and
per-class P/R/F1, plus the share of generations that are no label at all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftpipe.progress import progress
from peftpipe.tasks import sequence_classification as _classes
from peftpipe.tasks.heads import length_sorted_batches
from peftpipe.tasks.sequence_classification import SequenceClassification

PIPELINE_TAG = "text-generation"
REFERENCE_NAME = "majority class"
PER_CLASS_KEY = "per_class"
IGNORE = -100
# A decoder LLM sees the input, then this cue, then writes the label.
CUE = "\nLabel:"
MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")

# The data side (canonical, row_keys, label_values, gold, prediction_rows, ...) is sequence
# classification's, inherited by the Generation class below: a text and its label's name.


def pipeline_input(example: dict) -> None:
    """No pipeline: export checks generation by regenerating the test split instead."""
    return None


def truncation(dataset) -> dict:
    """Rows whose text was cut to fit model.max_length, and the text's tokens lost."""
    cut = [full - len(prompt) for full, prompt in zip(dataset["full_length"], dataset["prompt_ids"])]
    return {"rows": len(cut), "rows_cut": sum(c > 0 for c in cut), "tokens_cut": sum(cut)}


def is_encoder_decoder(path: str, revision: str | None = None) -> bool:
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(path, revision=revision), "is_encoder_decoder", False))


def peft_task_type(model) -> str:
    return "SEQ_2_SEQ_LM" if model.config.is_encoder_decoder else "CAUSAL_LM"


# --------------------------------------------------------------------------- model


def tokenize(frame: pd.DataFrame, tokenizer, labels: list[str], params):
    """Seq2seq: input_ids from the text, labels from the target. Causal: input_ids =
    text + cue + " " + target + end token, labels = -100 before the target; prompt_ids
    (text + cue) alone for generation. Only the text is cut to fit model.max_length."""
    import datasets

    max_length = params.model.max_length
    seq2seq = is_encoder_decoder(tokenizer.name_or_path, params.model.revision)  # the model's folder or id

    def encode(batch: dict) -> dict:
        if seq2seq:
            encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
            encoded["labels"] = tokenizer(text_target=batch["label"], truncation=True, max_length=max_length)["input_ids"]
            encoded["prompt_ids"] = encoded["input_ids"]
            encoded["full_length"] = [len(ids) for ids in tokenizer(batch["text"])["input_ids"]]
            return encoded
        cue = tokenizer(CUE, add_special_tokens=False)["input_ids"]
        out = {"input_ids": [], "attention_mask": [], "labels": [], "prompt_ids": [], "full_length": []}
        for text, label in zip(batch["text"], batch["label"]):
            target = tokenizer(" " + label, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            prompt = causal_prompt(tokenizer, text, max_length - len(target))
            out["input_ids"].append(prompt + target)
            out["attention_mask"].append([1] * (len(prompt) + len(target)))
            out["labels"].append([IGNORE] * len(prompt) + target)
            out["prompt_ids"].append(prompt)
            out["full_length"].append(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + len(cue))
        return out

    dataset = datasets.Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)
    return dataset.map(encode, batched=True, desc="tokenize")


def causal_prompt(tokenizer, text: str, room: int) -> list[int]:
    """A decoder LLM's prompt: the text's tokens, cut to leave the cue within ``room``, then the cue."""
    cue = tokenizer(CUE, add_special_tokens=False)["input_ids"]
    words = tokenizer(text, add_special_tokens=False)["input_ids"]
    return words[: max(1, room - len(cue))] + cue


def load_model(path: str, labels: list[str], revision: str | None = None, **options):
    """The base language model as it is: the labels are words it learns to write."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kind = AutoModelForSeq2SeqLM if is_encoder_decoder(path, revision) else AutoModelForCausalLM
    return kind.from_pretrained(path, revision=revision, **options)


def head_modules(model) -> list[str]:
    return []  # no new head: the language-model head writes the label


def collator(tokenizer):
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE)


def model_inputs(dataset):
    return dataset.select_columns([c for c in MODEL_COLUMNS if c in dataset.column_names])


def train_label_ids(dataset) -> list[int]:
    """Every target token (class weights over the vocabulary are not offered)."""
    return [i for row in dataset["labels"] for i in row if i != IGNORE]


def generation_steps(tokenizer, labels: list[str]) -> int:
    """Enough new tokens for the longest label and its end token."""
    return 1 + max(len(tokenizer(" " + name, add_special_tokens=False)["input_ids"]) for name in labels)


def predict_logits(model, dataset, batch_size: int, data_collator, labels: list[str]) -> list[np.ndarray]:
    """Greedy generation after each tokenized prompt, enough steps for the longest label of
    the label set (not of this split's gold labels: a split may lack the longest one, and
    serving must generate the same steps as evaluate did)."""
    tokenizer = data_collator.tokenizer
    steps = generation_steps(tokenizer, labels)
    return generate_logits(model, tokenizer, dataset["prompt_ids"], steps, batch_size)


def write_labels(model, tokenizer, texts: list[str], labels: list[str], max_length: int,
                 batch_size: int = 16) -> list[tuple[str, float]]:
    """For serving: what the model writes after each text (prompted as in training) and the
    probability of that greedy continuation up to its end token."""
    steps = generation_steps(tokenizer, labels)
    if model.config.is_encoder_decoder:
        prompts = [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    else:
        prompts = [causal_prompt(tokenizer, text, max_length - steps) for text in texts]
    logits = generate_logits(model, tokenizer, prompts, steps, batch_size)
    written = []
    for label, step_logits in zip(decode(logits, None, labels, tokenizer), logits):
        log_probs = step_logits - np.logaddexp.reduce(step_logits, axis=-1, keepdims=True)
        chosen = step_logits.argmax(-1)
        ends = np.flatnonzero(chosen == tokenizer.eos_token_id)
        upto = int(ends[0]) + 1 if len(ends) else len(chosen)
        written.append((label, float(np.exp(log_probs[np.arange(upto), chosen[:upto]].sum()))))
    return written


def generate_logits(model, tokenizer, prompts: list[list[int]], steps: int, batch_size: int) -> list[np.ndarray]:
    """Greedy generation, a fixed number of steps per example (so two models' outputs line
    up step for step): the raw logits of each step, (steps x vocabulary) per example."""
    import torch

    device = next(model.parameters()).device
    seq2seq = model.config.is_encoder_decoder
    prompt_learning = _prompt_learning(model)
    out: list[np.ndarray] = [np.empty(0)] * len(prompts)
    model.eval()
    with torch.inference_mode():
        for rows in _generation_batches(model, prompts, batch_size):
            width = max(len(prompts[i]) for i in rows)
            pad = tokenizer.pad_token_id
            # Decoder LLMs continue the last token: pad on the left. Encoders: on the right.
            ids = torch.tensor([_pad(prompts[i], width, pad, left=not seq2seq) for i in rows], device=device)
            mask = torch.tensor([_pad([1] * len(prompts[i]), width, 0, left=not seq2seq) for i in rows], device=device)
            if prompt_learning:
                logits = _greedy_by_forward(model, ids, mask, steps, seq2seq).float().cpu().numpy()
            else:
                generated = model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                    num_beams=1, output_logits=True, return_dict_in_generate=True, pad_token_id=pad)
                logits = torch.stack(generated.logits, dim=1).float().cpu().numpy()
            for j, i in enumerate(rows):
                out[i] = logits[j]
    return out


def _greedy_by_forward(model, ids, mask, steps: int, seq2seq: bool):
    """(rows x steps x vocabulary) logits of greedy decoding where each step is the model's
    forward pass over the prompt and what it wrote so far: the computation training did.
    For prompt-learning adapters, `generate` is not that computation: with transformers 5.24
    and peft 0.21.2 a prefix-tuned Llama's first generated token already differs from the
    forward pass with the key/value cache (finphrase-prefix-cpu's SmolLM2 wrote " neutral_"
    and " neutral wis", 64% of test rows no label), and its second without it
    (tests/test_generation_units.py). A label is a few tokens: the passes cost little."""
    import torch

    written = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id, device=ids.device) if seq2seq \
        else ids[:, :0]
    every = []
    for _ in range(steps):
        if seq2seq:
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=written).logits[:, -1, :]
        else:
            sequence = torch.cat([ids, written], dim=1)
            logits = model(input_ids=sequence, attention_mask=torch.cat([mask, torch.ones_like(written)], dim=1)
                           ).logits[:, -1, :]
        every.append(logits)
        written = torch.cat([written, logits.argmax(-1, keepdim=True)], dim=1)
    return torch.stack(every, dim=1)


def _generation_batches(model, prompts: list[list[int]], batch_size: int):
    """Length-sorted batches; for prompt-learning adapters (prefix tuning) only prompts of one
    length per batch. With transformers 5.24 and peft 0.21.2, a left-padded batch changes a
    prefix-tuned model's greedy output (the same prompt gave another label alone than in a
    batch of 64: tests/test_generation.py), so evaluate and serving disagreed; without padding
    every batching gives the output the prompt gives alone, on every release."""
    lengths = [len(p) for p in prompts]
    if not _prompt_learning(model):
        yield from length_sorted_batches(lengths, batch_size, "generate (batches)")
        return
    by_length: dict[int, list[int]] = {}
    for i in np.argsort(np.asarray(lengths), kind="stable"):
        by_length.setdefault(lengths[i], []).append(int(i))
    batches = [same[start:start + batch_size] for same in by_length.values()
               for start in range(0, len(same), batch_size)]
    yield from progress(batches, len(batches), "generate (batches of one length)")


def _prompt_learning(model) -> bool:
    """Whether the model's active adapter learns prompts (prefix tuning, P-tuning)."""
    return getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)


def _pad(row: list[int], width: int, value: int, left: bool) -> list[int]:
    filler = [value] * (width - len(row))
    return filler + row if left else row + filler


def decode(logits: list[np.ndarray], dataset, labels: list[str], tokenizer=None) -> list[str]:
    """The text up to the first end token, stripped."""
    texts = []
    for steps in logits:
        ids = []
        for token in steps.argmax(-1).tolist():
            if token == tokenizer.eos_token_id:
                break
            ids.append(token)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return texts


def compute_metrics(gold_labels: list[str], predicted: list[str], labels: list[str]) -> dict:
    metrics = _classes.compute_metrics(gold_labels, predicted, labels)
    metrics["overall"]["f1"] = metrics["overall"]["macro_f1"]
    metrics["overall"]["exact_match"] = metrics["overall"]["accuracy"]
    metrics["overall"]["not_a_label"] = float(np.mean([p not in set(labels) for p in predicted]))
    return metrics


def preprocess_logits(logits, labels):
    """Keep the argmax only: the Trainer would otherwise gather (rows x length x vocabulary).
    Encoder-decoders return (logits, encoder states)."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


def trainer_metrics(labels: list[str], model=None):
    """Validation during training: how many target tokens the model predicts right when
    fed the gold prefix (teacher forcing). evaluate scores real generations."""
    shift = model is not None and not model.config.is_encoder_decoder

    def compute(eval_prediction) -> dict:
        predicted, label_ids = eval_prediction
        predicted, label_ids = np.asarray(predicted), np.asarray(label_ids)
        # Prompt and P-tuning put their virtual tokens first: peft's loss skips them, their
        # logits are still there (n more columns than the labels).
        predicted = predicted[:, predicted.shape[1] - label_ids.shape[1]:]
        if shift:  # a decoder's logits at position t predict token t+1
            predicted, label_ids = predicted[:, :-1], label_ids[:, 1:]
        keep = label_ids != IGNORE
        return {"token_accuracy": float((predicted[keep] == label_ids[keep]).mean())}

    return compute


class Generation(SequenceClassification, module=__name__):
    kind = "generation"
    head_suffix = None  # the language-model head writes the label
    reads_pairs = False
    writes_labels = True
    samples_per_class = False
    loops = ("trainer",)
    class_weights = False  # the targets are words, not classes

    def positive_index(self, labels: list[str]) -> int | None:
        return None  # f1 is macro F1 over the label texts, whatever their number

    def intervals(self, gold, predicted, labels, seed: int = 0) -> dict[str, list[float]]:
        found = super().intervals(gold, predicted, labels, seed)
        found["exact_match"] = found["accuracy"]
        return found

    def onnx_unsupported(self) -> str | None:
        return "generation decodes token by token in PyTorch"

    def serving_input_problem(self, texts: list, backend: str) -> str | None:
        if backend != "torch":
            return "a generation model serves with --backend torch only (it decodes in PyTorch)"
        return super().serving_input_problem(texts, backend)
