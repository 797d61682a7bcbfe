"""Export: merge the adapter into the base weights, save for serving, prove it still predicts
the same, and write a model card from the run's own files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from peftpipe.errors import ExportError, ModelError

LOSS_CURVE = "loss_curve.png"


def timed_logits(task, model, tokenizer, dataset, batch_size: int) -> tuple[list[np.ndarray], float]:
    """Logits and milliseconds per example."""
    started = time.perf_counter()
    logits = task.predict_logits(model, dataset, batch_size, task.collator(tokenizer))
    return logits, 1000 * (time.perf_counter() - started) / max(1, len(dataset))


def logit_agreement(expected: list[np.ndarray], actual: list[np.ndarray]) -> dict:
    """Largest logit difference and the share of predictions (positions, or rows) that agree."""
    max_diff, agree, total = 0.0, 0, 0
    for a, b in zip(expected, actual):
        a, b = np.atleast_2d(a), np.atleast_2d(b)  # one row of class logits, or one per position
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(a)
    return {"max_abs_logit_diff": max_diff, "prediction_agreement": agree / max(1, total)}


def compare_logits(expected: list[np.ndarray], actual: list[np.ndarray], tolerance: float) -> dict:
    """Largest logit difference and the share of positions whose argmax agrees."""
    check = logit_agreement(expected, actual)
    if check["prediction_agreement"] < 1.0 or check["max_abs_logit_diff"] > tolerance:
        raise ExportError(
            f"the exported model's predictions differ from the adapter's on the test split "
            f"(agreement {check['prediction_agreement']:.4f}, max logit difference {check['max_abs_logit_diff']:.2e}, "
            f"export.logits_tolerance {tolerance:g})"
        )
    return check


def merge(model, info: dict):
    """Fold the adapter into the base weights (a plain transformers model comes back).
    Prompt methods (p_tuning) have nothing to fold: they come back as they are."""
    from peftpipe.adapters import mergeable

    if info["peft_method"] == "none" or not mergeable(info["peft_method"]):
        return model
    return model.merge_and_unload()


def full_precision_copy(quantized):
    """The trained adapter on a full-precision copy of its base whose weights are the 4-bit
    ones dequantized: the weights the adapter was trained against. Merging into the
    original weights instead serves another model (on agnews-qlora-cpu it agreed with the
    4-bit one on 72% of test predictions): the adapter has learned around the NF4 rounding."""
    import torch

    from peftpipe.artifacts import load_trained
    from peftpipe.quantized import dequantized_weight, four_bit_layers, keep_standard_layout

    keep_standard_layout(quantized)  # loaded that way; a model repacked elsewhere is restored
    model = load_trained(quantized=False)[0]
    layers = dict(model.named_modules())
    names = {id(layer): name for name, layer in quantized.named_modules()}
    with torch.no_grad():
        for layer in four_bit_layers(quantized):
            target = layers[names[id(layer)]].weight
            target.copy_(dequantized_weight(layer).to(target.dtype))
    return model


def kept_as_adapter(info: dict) -> bool:
    from peftpipe.adapters import mergeable

    return info["peft_method"] != "none" and not mergeable(info["peft_method"])


def save(model, tokenizer, info: dict, folder: Path) -> None:
    """The merged model (or a prompt adapter) + tokenizer, and peftpipe.json saying what it
    is: task, labels and max length (a generation model's labels are words it writes, which
    no config holds), and for an adapter its base. A merged model is a plain model now."""
    from peftpipe.artifacts import TRAINED_INFO_FILE
    from peftpipe.io import write_json

    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    served = info if kept_as_adapter(info) else {**info, "peft_method": "none", "merged_from": info["peft_method"]}
    write_json(folder / TRAINED_INFO_FILE, {**served, "quantization": None})


def reload(folder: Path):
    """The exported model as a user gets it, through its peftpipe.json."""
    from peftpipe.artifacts import load_trained

    return load_trained(folder)[0]


def check_quantized(trained: list[np.ndarray], served: list[np.ndarray], minimum: float) -> float:
    """Share of test predictions where the served full-precision model agrees with the
    4-bit model it was trained as (dequantized weights differ slightly, so not exactly)."""
    agreement = logit_agreement(trained, served)["prediction_agreement"]
    if agreement < minimum:
        raise ExportError(
            f"the merged full-precision model agrees with the 4-bit model on only {agreement:.2%} of "
            f"test predictions (export.min_quantized_agreement {minimum:g})")
    return agreement


def served_task(folder: Path) -> str:
    """The task of an exported folder: from its peftpipe.json, or (a folder exported before
    every export had one) from the model class in config.json."""
    from peftpipe.artifacts import TRAINED_INFO_FILE, read_trained_info
    from peftpipe.models import inspect_model_folder

    if (folder / TRAINED_INFO_FILE).exists():
        return read_trained_info(folder)["task"]
    architectures = inspect_model_folder(folder).get("architectures") or [""]
    return ("token_classification" if architectures[0].endswith("ForTokenClassification") else
            "sequence_classification" if architectures[0].endswith("ForSequenceClassification") else "generation")


def inference_pipeline(folder: Path):
    """The transformers pipeline for an exported classification model; a prompt-method
    adapter goes onto its base model first."""
    from transformers import pipeline

    from peftpipe.artifacts import TRAINED_INFO_FILE, load_trained

    model, tokenizer = str(folder), None
    if (folder / TRAINED_INFO_FILE).exists():
        model, tokenizer, info = load_trained(folder)
        # Windows of the length the model was trained on, not the architecture's limit.
        tokenizer.model_max_length = info["model"]["max_length"]
    task = served_task(folder)
    if task == "generation":
        raise ModelError(f"{folder}: a generation model has no classification pipeline; use write_labels")
    if task == "token_classification":
        # A text longer than one window is read in overlapping windows (a quarter overlap),
        # so its tail is tagged too instead of being cut off.
        stride = tokenizer.model_max_length // 4 if tokenizer is not None else 0
        return pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple",
                        device="cpu", **({"stride": stride} if stride else {}))
    return pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu", truncation=True)


def write_labels(folder: Path, texts: list[str]) -> list[tuple[str, float]]:
    """What an exported generation model writes after each text (greedy, as evaluated),
    with the probability of that continuation."""
    from peftpipe.artifacts import TRAINED_INFO_FILE, load_trained
    from peftpipe.tasks import generation

    if not (folder / TRAINED_INFO_FILE).exists():
        raise ModelError(f"{folder}: no {TRAINED_INFO_FILE} naming the labels; export the model again (dvc repro export)")
    model, tokenizer, info = load_trained(folder)
    return generation.write_labels(model, tokenizer, texts, info["labels"], info["model"]["max_length"])


def check_pipeline(folder: Path, example: dict):
    """The exported folder works in the transformers pipeline for its task. (Generation is
    checked by regenerating the whole test split with the reloaded model instead.)"""
    if "prompt_ids" in example:
        return None
    classify = inference_pipeline(folder)
    if "tokens" in example:
        return classify(" ".join(example["tokens"]))
    if example.get("text_pair"):
        return classify({"text": example["text"], "text_pair": example["text_pair"]})
    return classify(example["text"])


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


def model_card(recipe: str, task, info: dict, facts: dict) -> str:
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
    model = info["model"]
    quantized = (" (trained on a 4-bit NF4 base; merged into a full-precision copy of its dequantized weights)"
                 if info.get("quantization") else "")
    merged = not kept_as_adapter(info)
    if merged:
        form = f"merged into the base weights for serving{quantized}"
        load = f'pipeline("{task.PIPELINE_TAG}", model="models/export")'
    else:
        form = "kept as an adapter (prompt methods have no weights to merge); peftpipe.json names the base"
        load = 'peftpipe.export.inference_pipeline(Path("models/export"))'
    return f"""---
library_name: {"transformers" if merged else "peft"}
pipeline_tag: {task.PIPELINE_TAG}
tags: [peftpipe, {info['peft_method']}]
---
# {model['name']} fine-tuned with {info['peft_method']} by peftpipe

- Recipe: {recipe}
- Task: {info['task']}; labels ({len(info['labels'])}): {', '.join(info['labels'])}
- Base model: {model['name']} (source: {model['source']}), max length {model['max_length']}
- PEFT method: {info['peft_method']}, {form};
  {train['trainable_params']:,} of {train['total_params']:,} parameters trained
  ({train['trainable_share']:.2%})
- Training: {train['epochs']:g} epochs, {train['steps']} steps, {train['train_seconds']:.0f} s,
  final train loss {train['train_loss']:.4f}; seed {info['seed']}
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
