"""Search on a real database: PostgreSQL (Debian's package) started by the test in a
temporary data folder on a loopback port; two `peftpipe tune` worker processes share one
study through it; a worker killed in the middle of a trial leaves that trial recorded as
failed once a worker starts again, and the restarted worker continues the same study."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

# A real PostgreSQL started per module: with the end-to-end runs, out of the quick selection.
pytestmark = pytest.mark.slow

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2")

WORKER = textwrap.dedent("""
    import sys, time
    from peftpipe.tools import tune
    from peftpipe.params import parse_params

    storage, trials, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    params = parse_params({"recipe": "toy", "tune": {"sampler": "random", "study": "shared", "storage": storage,
        "space": {"lora.r": {"choices": [4, 8, 16, 32]}}}})
    def run(name, values, link, minutes=0):
        print(name, flush=True)
        time.sleep(pause)
    tune.search(params, trials, 0, run=run, read=lambda name, metric: tune.Outcome(0.5), say=print)
""")


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres_url():
    binaries = _postgres_bin()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL test: .ci/run installs Debian's postgresql")
        pytest.skip("no PostgreSQL here (apt-get install postgresql)")
    data = Path(tempfile.mkdtemp(prefix="peftpipe-pg-"))
    # PostgreSQL refuses to run as root: as root, the server runs as the postgres user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "peftpipe"],
                   check=True, capture_output=True)
    server = subprocess.Popen([*as_user, str(binaries / "postgres"), "-D", str(data / "db"), "-p", str(port),
                               "-h", "127.0.0.1", "-k", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import psycopg2

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user="peftpipe", dbname="postgres").close()
            break
        except psycopg2.OperationalError:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.2)
    connection = psycopg2.connect(host="127.0.0.1", port=port, user="peftpipe", dbname="postgres")
    connection.autocommit = True
    connection.cursor().execute("CREATE DATABASE optuna")
    connection.close()
    yield f"postgresql+psycopg2://peftpipe@127.0.0.1:{port}/optuna"
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "stop", "-D", str(data / "db"), "-m", "fast"],
                   capture_output=True, timeout=60)
    server.wait(timeout=60)
    shutil.rmtree(data, ignore_errors=True)


def worker(storage: str, trials: int, pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, storage, str(trials), str(pause)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_workers_share_a_study_on_postgresql_and_a_killed_trial_is_recorded_failed(postgres_url):
    optuna.create_study(storage=postgres_url, study_name="shared", direction="maximize")
    workers = [worker(postgres_url, 3, 0.3) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    ran = sorted(line for out, _ in outputs for line in out.splitlines() if line.startswith("tune-shared-"))
    assert ran == sorted(f"tune-shared-{n}" for n in range(6))  # each trial number ran once, in one worker

    # A worker killed in the middle of a trial (SIGKILL: nothing of it runs again)...
    killed = worker(postgres_url, 1, 60)
    while not (line := killed.stdout.readline()).startswith("tune-shared-"):  # the trial is running
        assert line, killed.stderr.read()[-2000:]
    assert line.strip() == "tune-shared-6"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert study.trials[-1].state.name == "RUNNING"
    # ... leaves its trial failed once a worker starts again, and the study goes on.
    restarted = worker(postgres_url, 1, 0.1)
    out, err = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, err[-2000:]
    assert "tune: trial 6 was left running by a worker that is gone: recorded as failed" in out
    states = [t.state.name for t in optuna.load_study(study_name="shared", storage=postgres_url).trials]
    assert states == ["COMPLETE"] * 6 + ["FAIL", "COMPLETE"]


def _clone(origin: Path, folder: Path) -> Path:
    from conftest import run_cli

    run_cli(["git", "clone", "-q", str(origin), str(folder)], origin.parent)
    run_cli(["git", "config", "user.name", "t"], folder)  # dvc exp commits
    run_cli(["git", "config", "user.email", "t@t"], folder)
    return folder


@pytest.mark.slow
def test_workers_in_two_clones_share_one_study_and_remote_and_a_third_clone_pulls_the_best(
        postgres_url, tmp_path, tiny_model_dir):
    """As two machines would: two clones of one git remote, each a `peftpipe tune` worker on
    the PostgreSQL study, pushing its experiments (git refs to origin, outputs to a folder
    DVC remote standing in for S3); a third clone pulls the best with the same metrics."""
    from conftest import copy_repo, git_commit, git_repo, run_cli, venv_env, write_tiny_recipe

    from peftpipe.params import write_params

    seed = copy_repo(tmp_path / "seed")
    write_tiny_recipe(seed, tiny_model_dir)
    write_params(seed / "params.yaml", {"train": {"epochs": 2}, "export": {"onnx": False}, "tune": {
        "sampler": "random", "pruner": "none", "study": "clones", "storage": postgres_url,
        "space": {"train.learning_rate": {"choices": [1e-6, 2e-2]}, "lora.r": {"choices": [4, 8]}}}})
    git_repo(seed)
    run_cli(["dvc", "remote", "add", "-d", "store", str(tmp_path / "store")], seed)
    git_commit(seed, "a DVC remote every clone shares")
    origin = tmp_path / "origin.git"
    run_cli(["git", "clone", "-q", "--bare", str(seed), str(origin)], tmp_path)
    clones = [_clone(origin, tmp_path / name) for name in ("a", "b")]

    workers = [subprocess.Popen(["peftpipe", "tune", "--trials", "1", "--no-best", "--push", "origin"], cwd=clone,
                                env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for clone in clones]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), [out[-2000:] for out in outputs]
    assert not any("dvc exp push" in out for out in outputs), outputs  # no push failed
    trials = sorted(line.split()[2] for out in outputs for line in out.splitlines()
                    if line.startswith("tune: trial") and "(tune-clones-" in line)
    assert trials == ["0", "1"], outputs  # distinct trials, one a worker
    refs = run_cli(["git", "ls-remote", str(origin)], tmp_path)
    assert "tune-clones-0" in refs and "tune-clones-1" in refs  # both experiments reached the remote

    scored = run_cli(["peftpipe", "tune", "--trials", "0", "--push", "origin"], clones[0])  # the best, on test
    assert "tune: 2 trials in study 'clones': 2 complete" in scored and "(scored once)" in scored
    shown = json.loads(run_cli(["dvc", "exp", "show", "--json"], clones[0]))
    best = next(rev["data"] for entry in shown for exp in entry.get("experiments") or [] for rev in exp["revs"]
                if rev["name"] == "tune-clones-best")
    evaluated = best["metrics"]["metrics/eval.json"]["data"]

    third = _clone(origin, tmp_path / "c")
    run_cli(["dvc", "exp", "pull", "origin", "tune-clones-best"], third)
    run_cli(["dvc", "exp", "apply", "tune-clones-best"], third)
    pulled = json.loads((third / "metrics/eval.json").read_text())
    assert pulled["overall"] == evaluated["overall"]
    assert (third / "models/export/peftpipe.json").is_file()  # the outputs came from the DVC remote
