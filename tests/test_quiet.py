"""Quiet by default: a normal run prints our progress and results, not library noise, and
writes nothing outside the project. The stages, predict (each backend) and check run as a
user runs them, in their own processes, on a tiny classifier, with an empty HOME; any
warning or known library message outside a short allow-list fails, and so does any file in
HOME (ONNX Runtime's telemetry and matplotlib's caches wrote there)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, stage_args, venv_env, write_tiny_classifier

PEFTPIPE = str(Path(sys.executable).parent / "peftpipe")
# What a library may still say, and why it is kept.
ALLOWED = [
    re.compile(r"^Loading weights"),  # transformers' load bar: progress, on a terminal only
    re.compile(r"^(predict|generate) \(batches"),  # our own progress lines
]
NOISE = re.compile(r"Warning\b|warnings\.warn|is not supported for|Please consider|deprecated|FutureWarning", re.I)


OURS = re.compile(r"^(download|split|tokenize|baseline|settings|train|evaluate|export|note): ")  # our own warnings


def noise(output: str) -> list[str]:
    return [line for line in output.splitlines()
            if NOISE.search(line) and not OURS.match(line) and not any(a.search(line) for a in ALLOWED)]


@pytest.mark.slow
def test_every_stage_predict_and_check_print_no_library_noise_and_leave_home_empty(tmp_path, tiny_model_dir):
    project = tmp_path / "project"
    project.mkdir()
    write_tiny_classifier(project, tiny_model_dir)
    home = tmp_path / "home"
    home.mkdir()
    env = {**venv_env(), "HOME": str(home)}
    for name in ("ORT_DISABLE_TELEMETRY", "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "HF_HOME"):
        env.pop(name, None)  # as a user's shell has them: unset
    env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    heard = {}
    for name in ("download", "split", "tokenize_align", "baseline", "settings", "train", "evaluate", "export"):
        done = subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *stage_args(name)], cwd=project,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        heard[name] = noise(done.stdout + done.stderr)
    assert (project / "models/export/onnx/model.onnx").is_file()
    for backend in ("torch", "onnx", "int8"):
        done = subprocess.run([PEFTPIPE, "predict", "--backend", backend, "alice bob the city"], cwd=project,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        heard[f"predict {backend}"] = noise(done.stdout + done.stderr)
        # A classifier's answer and nothing else: label, score, text.
        assert [line.split("\t")[2] for line in done.stdout.splitlines()] == ["alice bob the city"], done.stdout
        assert done.stderr.strip() == "", done.stderr
    done = subprocess.run([PEFTPIPE, "check"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {where: lines for where, lines in heard.items() if lines} == {}
    assert sorted(str(path.relative_to(home)) for path in home.rglob("*")) == []
