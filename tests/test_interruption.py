"""Killing train mid-run and running it again resumes from the last complete checkpoint
and ends with the same metrics as a run that was never interrupted."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_stage, stage_args

from peftpipe import checkpoints
from peftpipe.io import read_json
from peftpipe.params import Params


def test_prepare_drops_partial_checkpoints_and_resumes_from_the_last_complete(tmp_path):
    folder = tmp_path / "ckpt"
    assert checkpoints.prepare(folder, "abc") is None
    for step, complete in ((20, True), (40, True), (60, False)):
        (folder / f"checkpoint-{step}").mkdir()
        if complete:
            (folder / f"checkpoint-{step}" / checkpoints.MARKER).write_text("")
    assert checkpoints.prepare(folder, "abc") == folder / "checkpoint-40"
    assert not (folder / "checkpoint-60").exists()


def test_a_changed_recipe_never_resumes_an_old_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    checkpoints.prepare(folder, "recipe-a")
    (folder / "checkpoint-20").mkdir()
    (folder / "checkpoint-20" / checkpoints.MARKER).write_text("")
    assert checkpoints.prepare(folder, "recipe-b") is None
    assert not (folder / "checkpoint-20").exists()


def test_fingerprint_follows_exactly_what_training_reads(tmp_path):
    from peftpipe.io import write_json
    from peftpipe.methods import get_method, training_settings

    def fingerprint(params: Params) -> str:
        write_json(tmp_path / "settings.json", training_settings(params, get_method(params.peft.method)))
        return checkpoints.fingerprint(params, tmp_path / "data", tmp_path / "settings.json")

    def edited(section: str, **values) -> Params:
        return Params().model_copy(update={section: getattr(Params(), section).model_copy(update=values)})

    (tmp_path / "data/train").mkdir(parents=True)
    (tmp_path / "data/train/data-00000-of-00001.arrow").write_bytes(b"1")
    (tmp_path / "data/train/state.json").write_text('{"_fingerprint": "aaaa"}')
    base = fingerprint(Params())
    assert fingerprint(Params()) == base
    assert fingerprint(edited("lora", r=8)) != base  # LoRA reads lora.*
    assert fingerprint(edited("train", epochs=2)) != base
    assert fingerprint(edited("prompt", num_virtual_tokens=7)) == base  # ... and not prompt.*
    assert fingerprint(edited("quantization", double_quant=False)) == base
    assert fingerprint(edited("eval", batch_size=1)) == base
    prompt = edited("peft", method="prompt_tuning")
    prompt_base = fingerprint(prompt)
    assert fingerprint(prompt.model_copy(update={"lora": prompt.lora.model_copy(update={"r": 8})})) == prompt_base
    assert fingerprint(prompt.model_copy(update={"prompt": prompt.prompt.model_copy(
        update={"num_virtual_tokens": 7})})) != prompt_base
    # The data by the datasets' own fingerprints, which follow the rows: not every byte read again.
    (tmp_path / "data/train/data-00000-of-00001.arrow").write_bytes(b"2")
    assert fingerprint(Params()) == base
    (tmp_path / "data/train/state.json").write_text('{"_fingerprint": "bbbb"}')
    assert fingerprint(Params()) != base


def test_saved_datasets_fingerprints_follow_their_rows(tmp_path):
    """What the checkpoint fingerprint stands on: `datasets` saves a fingerprint derived from
    the rows and the transforms, the same for the same rows, different for others."""
    import json

    import datasets

    def saved(rows: list[int], name: str) -> str:
        data = datasets.Dataset.from_dict({"x": rows}).map(lambda batch: {"y": [v * 2 for v in batch["x"]]},
                                                            batched=True)
        datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / name))
        return json.loads((tmp_path / name / "train/state.json").read_text())["_fingerprint"]

    assert saved([1, 2, 3], "a") == saved([1, 2, 3], "b") != saved([1, 2, 4], "c")


def kill_after_checkpoint(project: Path, step: int, sig: int) -> None:
    """Start the train stage, wait until checkpoint ``step`` is complete, then send ``sig``."""
    marker = project / "models/checkpoints" / f"checkpoint-{step}" / checkpoints.MARKER
    # A job started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python then keeps it ignored: restore the default so SIGINT acts like Ctrl-C on a
    # stage in the foreground, however the test run itself was started.
    run_stage("settings")
    process = subprocess.Popen([sys.executable, str(ROOT / "stages/train.py"), *stage_args("train")], cwd=project,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(process.pid, sig)
    process.wait(timeout=60)


@pytest.mark.slow  # three training runs, each killed and resumed in a subprocess (~1 min)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_kill_and_resume_gives_the_same_metrics(tiny_project, sig):
    for name in ("download", "split", "tokenize_align"):
        run_stage(name)
    step = random.Random(int(sig)).choice([20, 40, 60, 80, 100])  # 140 steps in all; a fixed one per signal
    kill_after_checkpoint(tiny_project, step, sig)
    assert not (tiny_project / "models/adapter").exists()
    assert not [p for p in (tiny_project / "models").iterdir() if p.name.startswith(".")]

    run_stage("train")  # as `dvc repro` would: the checkpoint folder persists
    resumed = read_json(tiny_project / "metrics/train.json")
    assert resumed["resumed_from_step"] >= step, f"killed after checkpoint {step}"
    assert resumed["steps"] == 140
    run_stage("evaluate")
    after_resume = (tiny_project / "metrics/eval.json").read_text()

    run_stage("train")  # the finished run cleared its checkpoints: this one is uninterrupted
    assert read_json(tiny_project / "metrics/train.json")["resumed_from_step"] == 0
    run_stage("evaluate")
    assert (tiny_project / "metrics/eval.json").read_text() == after_resume, f"killed after checkpoint {step}"
