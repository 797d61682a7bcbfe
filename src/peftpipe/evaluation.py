"""Predict and score a split: shared by baseline, evaluate and export."""

from __future__ import annotations


def predict_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int):
    """(logits per example, predicted tags per example)."""
    logits = task.predict_logits(model, dataset, batch_size, task.collator(tokenizer))
    return logits, task.decode(logits, dataset, labels)


def score_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int) -> tuple[dict, list]:
    """(metrics in the shared schema, predicted tags)."""
    _, predicted = predict_split(task, model, tokenizer, dataset, labels, batch_size)
    return task.compute_metrics(dataset["tags"], predicted), predicted
