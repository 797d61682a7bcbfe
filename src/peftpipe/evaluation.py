"""Predict and score a split: shared by baseline, evaluate and export."""

from __future__ import annotations

from peftpipe.io import atomic_path, write_json


def predict_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int):
    """(logits per example, predictions per example: tags for NER, a class otherwise)."""
    logits = task.predict_logits(model, dataset, batch_size, task.collator(tokenizer), labels)
    return logits, task.decode(logits, dataset, labels, tokenizer)


def score_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int) -> tuple[dict, list]:
    """(metrics in the task's schema, with intervals; predictions)."""
    _, predicted = predict_split(task, model, tokenizer, dataset, labels, batch_size)
    return scored(task, task.gold(dataset), predicted, labels), predicted


def scored(task, gold: list, predicted: list, labels: list[str]) -> dict:
    """The task's metrics, each headline one with its seeded bootstrap 95% interval over the
    examples (``overall.f1_ci: {low, high}``: numbers, which `dvc metrics show/diff` and `dvc exp
    show` print; they drop lists), so every number compared comes with its uncertainty."""

    metrics = task.compute_metrics(gold, predicted, labels)
    overall = metrics["overall"]
    for name, bounds in task.intervals(gold, predicted, labels).items():
        if name in overall:
            overall[f"{name}_ci"] = {"low": bounds[0], "high": bounds[1]}
    metrics["f1_is"] = task.f1_meaning(labels)  # beside overall: dvc metrics show prints it; compare reads numbers
    return metrics


def report_truncation(metrics: dict, cut: dict | None, name: str, max_length: int) -> None:
    """An extra test set's rows cut at model.max_length: in its metrics and said (the
    tokenize stage reports the splits'; an official test set can hold longer rows)."""
    if not cut:
        return
    metrics["truncation"] = cut
    if cut["rows_cut"]:
        lost = {k[:-4]: v for k, v in cut.items() if k.endswith("_cut") and k != "rows_cut"}
        print(f"evaluate: warning: {name}: {cut['rows_cut']} of {cut['rows']} rows are longer than model.max_length "
              f"{max_length} and were cut ({', '.join(f'{v} {k}' for k, v in lost.items())} lost"
              f"{'; lost words count as O' if 'words' in lost else ''})")


PREDICTIONS_MEANING = "task.json"


def describe_predictions(folder, task_kind: str, labels: list[str]) -> None:
    """task.json beside the predictions files: the task and the labels in data.labels order,
    so whoever reads the rows (`peftpipe compare`) scores them as this stage did (a binary
    f1 is the same class's) instead of guessing from the rows."""
    write_json(folder / PREDICTIONS_MEANING, {"task": task_kind, "labels": list(labels)})


def write_plots(folder, task, metrics: dict, gold: list, predicted: list) -> None:
    """Per-class F1 bars and confusion rows: the same files for baseline and evaluate."""

    per_class = [{"class": name, "f1": row["f1"], "support": row["support"]}
                 for name, row in metrics[task.PER_CLASS_KEY].items()]
    with atomic_path(folder, directory=True) as tmp:
        write_json(tmp / "per_class_f1.json", per_class)
        write_json(tmp / "confusion.json", task.confusion_rows(gold, predicted))
