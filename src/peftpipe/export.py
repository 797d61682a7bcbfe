"""Export: merge the adapter into the base weights, save for serving, and prove the saved
model still predicts what the trained one did (the model card is in model_card.py, serving
in serving.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from peftpipe.artifacts import TrainedInfo, load_trained, read_trained_info, write_info
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


def disagreement(found: dict, minimum: float, tolerance: float | None) -> str | None:
    """What falls short in a ``logit_agreement`` result, or None: the share of agreeing
    predictions below ``minimum``, or (given a ``tolerance``) a logit further off than it."""
    if found["prediction_agreement"] >= minimum and (tolerance is None or found["max_abs_logit_diff"] <= tolerance):
        return None
    return (f"agreement {found['prediction_agreement']:.4f}, minimum {minimum:g}; max logit difference "
            f"{found['max_abs_logit_diff']:.2e}" + (f", export.logits_tolerance {tolerance:g}" if tolerance else ""))


def compare_logits(expected: list[np.ndarray], actual: list[np.ndarray], tolerance: float) -> dict:
    """Largest logit difference and the share of positions whose argmax agrees: all must."""
    found = logit_agreement(expected, actual)
    problem = disagreement(found, 1.0, tolerance)
    if problem:
        raise ExportError(f"the exported model's predictions differ from the adapter's on the test split ({problem})")
    return found


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


def test_scores(evaluation: dict) -> dict:
    """metrics/eval.json's headline test scores, each with its interval, for peftpipe.json."""
    overall = evaluation.get("overall", {})
    return {name: {"value": round(value, 4), **overall[f"{name}_ci"]} for name, value in overall.items()
            if isinstance(overall.get(f"{name}_ci"), dict)}


def record_scores(folder: Path, evaluation: dict) -> None:
    write_info(folder, read_trained_info(folder).model_copy(update={"test": test_scores(evaluation)}))


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


def onnx_graphs(folder: Path, model, tokenizer, task, info: TrainedInfo, test, served_logits, params) -> dict:
    """ONNX graphs of the served model in ``folder``/onnx, each checked on the test split
    against the PyTorch logits: fp32 within export.logits_tolerance (else export stops),
    int8 by agreement (below export.min_int8_agreement it is left out, and that recorded).
    Per graph: agreement, max logit difference, F1 difference, ms per example."""
    from peftpipe import onnx_backend

    reason = onnx_backend.unsupported(task, info.method.kept_as_adapter)
    if reason:
        return {"skipped": reason}
    paths = onnx_backend.export(model, tokenizer, folder / onnx_backend.FOLDER, per_token=task.per_token)
    gold, labels = task.gold(test), info.labels
    reference = task.compute_metrics(gold, task.decode(served_logits, test, labels, tokenizer), labels)["overall"]
    found = {}
    for backend, path in paths.items():
        graph = onnx_backend.load(folder, backend, task)
        logits, ms = timed_logits(task, graph, tokenizer, test, labels, params.eval.batch_size)
        # fp32 must agree on the predictions and stay within the logit tolerance (else export
        # stops); int8 only ships at export.min_int8_agreement.
        fp32 = backend == "onnx"
        check = logit_agreement(served_logits, logits)
        problem = disagreement(check, 0.999 if fp32 else params.export.min_int8_agreement,
                               params.export.logits_tolerance if fp32 else None)
        if problem and fp32:
            raise ExportError(f"the ONNX {backend} model's predictions differ from the PyTorch model's on the test "
                              f"split ({problem})")
        shipped = problem is None
        if not shipped:
            path.unlink()
        f1 = task.compute_metrics(gold, task.decode(logits, test, labels, tokenizer), labels)["overall"]
        found[backend] = {**check, "f1_difference": round(f1["f1"] - reference["f1"], 6), "ms_per_example": round(ms, 3),
                          "shipped": shipped, "file": f"{onnx_backend.FOLDER}/{path.name}"}
    return found


def onnx_lines(graphs: dict) -> list[str]:
    if "skipped" in graphs:
        return [f"export: no ONNX graphs ({graphs['skipped']})"]
    return [f"export: ONNX {backend}: agreement {g['prediction_agreement']:.4f}, F1 {g['f1_difference']:+.4f}, "
            f"{g['ms_per_example']:.2f} ms/example" + ("" if g["shipped"] else " (below export.min_int8_agreement: "
                                                       "not shipped)") for backend, g in graphs.items()]
