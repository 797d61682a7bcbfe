"""Predict and score a split: shared by baseline, evaluate and export."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch before any weights are drawn (heads, LoRA matrices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int):
    """(logits per example, predicted tags per example)."""
    logits = task.predict_logits(model, dataset, batch_size, task.collator(tokenizer))
    return logits, task.decode(logits, dataset, labels)


def score_split(task, model, tokenizer, dataset, labels: list[str], batch_size: int) -> tuple[dict, list]:
    """(metrics in the shared schema, predicted tags)."""
    _, predicted = predict_split(task, model, tokenizer, dataset, labels, batch_size)
    return task.compute_metrics(dataset["tags"], predicted), predicted
