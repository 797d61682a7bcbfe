"""Scaling out on existing engines: accelerate launch with 2 CPU processes, a DVC remote
that lets a second clone skip every stage, and a queued sweep. Tiny model, real tools."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    copy_repo,
    git_commit,
    git_repo,
    ran_stages,
    run_cli,
    run_stage,
    stage_args,
    venv_env,
    write_tiny_recipe,
)

from peftpipe.io import read_json
from peftpipe.params import write_params

pytestmark = pytest.mark.slow

LAUNCH_2_CPU = "accelerate"  # train.launcher, with train.accelerate_config accelerate/cpu-2proc.yaml


def _train_with(launcher: str, batch_size: int, project: Path) -> dict:
    """Run the train stage the way dvc.yaml does (`python stages/train.py --tokenized ...`),
    which reruns itself under `accelerate launch` for train.launcher accelerate."""
    if not (project / "accelerate").is_dir():
        shutil.copytree(ROOT / "accelerate", project / "accelerate")
    text = (project / "params.yaml").read_text()
    text = text.replace("batch_size: 8", f"batch_size: {batch_size}", 1)
    text = re.sub(r"launcher: \w+", f"launcher: {launcher}", text)
    (project / "params.yaml").write_text(text)
    run_stage("settings")
    done = subprocess.run([sys.executable, str(ROOT / "stages/train.py"), *stage_args("train")], cwd=project,
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return read_json(project / "metrics/train.json")


def test_train_stage_runs_on_two_cpu_processes_and_on_two_machines(tiny_project):
    """Two processes of 4 rows each see the same 8 rows a step as one process of 8; accelerate
    launch with two machines (ranks 0 and 1 on 127.0.0.1, one process each, gloo) trains the
    same steps and the same model as two processes on one machine."""
    import socket

    for name in ("download", "split", "tokenize_align"):
        run_stage(name)
    one = _train_with("python", 8, tiny_project)
    run_stage("evaluate")
    f1_one = read_json(tiny_project / "metrics/eval.json")["overall"]["f1"]

    two = _train_with(LAUNCH_2_CPU, 4, tiny_project)
    assert set(two) == set(one)  # same metrics schema
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["effective_batch_size"] == two["effective_batch_size"] == 8
    assert two["steps"] == one["steps"]
    # The same rows a step, so about the same loss (the reported one is the main process's
    # rows'); transformers' own figure is the loss times the process count (0.64 vs 0.34 here).
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.15), (one["train_loss"], two["train_loss"])
    run_stage("evaluate")
    local = read_json(tiny_project / "metrics/eval.json")["overall"]
    assert abs(local["f1"] - f1_one) < 0.1, (f1_one, local["f1"])
    assert not any((tiny_project / "models/checkpoints").glob("checkpoint-*"))

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate/cpu-2node.yaml"),
               "--main_process_port", str(port)]
    script = [str(ROOT / "stages/train.py"), *stage_args("train")]
    machines = [subprocess.Popen([*command, "--machine_rank", str(rank), *script], cwd=tiny_project, env=venv_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [machine.communicate(timeout=600) for machine in machines]
    assert all(m.returncode == 0 for m in machines), [out[1][-2000:] for out in outputs]
    nodes = read_json(tiny_project / "metrics/train.json")
    assert nodes["processes"] == two["processes"] == 2 and nodes["steps"] == two["steps"]
    assert nodes["effective_batch_size"] == two["effective_batch_size"]
    assert nodes["train_loss"] == pytest.approx(two["train_loss"], abs=1e-4)
    run_stage("evaluate")
    assert read_json(tiny_project / "metrics/eval.json")["overall"]["f1"] == pytest.approx(local["f1"], abs=1e-4)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory, tiny_model_dir) -> Path:
    """This repository with the tiny recipe, in git, after one `dvc repro`."""
    repo = write_tiny_recipe(copy_repo(tmp_path_factory.mktemp("repo")), tiny_model_dir)
    write_params(repo / "params.yaml", {"export": {"onnx": False}})  # the sweep runs export per point: no graphs
    git_repo(repo)
    run_cli(["dvc", "repro"], repo)
    git_commit(repo, "tiny run")
    return repo


def test_a_clone_with_the_remote_reproduces_without_recomputing(tiny_repo, tmp_path):
    remote = tmp_path / "remote"  # a folder; s3://, gs:// work the same (README: scaling up)
    run_cli(["dvc", "remote", "add", "-d", "store", str(remote)], tiny_repo)
    run_cli(["dvc", "push"], tiny_repo)
    git_commit(tiny_repo, "use a remote")

    clone = tmp_path / "clone"
    run_cli(["git", "clone", "-q", str(tiny_repo), str(clone)], tmp_path)
    assert not (clone / "models/export").exists()
    run_cli(["dvc", "pull"], clone)
    assert (clone / "models/export/model.safetensors").exists()
    output = run_cli(["dvc", "repro"], clone)
    assert ran_stages(output) == [] and "Data and pipelines are up to date" in output, output


def test_a_queued_sweep_runs_every_point(tiny_repo):
    # Two points (each costs ~40 s here) show the queue runs them all and names them apart.
    run_cli(["dvc", "exp", "run", "--queue", "-n", "rank", "-S", "lora.r=4,8"], tiny_repo)
    run_cli(["dvc", "exp", "run", "--run-all"], tiny_repo)  # = dvc queue start, then wait
    rows = json.loads(run_cli(["dvc", "exp", "show", "--json"], tiny_repo))
    found = {}
    for experiment in [e for row in rows for e in row.get("experiments") or []]:  # under their commit
        run = experiment["revs"][0]
        data = run["data"]
        rank = data["params"]["params.yaml"]["data"]["lora"]["r"]
        found[rank] = (run["name"], data["metrics"]["metrics/eval.json"]["data"]["overall"]["f1"])
    assert sorted(found) == [4, 8], found
    assert {name for name, _ in found.values()} == {"rank-1", "rank-2"}
    assert all(0 < f1 <= 1 for _, f1 in found.values()), found


def test_token_batches_shard_across_two_cpu_processes(tiny_project):
    """batch_tokens under `accelerate launch` with 2 processes, in both loops: each process
    takes every other token-budget batch, so an epoch is half the batches (rounded up) and a
    step sees twice the budget."""
    import math
    import re

    from peftpipe import training
    from peftpipe.artifacts import load_tokenized

    for name in ("download", "split", "tokenize_align"):
        run_stage(name)
    lengths = [len(ids) for ids in load_tokenized(tiny_project / "data/tokenized")[0]["train"]["input_ids"]]
    batches = len(training.token_budget_batches(lengths, 64, 0))
    for loop in ("trainer", "accelerate"):
        text = (tiny_project / "params.yaml").read_text()
        text = re.sub(r"loop: \w+", f"loop: {loop}", re.sub(r"batch_tokens: \w+", "batch_tokens: 64", text))
        (tiny_project / "params.yaml").write_text(text)
        report = _train_with(LAUNCH_2_CPU, 8, tiny_project)
        assert report["processes"] == 2, loop
        assert report["steps"] == 10 * math.ceil(batches / 2), (loop, report["steps"], batches)
        assert report["effective_batch_tokens"] == 128, loop
        (tiny_project / "params.yaml").write_text(
            (tiny_project / "params.yaml").read_text().replace("launcher: accelerate", "launcher: python"))
