"""Inference side by side on the default's test split: the trained adapter in eager PyTorch
(what evaluate runs), the merged model in eager PyTorch (what `peftpipe predict` serves by
default), and the exported ONNX graphs through ONNX Runtime, fp32 and int8. Batched
(eval.batch_size, length-sorted: evaluate's way) and one text at a time through the
serving pipeline (`peftpipe predict`'s way). Backends alternate within each repeat, so
drift on a shared machine hits all alike; medians and spreads over the repeats.
Prints one JSON line. Needs `dvc repro` first (models/adapter, models/export/onnx).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from run import matmul_peak

from peftpipe import export, onnx_backend, serving
from peftpipe.artifacts import load_tokenized, load_trained
from peftpipe.params import load_params
from peftpipe.tasks import get_task

EXPORTED = Path("models/export")


def forward_flops(model, lengths: list[int], batch_size: int) -> int:
    """FLOPs of one batched forward pass over the split, batched as evaluate does (length-
    sorted, padded per batch): 2 x every linear weight per padded token, and the attention's
    scores and weighted sums, 4 x layers x hidden x sequence length per token. Norms, GELU
    and softmax are not counted (as in the training MFU)."""
    import torch

    linear = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                 for p in m.parameters(recurse=False) if p.dim() == 2)
    config = model.config
    ordered = np.sort(np.asarray(lengths))
    flops = 0
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start:start + batch_size]
        tokens = len(batch) * int(batch.max())
        flops += 2 * linear * tokens + 4 * config.num_hidden_layers * config.hidden_size * tokens * int(batch.max())
    return flops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true",
                        help="also the merged model through torch.compile (inductor, dynamic shapes)")
    parser.add_argument("--single", type=int, default=100, help="texts served one at a time per repeat")
    args = parser.parse_args()
    params = load_params()
    task = get_task(params.task.kind)
    datasets, labels = load_tokenized("data/tokenized")
    test = datasets["test"]
    adapter, tokenizer, _ = load_trained("models/adapter")
    models = {"pytorch adapter (evaluate)": adapter, "pytorch merged": export.reload(EXPORTED)}
    for backend in ("onnx", "int8"):
        if (EXPORTED / onnx_backend.FOLDER / onnx_backend.FILES[backend]).exists():
            models[f"onnx {backend.replace('onnx', 'fp32')}"] = onnx_backend.load(EXPORTED, backend)
    pipelines = {"pytorch merged": serving.inference_pipeline(EXPORTED),
                 **{f"onnx {b.replace('onnx', 'fp32')}": serving.inference_pipeline(EXPORTED, b)
                    for b in ("onnx", "int8") if f"onnx {b.replace('onnx', 'fp32')}" in models}}
    compile_seconds = None
    if args.compile:
        import torch

        name = "pytorch merged, torch.compile"
        models[name] = torch.compile(export.reload(EXPORTED), dynamic=True)
        started = time.perf_counter()  # the first pass compiles: its time is the price paid once
        export.timed_logits(task, models[name], tokenizer, test, labels, params.eval.batch_size)
        compile_seconds = time.perf_counter() - started
    texts = [" ".join(words) for words in test["tokens"][: args.single]]
    # `peftpipe predict` over a file of the same texts: batched by length (int8: one at a time)
    file_lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    backends = {"pytorch merged": "torch", "onnx fp32": "onnx", "onnx int8": "int8"}
    # What a batched pass computes (the merged model's products: the adapter's thin LoRA ones
    # are left out), against the 2048 x 2048 float32 peak measured before and after the runs.
    flops = forward_flops(models["pytorch merged"], [len(ids) for ids in test["input_ids"]], params.eval.batch_size)
    peak_before = matmul_peak()

    batched = {name: [] for name in models}
    single = {name: [] for name in pipelines}
    file_rate = {name: [] for name in pipelines}
    logits = {}
    for _ in range(args.repeats):
        for name, model in models.items():
            logits[name], ms = export.timed_logits(task, model, tokenizer, test, labels, params.eval.batch_size)
            batched[name].append(1000 / ms)
        for name, pipe in pipelines.items():
            pipe(texts[0])  # warm
            started = time.perf_counter()
            for text in texts:
                pipe(text)
            single[name].append(1000 * (time.perf_counter() - started) / len(texts))
            started = time.perf_counter()
            serving.in_length_order(pipe, texts, file_lengths,
                                    serving.served_batch_size(backends[name], serving.BATCH_SIZE))
            file_rate[name].append(len(texts) / (time.perf_counter() - started))

    peak = (peak_before + matmul_peak()) / 2
    reference = logits["pytorch merged"]
    gold = task.gold(test)
    scores = {name: task.compute_metrics(gold, task.decode(found, test, labels, tokenizer), labels)["overall"]["f1"]
              for name, found in logits.items()}
    rows = {}
    for name in models:
        agreement = export.logit_agreement(reference, logits[name])
        rows[name] = {
            "examples_per_s": statistics.median(batched[name]), "examples_per_s_all": batched[name],
            # int8 products are not float32 FLOPs: its figure is the float32 work it stands in for.
            "flops_per_s": flops * statistics.median(batched[name]) / len(test),
            "mfu": flops * statistics.median(batched[name]) / len(test) / peak,
            "ms_per_text_single": statistics.median(single[name]) if name in single else None,
            "ms_per_text_single_all": single.get(name),
            "file_texts_per_s": statistics.median(file_rate[name]) if name in file_rate else None,
            "file_texts_per_s_all": file_rate.get(name),
            "prediction_agreement": agreement["prediction_agreement"],
            "max_abs_logit_diff": agreement["max_abs_logit_diff"], "f1": scores[name],
        }
    print(json.dumps({"examples": len(test), "single_texts": len(texts), "repeats": args.repeats,
                      "file_batch_size": serving.BATCH_SIZE,
                      "forward_flops": flops, "float32_matmul_peak_flops": peak,
                      "compile_seconds": compile_seconds, "rows": rows}))


if __name__ == "__main__":
    main()
