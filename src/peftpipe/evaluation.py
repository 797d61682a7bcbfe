"""Predict and score a split: shared by baseline, evaluate and export."""

from __future__ import annotations


def predict_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int):
    """(logits per example, predictions per example: tags for NER, a class otherwise)."""
    logits = task.predict_logits(model, dataset, batch_size, task.collator(tokenizer))
    return logits, task.decode(logits, dataset, labels, tokenizer)


def score_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int) -> tuple[dict, list]:
    """(metrics in the task's schema, predictions)."""
    _, predicted = predict_split(task, model, tokenizer, dataset, labels, batch_size)
    return task.compute_metrics(task.gold(dataset), predicted, labels), predicted


def write_plots(folder, task, metrics: dict, gold: list, predicted: list) -> None:
    """Per-class F1 bars and confusion rows: the same files for baseline and evaluate."""
    from peftpipe.io import atomic_path, write_json

    per_class = [{"class": name, "f1": row["f1"], "support": row["support"]}
                 for name, row in metrics[task.PER_CLASS_KEY].items()]
    with atomic_path(folder, directory=True) as tmp:
        write_json(tmp / "per_class_f1.json", per_class)
        write_json(tmp / "confusion.json", task.confusion_rows(gold, predicted))
