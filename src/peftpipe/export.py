"""Export: merge the adapter into the base weights, save for serving, prove it still predicts
the same, and write a model card from the run's own files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from peftpipe.errors import ExportError

LOSS_CURVE = "loss_curve.png"


def timed_logits(task, model, tokenizer, dataset, batch_size: int) -> tuple[list[np.ndarray], float]:
    """Logits and milliseconds per example."""
    started = time.perf_counter()
    logits = task.predict_logits(model, dataset, batch_size, task.collator(tokenizer))
    return logits, 1000 * (time.perf_counter() - started) / max(1, len(dataset))


def compare_logits(expected: list[np.ndarray], actual: list[np.ndarray], tolerance: float) -> dict:
    """Largest logit difference and the share of positions whose argmax agrees."""
    max_diff, agree, total = 0.0, 0, 0
    for a, b in zip(expected, actual):
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(a)
    check = {"max_abs_logit_diff": max_diff, "prediction_agreement": agree / max(1, total)}
    if check["prediction_agreement"] < 1.0 or max_diff > tolerance:
        raise ExportError(
            f"the exported model's predictions differ from the adapter's on the test split "
            f"(agreement {check['prediction_agreement']:.4f}, max logit difference {max_diff:.2e}, "
            f"export.logits_tolerance {tolerance:g})"
        )
    return check


def merge(model, info: dict):
    """Fold the adapter into the base weights (a plain transformers model comes back)."""
    if info["peft_method"] == "none":
        return model
    return model.merge_and_unload()


def check_pipeline(folder: Path, text: str) -> list[dict]:
    """The merged folder works in the transformers token-classification pipeline."""
    from transformers import pipeline

    ner = pipeline("token-classification", model=str(folder), aggregation_strategy="simple", device="cpu")
    return ner(text)


def loss_curve_png(curves: Path, out: Path) -> None:
    """The train and validation loss curves DVCLive logged, as a PNG for the model card."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    import pandas as pd

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    drawn = 0
    for split in ("train", "eval"):
        tsv = curves / "plots" / "metrics" / split / "loss.tsv"
        if not tsv.exists():  # a short run (max_steps below logging_steps) logs no loss
            continue
        points = pd.read_csv(tsv, sep="\t")
        axes.plot(points["step"], points["loss"], marker="o" if split == "eval" else None,
                  label="validation" if split == "eval" else "train")
        drawn += 1
    axes.set(xlabel="step", ylabel="loss", title="Training loss")
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no loss logged: fewer steps than train.logging_steps",
                  ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def _table(rows: list[tuple]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in body])


def model_card(recipe: str, info: dict, facts: dict) -> str:
    """README.md for models/export, built only from the run's files."""
    base, train, data = facts["baseline"], facts["train"], facts["data"]
    evaluated = facts["eval"]
    overall = [("metric", "base model (untrained head)", "reference (all O)", "this model")]
    for key in ("precision", "recall", "f1", "macro_f1", "accuracy"):
        overall.append((key, f"{base['overall'][key]:.4f}", f"{base['reference']['overall'][key]:.4f}",
                        f"{evaluated['overall'][key]:.4f}"))
    per_type = [("type", "precision", "recall", "f1", "support")] + [
        (name, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"])
        for name, r in evaluated["per_type"].items()
    ]
    splits = [("split", "rows", "tokens")] + [(n, data[n]["rows"], data[n]["tokens"])
                                              for n in ("train", "validation", "test")]
    made = train["provenance"]
    model = info["model"]
    return f"""---
library_name: transformers
pipeline_tag: token-classification
tags: [peftpipe, {info['peft_method']}]
---
# {model['name']} fine-tuned with {info['peft_method']} by peftpipe

- Recipe: {recipe}
- Task: {info['task']}; labels ({len(info['labels'])}): {', '.join(info['labels'])}
- Base model: {model['name']} (source: {model['source']}), max length {model['max_length']}
- PEFT method: {info['peft_method']}, merged into the base weights for serving;
  {train['trainable_params']:,} of {train['total_params']:,} parameters trained
  ({train['trainable_share']:.2%})
- Training: {train['epochs']:g} epochs, {train['steps']} steps, {train['train_seconds']:.0f} s,
  final train loss {train['train_loss']:.4f}; seed {info['seed']}
- Made with: {made['versions']}; commit {made['git']}; {made['hardware']}

## Data

{_table(splits)}

## Test metrics (seqeval, entity level)

{_table(overall)}

{_table(per_type)}

## Training loss

![train and validation loss per step]({LOSS_CURVE})

## Use

```python
from transformers import pipeline
ner = pipeline("token-classification", model="models/export", aggregation_strategy="simple")
```

or `peftpipe predict "some text"`.
"""
