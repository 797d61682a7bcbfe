"""Pinned per-step training losses, one tiny run per task family (as torchtune pins each
recipe's): token classification, sequence classification, generation (prefix tuning on a
decoder) and QLoRA (a 4-bit decoder classifier). A change to the loss, the batching, the
schedule, the seeding or the data path moves a number, and the test names the step and
both values. The tolerance admits other CPUs' float kernels, not other behaviour."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import run_stage, write_jsonl, write_tiny_classifier, write_tiny_recipe

from peftpipe.params import write_params

STEPS = 6
TRAIN = {"max_steps": STEPS, "logging_steps": 1, "checkpoint_steps": 0, "batch_size": 8}

# step -> train loss, as the train stage logs them (metrics/curves, DVCLive).
PINNED = {
    "token_classification": {1: 1.387141, 2: 1.184814, 3: 0.976327, 4: 1.04527, 5: 0.846908, 6: 1.161182},
    "sequence_classification": {1: 0.69644, 2: 0.69427, 3: 0.693775, 4: 0.694681, 5: 0.69334, 6: 0.694476},
    "generation": {1: 3.372499, 2: 3.370457, 3: 3.362521, 4: 3.341083, 5: 3.348791, 6: 3.338883},
    "qlora": {1: 1.1958, 2: 0.994012, 3: 0.777369, 4: 0.630701, 5: 0.402964, 6: 0.367617},
}


def project(family: str, folder: Path, request) -> Path:
    if family == "token_classification":
        write_tiny_recipe(folder, request.getfixturevalue("tiny_model_dir"))
        write_params(folder / "params.yaml", {"train": TRAIN})
    elif family == "sequence_classification":
        write_tiny_classifier(folder, request.getfixturevalue("tiny_model_dir"))
        write_params(folder / "params.yaml", {"train": TRAIN})
    else:
        words = ["alice bob carol", "paris london berlin", "acme globex initech"]
        labels = ["people", "places", "companies"]
        rows = [{"text": f"{words[i % 3]} the city {i % 5}", "label": labels[i % 3]} for i in range(60)]
        write_jsonl(folder / "corpus/train.jsonl", rows)
        write_jsonl(folder / "corpus/test.jsonl", rows[:12])
        generation = family == "generation"
        model = request.getfixturevalue("tiny_gpt_dir" if generation else "tiny_llama_dir")
        write_params(folder / "params.yaml", {
            "task": {"kind": "generation" if generation else "sequence_classification"},
            "data": {"source": "local", "name": None, "labels": labels,
                     "files": {"train": "corpus/train.jsonl", "test": "corpus/test.jsonl"}},
            "model": {"source": "local", "name": str(model), "max_length": 24},
            "peft": {"method": "prefix_tuning" if generation else "qlora"},
            "prompt": {"num_virtual_tokens": 4},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "bias": "none",
                     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
            "quantization": {"gradient_checkpointing": False},
            "train": {**TRAIN, "learning_rate": 1e-2}})
    return folder


def losses(folder: Path) -> dict[int, float]:
    with open(folder / "metrics/curves/plots/metrics/train/loss.tsv") as file:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(file, delimiter="\t")}


@pytest.mark.parametrize("family", list(PINNED))
def test_each_task_familys_tiny_run_trains_with_its_pinned_losses(family, tmp_path, request, monkeypatch):
    if family == "qlora":  # the same 4-bit kernel path whatever this CPU offers (as test_quantized does)
        bnb_modules = pytest.importorskip("bitsandbytes.nn.modules")
        monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: False)
    folder = project(family, tmp_path, request)
    monkeypatch.chdir(folder)
    for name in ("download", "split", "tokenize_align", "train"):
        run_stage(name)
    found = losses(folder)
    assert sorted(found) == list(range(1, STEPS + 1)), found
    expected = PINNED[family]
    moved = [f"step {step}: {found[step]:.6f}, pinned {loss:.6f}" for step, loss in expected.items()
             if found[step] != pytest.approx(loss, rel=1e-3, abs=1e-5)]
    assert not moved, f"{family}: the loss moved at " + "; ".join(moved)
