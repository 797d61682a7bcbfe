"""Export: merge the adapter into the base weights, save for serving, and prove the saved
model still predicts what the trained one did (the model card is in model_card.py, serving
in serving.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from peftpipe.artifacts import TrainedInfo, load_trained, write_info
from peftpipe.errors import ExportError
from peftpipe.quantized import dequantized_weight, four_bit_layers, keep_standard_layout


def timed_logits(task, model, tokenizer, dataset, labels: list[str], batch_size: int) -> tuple[list[np.ndarray], float]:
    """Logits and milliseconds per example."""
    started = time.perf_counter()
    logits = task.predict_logits(model, dataset, batch_size, task.collator(tokenizer), labels)
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


def merge(model, info: TrainedInfo):
    """Fold the adapter into the base weights (a plain transformers model comes back).
    Methods with nothing to fold (prompt methods, full fine-tuning) come back as they are."""
    return model.merge_and_unload() if info.method.merges else model


def full_precision_copy(quantized, adapter: Path):
    """The trained adapter on a full-precision copy of its base whose weights are the 4-bit
    ones dequantized: the weights the adapter was trained against. Merging into the
    original weights instead serves another model (on agnews-qlora-cpu it agreed with the
    4-bit one on 72% of test predictions): the adapter has learned around the NF4 rounding."""
    keep_standard_layout(quantized)  # loaded that way; a model repacked elsewhere is restored
    model = load_trained(adapter, quantized=False)[0]
    layers = dict(model.named_modules())
    names = {id(layer): name for name, layer in quantized.named_modules()}
    with torch.no_grad():
        for layer in four_bit_layers(quantized):
            target = layers[names[id(layer)]].weight
            target.copy_(dequantized_weight(layer).to(target.dtype))
    return model


def save(model, tokenizer, info: TrainedInfo, folder: Path) -> None:
    """The merged model (or a prompt adapter) + tokenizer, and peftpipe.json saying what it
    is: task, labels and max length (a generation model's labels are words it writes, which
    no config holds), and for an adapter its base. A merged model is a plain model now."""
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    served = {"quantization": None}
    if info.method.merges:
        served.update(peft_method="none", merged_from=info.peft_method)
    write_info(folder, info.model_copy(update=served))


def reload(folder: Path):
    """The exported model as a user gets it, through its peftpipe.json."""
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
