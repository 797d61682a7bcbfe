"""The exported model's card (models/export/README.md), built only from the run's own files,
with its loss curve."""

from __future__ import annotations

from pathlib import Path

from peftpipe.artifacts import TrainedInfo

LOSS_CURVE = "loss_curve.png"


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


def model_card(recipe: str, task, info: TrainedInfo, facts: dict) -> str:
    """README.md for models/export, built only from the run's files."""
    base, train, data = facts["baseline"], facts["train"], facts["data"]
    evaluated = facts["eval"]
    def with_interval(scores: dict, key: str) -> str:
        bounds = scores.get(f"{key}_ci")
        return f"{scores[key]:.4f}" + (f" [{bounds['low']:.4f}, {bounds['high']:.4f}]" if bounds else "")

    overall = [("metric (95% interval)", "base model (untrained head)", f"reference ({task.REFERENCE_NAME})",
                "this model")]
    for key in (k for k in evaluated["overall"] if not k.endswith("_ci")):
        overall.append((key, with_interval(base["overall"], key), with_interval(base["reference"]["overall"], key),
                        with_interval(evaluated["overall"], key)))
    per_class = [("class", "precision", "recall", "f1", "support")] + [
        (name, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"])
        for name, r in evaluated[task.PER_CLASS_KEY].items()
    ]
    splits = [("split", "rows")] + [(n, data[n]["rows"]) for n in ("train", "validation", "test")]
    headline = [k for k in evaluated["overall"] if not k.endswith("_ci")]
    extra = [("test set", "file", "examples", *headline)] + [
        (name, f"`{found['file']}`", found["examples"], *(with_interval(found["overall"], k) for k in headline))
        for name, found in evaluated.get("extra", {}).items()
    ]
    extra_section = (f"\n\n### Other test sets (eval.extra)\n\n{_table(extra)}" if len(extra) > 1 else "")
    made = train["provenance"]
    model = info.model
    quantized = (" (trained on a 4-bit NF4 base; merged into a full-precision copy of its dequantized weights)"
                 if info.quantization else "")
    merged = not info.method.kept_as_adapter
    if merged:
        form = f"merged into the base weights for serving{quantized}"
        load = f'pipeline("{task.PIPELINE_TAG}", model="models/export")'
    else:
        form = "kept as an adapter (prompt methods have no weights to merge); peftpipe.json names the base"
        load = 'peftpipe.serving.inference_pipeline(Path("models/export"))'
    return f"""---
library_name: {"transformers" if merged else "peft"}
pipeline_tag: {task.PIPELINE_TAG}
tags: [peftpipe, {info.peft_method}]
---
# {model.name} fine-tuned with {info.peft_method} by peftpipe

- Recipe: {recipe}
- Task: {info.task}; labels ({len(info.labels)}): {', '.join(info.labels)}
- Base model: {model.name} (source: {model.source}), max length {model.max_length}
- PEFT method: {info.peft_method}, {form};
  {train['trainable_params']:,} of {train['total_params']:,} parameters trained
  ({train['trainable_share']:.2%})
- Training: {train['epochs']:g} epochs, {train['steps']} steps, {train['train_seconds']:.0f} s,
  final train loss {train['train_loss']:.4f}; seed {info.seed}
- Made with: {made['versions']}; commit {made['git']}; {made['hardware']}

## Data

{_table(splits)}

## Test metrics

{_table(overall)}

{_table(per_class)}{extra_section}

## Training loss

![train and validation loss per step]({LOSS_CURVE})

## Use

```python
{load}
```

or `peftpipe predict "some text"`.
"""
