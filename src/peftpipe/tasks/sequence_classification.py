"""Sequence classification: one label per text or text pair (MRPC, topics, sentiment).

Canonical columns are ``text``, ``text_pair`` (only for pair data) and ``label`` (the class
name). Pairs are tokenized as pairs (the model's own separator and segment ids), truncated
together to ``model.max_length``. Scores come from scikit-learn: accuracy, balanced
accuracy, macro and per-class precision/recall/F1; ``f1`` is the positive class's F1 for
two classes (the second label, as GLUE reports MRPC) and macro F1 otherwise.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from peftpipe.errors import DataError
from peftpipe.tasks import fields, heads
from peftpipe.tasks.base import ClassCounts

PIPELINE_TAG = "text-classification"
REFERENCE_NAME = "majority class"
PER_CLASS_KEY = "per_class"
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")


# --------------------------------------------------------------------------- data


def canonical(frame: pd.DataFrame, data, labels: dict[int, str], where: str) -> tuple[pd.DataFrame, int]:
    """Canonical columns (text, text_pair, label as a name; a `group` column is kept);
    several text columns are joined with a space. Rows with an empty text are dropped (the
    caller counts them). Returns (frame, 0): nothing is repaired here."""
    columns = data.columns
    sources = {"text": columns.text_columns, "label": [columns.label]}
    if columns.text_pair:
        sources["text_pair"] = [columns.text_pair]
    missing = [c for names in sources.values() for c in names if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))} "
            f"(set data.columns.text / data.columns.text_pair / data.columns.label)"
        )
    labels_column = frame[columns.label]
    if labels_column.isna().any():
        rows = np.flatnonzero(labels_column.isna())
        raise DataError(f"{where}: row {rows[0]} has no label ({len(rows)} of {len(frame)} rows have none); give "
                        f"those rows a class or remove them")
    out = pd.DataFrame({"label": _label_names(labels_column.tolist(), labels, where)})
    for field, names in sources.items():
        if field == "label":
            continue
        parts = [[fields.text(v, name, f"{where}: row {i}") for i, v in enumerate(frame[name])] for name in names]
        out[field] = [" ".join(p.strip() for p in row if p.strip()) for row in zip(*parts)]
    if "group" in frame:
        out["group"] = frame["group"].to_numpy()
    keep = np.ones(len(out), dtype=bool)
    for field in sources.keys() - {"label"}:
        keep &= out[field].str.strip().str.len().to_numpy() > 0
    return out[keep].reset_index(drop=True)[[c for c in ("text", "text_pair", "label", "group") if c in out]], 0


def _label_names(values: list, labels: dict[int, str], where: str) -> list[str]:
    """Class names: integer ids (GLUE, hub ClassLabel columns) are looked up in data.labels.
    A row that gives neither a name nor an id, or ids mixed with names, stops."""
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        # A column of true/false (is_spam, toxic) names two classes; pandas and JSON read it as booleans.
        return [str(bool(v)).lower() for v in values]
    values = [_name_or_id(v, f"{where}: row {i}") for i, v in enumerate(values)]
    _no_digits_among_names(values, where)
    ids = [isinstance(v, int) for v in values]
    if any(ids) and not all(ids):
        row = ids.index(not ids[0])  # the first row that differs from the first
        raise DataError(f"{where}: row {row}: label {values[row]!r} is {'an id' if ids[row] else 'a name'}, but other "
                        f"rows give {'names' if ids[row] else 'ids'}; use class names, or ids into data.labels, throughout")
    if not any(ids):
        return values
    return fields.names_from_ids(values, labels, "label", "class names", where)


def _no_digits_among_names(values: list, where: str) -> None:
    """A CSV's label column is read as text when any row holds a name, so an id among names
    ("1" among "World", "Sports") would become a class of its own: stop, as for JSON's ids."""
    names = [v for v in values if isinstance(v, str)]
    digits = [i for i, v in enumerate(values) if isinstance(v, str) and v.lstrip("+-").isdigit()]
    if digits and len(digits) < len(names):
        row = digits[0]
        example = next(v for v in names if not v.lstrip("+-").isdigit())
        raise DataError(f"{where}: row {row}: label {values[row]!r} is a number, but other rows give names "
                        f"({example!r}); use class names, or ids into data.labels, throughout")


def _name_or_id(value, where: str) -> str | int:
    """A label as written: a name (string) or an id (integer; a float like 2.0 is one)."""
    if isinstance(value, (bool, np.bool_)) or not fields.is_scalar(value):
        raise DataError(f"{where}: label {value!r} is not a class name or id ({fields.describe(value)})")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise DataError(f"{where}: label {value!r} is not a class name or id (a fraction)")
        return int(value)
    # Spaces around a name are an artefact of how the file was written ("pos" and "pos "
    # would otherwise be two classes); a name that is only spaces is no label.
    name = str(value).strip()
    if not name:
        raise DataError(f"{where} has no label (only spaces)")
    return name


def row_keys(frame: pd.DataFrame) -> list:
    """What makes two rows the same example (leakage between splits)."""
    return list(zip(frame["text"], frame["text_pair"])) if "text_pair" in frame else list(frame["text"])


def label_values(frame: pd.DataFrame) -> set[str]:
    return set(frame["label"])


def default_labels(splits: dict[str, pd.DataFrame]) -> list[str]:
    """Sorted class names: a stable id order whatever order the rows come in."""
    return sorted({name for frame in splits.values() for name in frame["label"]})


def hub_label_names(features, data) -> list[str]:
    return list(getattr(features.get(data.columns.label), "names", None) or [])


def class_counts(frame: pd.DataFrame) -> dict[str, int]:
    return dict(sorted(Counter(frame["label"]).items()))


def data_report(splits: dict[str, pd.DataFrame]) -> dict:
    """Per split: rows and rows per class; for validation/test also how many texts repeat
    a train text (leakage) and which classes train never shows."""
    train_texts = set(row_keys(splits["train"])) if "train" in splits else set()
    train_classes = set(splits["train"]["label"]) if "train" in splits else set()
    report = {}
    for name, frame in splits.items():
        report[name] = {"rows": len(frame), "classes": class_counts(frame)}
        if name != "train":
            report[name]["rows_also_in_train"] = sum(k in train_texts for k in row_keys(frame))
            report[name]["classes_missing_from_train"] = sorted(set(frame["label"]) - train_classes)
    return report


# --------------------------------------------------------------------------- model


def tokenize(frame: pd.DataFrame, tokenizer, labels: list[str], params):
    """A datasets.Dataset with model inputs, the class id and the text(s) and class name."""
    import datasets

    label_ids = {name: i for i, name in enumerate(labels)}
    pair = "text_pair" in frame

    def encode(batch: dict) -> dict:
        texts = (batch["text"], batch["text_pair"] if pair else None)
        encoded = tokenizer(*texts, truncation=True, max_length=params.model.max_length)
        encoded["labels"] = [label_ids[name] for name in batch["label"]]
        # How many tokens each row had before the cut (truncation reports them).
        encoded["full_length"] = [len(ids) for ids in tokenizer(*texts, truncation=False)["input_ids"]]
        return encoded

    columns = ["text", "text_pair", "label"] if pair else ["text", "label"]
    dataset = datasets.Dataset.from_pandas(frame[columns], preserve_index=False)
    return dataset.map(encode, batched=True, desc="tokenize")


def load_model(path: str, labels: list[str], revision: str | None = None, **options):
    """The base model with a new sequence-classification head sized for ``labels``."""
    return heads.load_with_head("AutoModelForSequenceClassification", path, labels, revision, options,
                                "has no sequence-classification head; use an encoder (BERT, RoBERTa) or a decoder LLM (Llama, Mistral) for task.kind sequence_classification")


def truncation(dataset) -> dict:
    """Rows cut at model.max_length, and the tokens lost."""
    cut = [full - len(ids) for full, ids in zip(dataset["full_length"], dataset["input_ids"])]
    return {"rows": len(cut), "rows_cut": sum(c > 0 for c in cut), "tokens_cut": sum(cut)}


def peft_task_type(model) -> str:
    return "SEQ_CLS"


head_modules = heads.head_modules


def collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def model_inputs(dataset):
    return dataset.select_columns([c for c in MODEL_COLUMNS if c in dataset.column_names])


def gold(dataset) -> list[str]:
    return list(dataset["label"])


def train_label_ids(dataset) -> list[int]:
    """The class id of every train row (for class weights)."""
    return list(dataset["labels"])


def predict_logits(model, dataset, batch_size: int, data_collator, labels: list[str]) -> list[np.ndarray]:
    """Class logits per example, batched by length to waste no padding."""
    return heads.predict_in_length_order(model, model_inputs(dataset).remove_columns("labels"), batch_size,
                                         data_collator)


def decode(logits: list[np.ndarray], dataset, labels: list[str], tokenizer=None) -> list[str]:
    return [labels[int(row.argmax())] for row in logits]


def pipeline_input(example: dict) -> str | dict:
    """What the text-classification pipeline reads for a tokenized example (a pair as a dict)."""
    if example.get("text_pair"):
        return {"text": example["text"], "text_pair": example["text_pair"]}
    return example["text"]


def prediction_rows(dataset, predicted: list[str]) -> list[dict]:
    """data/predictions/test.jsonl: the text(s), the gold class, the predicted class."""
    columns = [c for c in ("text", "text_pair") if c in dataset.column_names]
    texts = {c: dataset[c] for c in columns}
    return [{**{c: texts[c][i] for c in columns}, "gold": gold, "predicted": pred}
            for i, (gold, pred) in enumerate(zip(dataset["label"], predicted))]


def confusion_rows(gold_labels: list[str], predicted: list[str]) -> list[dict]:
    return [{"actual": g, "predicted": p} for g, p in zip(gold_labels, predicted)]


def reference_predictions(train_gold: list[str], gold_labels: list[str]) -> list[str]:
    """The majority-class reference: the train split's most common class for every row."""
    majority = Counter(train_gold).most_common(1)[0][0]
    return [majority] * len(gold_labels)


def positive_index(labels: list[str]) -> int | None:
    """Two classes: the second in data.labels order is the positive one (as GLUE reports
    MRPC): ``f1`` is its F1. More classes: none (``f1`` is macro F1)."""
    return 1 if len(labels) == 2 else None


def compute_metrics(gold_labels: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro and per-class P/R/F1 (scikit-learn)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, classification_report

    if not gold_labels:
        raise DataError("cannot score an empty split")
    report = classification_report(gold_labels, predicted, labels=labels, output_dict=True, zero_division=0)
    macro = report["macro avg"]
    index = positive_index(labels)
    positive = report[labels[index]] if index is not None else None
    return {
        "overall": {
            "accuracy": float(accuracy_score(gold_labels, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(gold_labels, predicted)),
            # Two classes: the positive (second) class's F1, as GLUE reports MRPC.
            "f1": float(positive["f1-score"] if positive else macro["f1-score"]),
            "macro_precision": float(macro["precision"]),
            "macro_recall": float(macro["recall"]),
            "macro_f1": float(macro["f1-score"]),
        },
        PER_CLASS_KEY: {
            name: {
                "precision": float(report[name]["precision"]),
                "recall": float(report[name]["recall"]),
                "f1": float(report[name]["f1-score"]),
                "support": int(report[name]["support"]),
            }
            for name in labels
        },
        "examples": len(gold_labels),
    }


def trainer_metrics(labels: list[str], model=None):
    """compute_metrics for the Trainer's evaluation on validation."""

    def compute(eval_prediction) -> dict:
        logits, label_ids = eval_prediction
        predicted = [labels[i] for i in np.asarray(logits).argmax(-1)]
        overall = compute_metrics([labels[i] for i in label_ids], predicted, labels)["overall"]
        return {"f1": overall["f1"], "accuracy": overall["accuracy"],
                "balanced_accuracy": overall["balanced_accuracy"]}

    return compute


class SequenceClassification(ClassCounts, module=__name__):
    kind = "sequence_classification"
    head_suffix = "ForSequenceClassification"
    reads_pairs = True
    samples_per_class = True

    def positive_index(self, labels: list[str]) -> int | None:
        return positive_index(labels)

    def pipeline_options(self, tokenizer) -> dict:
        return {"truncation": True, "top_k": None}  # every class's score, best first

    def answer(self, text, output, tokens: int, limit: int) -> dict:
        """The best class and its score, every class's score (``output``: the pipeline's
        ranked list; one dict is the best class alone), and whether the text was cut: a
        classifier reads one window, and says when the text was longer rather than hide it."""
        ranked = output if isinstance(output, list) else [output]
        row = {"label": ranked[0]["label"], "score": round(float(ranked[0]["score"]), 4)}
        if len(ranked) > 1:
            row["scores"] = {entry["label"]: round(float(entry["score"]), 4) for entry in ranked}
        row["truncated"] = tokens > limit
        if tokens > limit:
            row["truncated_at_tokens"] = limit
        return row
