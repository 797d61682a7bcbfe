"""Rates of the non-training stages, measured on the current pipeline outputs:
tokenize rows/s, baseline and evaluate examples/s, and the export stage's adapter vs
merged inference latency per example. Prints one JSON line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from peftpipe import export
from peftpipe.artifacts import load_tokenized, load_trained
from peftpipe.io import read_json
from peftpipe.models import load_base, load_tokenizer, resolve_model
from peftpipe.params import load_params
from peftpipe.tasks import get_task

SPLIT = Path("data/split")


def best_ms(task, model, tokenizer, dataset, labels: list[str], batch_size: int, repeats: int = 3) -> float:
    return min(export.timed_logits(task, model, tokenizer, dataset, labels, batch_size)[1] for _ in range(repeats))


def main() -> None:
    params = load_params()
    task = get_task(params.task.kind)
    labels = read_json(SPLIT / "labels.json")
    tokenizer = load_tokenizer(resolve_model(params.model), params.model.revision)
    frames = {name: pd.read_parquet(SPLIT / f"{name}.parquet") for name in ("train", "validation", "test")}
    started = time.perf_counter()
    for frame in frames.values():
        task.tokenize(frame, tokenizer, labels, params)
    tokenize_seconds = time.perf_counter() - started
    rows = sum(len(f) for f in frames.values())

    datasets, labels = load_tokenized("data/tokenized")  # what `dvc repro` made (dvc.yaml)
    test = datasets["test"]
    base, tokenizer = load_base(params.model, task, labels, params.seed)
    base_ms = best_ms(task, base, tokenizer, test, labels, params.eval.batch_size)
    adapter, tokenizer, info = load_trained("models/adapter")
    merged = export.merge(load_trained("models/adapter")[0], info)
    single = test.select(range(min(64, len(test))))  # one at a time: what serving sees
    # Best of 3: the first pass over a model is slower (allocator and oneDNN warm-up).
    adapter_ms = best_ms(task, adapter, tokenizer, test, labels, params.eval.batch_size)
    merged_ms = best_ms(task, merged, tokenizer, test, labels, params.eval.batch_size)
    adapter_single_ms = best_ms(task, adapter, tokenizer, single, labels, 1)
    merged_single_ms = best_ms(task, merged, tokenizer, single, labels, 1)
    print(json.dumps({
        "tokenize_rows_per_s": rows / tokenize_seconds,
        "baseline_examples_per_s": 1000 / base_ms,
        "evaluate_examples_per_s": 1000 / adapter_ms,
        "adapter_ms_per_example_batched": adapter_ms, "merged_ms_per_example_batched": merged_ms,
        "adapter_ms_per_example_single": adapter_single_ms, "merged_ms_per_example_single": merged_single_ms,
    }))


if __name__ == "__main__":
    main()
