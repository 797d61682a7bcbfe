"""`peftpipe tune`: the search space in the params schema, the Optuna study (planted best
found, resumed, shared by two worker processes), pruning from inside the real train stage,
and, end to end on the tiny model, trials recorded as DVC experiments."""

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import copy_repo, git_repo, run_cli, run_stage, write_tiny_recipe

from peftpipe import experiments
from peftpipe.errors import ParamsError
from peftpipe.io import read_json
from peftpipe.params import parse_params, write_params
from peftpipe.tools import tune

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize(("space", "message"), [
    ({"lora.rank": {"choices": [4]}}, "tune.space.lora.rank: got 'lora.rank', expected a param key such as lora.r"),
    ({"lora.r": {"choices": [0, 4]}}, "tune.space.lora.r: got 0, expected a value lora.r takes (input should be greater"),
    ({"lora.dropout": {"low": 0.0, "high": 1.5}}, "tune.space.lora.dropout: got 1.5, expected a value lora.dropout takes"),
    ({"train.learning_rate": {"low": 0, "high": 1, "log": True}},
     "tune.space.train.learning_rate.low: got 0.0, expected a number above 0 with log: true"),
    ({"lora.r": {"low": 4}}, "tune.space.lora.r.low: got 4.0, expected low < high (a range), or choices"),
    ({"lora": {"choices": [1]}}, "tune.space.lora: got 'lora', expected a param key"),
    ({"peft.method": {"choices": ["lora", "dorra"]}}, "tune.space.peft.method: got 'dorra', expected a value peft.method"),
])
def test_the_search_space_is_checked_against_the_params_it_sets(space, message):
    with pytest.raises(ParamsError) as err:
        parse_params({"tune": {"space": space}})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ranges_become_optuna_distributions():
    params = parse_params({"tune": {"space": {
        "lora.r": {"choices": [4, 8]}, "train.epochs": {"low": 1, "high": 5},
        "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora.dropout": {"low": 0, "high": 0.5, "step": 0.1}}}})
    found = tune.distributions(params.tune.space)
    assert found["lora.r"].choices == (4, 8)
    assert isinstance(found["train.epochs"], optuna.distributions.IntDistribution) and found["train.epochs"].high == 5
    assert found["train.learning_rate"].log and found["lora.dropout"].step == 0.1
    with pytest.raises(ParamsError, match="tune.sampler: got 'grid', expected choices for every tune.space key"):
        tune.make_sampler(parse_params({"tune": {"sampler": "grid", "space": {"train.epochs": {"low": 1, "high": 3}}}}).tune)


def planted(values: dict) -> float:
    """A toy objective whose best is lora.r 16 with learning rate 1e-3."""
    return 1.0 - abs(math.log10(values["train.learning_rate"]) + 3) - abs(values["lora.r"] - 16) / 100


class FakeExperiments:
    """The DVC side of a search, in memory: run records the params, read scores them."""

    def __init__(self):
        self.ran = {}

    def run(self, name, values, link, minutes=0):
        assert name not in self.ran
        self.ran[name] = values

    def read(self, name, metric):
        return tune.Outcome(planted(self.ran[name]))


def toy_params(tmp_path, sampler="grid", study="toy"):
    return parse_params({"recipe": "toy", "tune": {
        "sampler": sampler, "study": study, "storage": f"sqlite:///{tmp_path}/study.db",
        "space": {"lora.r": {"choices": [4, 16]}, "train.learning_rate": {"choices": [1e-5, 1e-3]}}}})


def test_a_four_trial_study_finds_the_planted_best_and_resumes(tmp_path):
    fake = FakeExperiments()
    params = toy_params(tmp_path)
    said = []
    study = tune.search(params, 2, 0, run=fake.run, read=fake.read, say=said.append)
    assert len(study.trials) == 2
    # Started again: the same study goes on where it stopped (trial numbers continue).
    study = tune.search(params, 5, 0, run=fake.run, read=fake.read, say=said.append)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]  # the grid is exhausted after four
    assert "tune: every grid point has been tried" in said
    assert study.best_params == {"lora.r": 16, "train.learning_rate": 1e-3}
    assert sorted(fake.ran) == [f"tune-toy-{n}" for n in range(4)]
    # Each trial's run carries its number as a train param: its own key in DVC's run cache.
    assert sorted(v["tune.trial"] for v in fake.ran.values()) == [0, 1, 2, 3]
    summary = tune.record(study, tmp_path / "plots")
    assert summary["complete"] == 4 and summary["best"]["experiment"] == study.best_trial.user_attrs["experiment"]
    history = read_json(tmp_path / "plots/history.json")
    assert [row["trial"] for row in history] == [0, 1, 2, 3]
    assert history[-1]["best"] == max(row["value"] for row in history)
    assert {row["param"] for row in read_json(tmp_path / "plots/importances.json")} == {"lora.r", "train.learning_rate"}


def test_a_study_file_rewritten_during_a_trial_still_records_it(tmp_path):
    """`dvc exp run` stashes and restores the workspace's changes: a study database git
    tracks comes back as a new file (a new inode), and a connection opened before refuses
    to write. The trial's result is recorded all the same, and the search goes on."""
    import shutil

    fake = FakeExperiments()
    params = toy_params(tmp_path)
    database = tmp_path / "study.db"

    def run(name, values, link, minutes=0):
        fake.run(name, values, link, minutes)
        shutil.copy(database, tmp_path / "restored.db")  # what git stash pop writes back
        (tmp_path / "restored.db").replace(database)

    study = tune.search(params, 3, 0, run=run, read=fake.read, say=lambda line: None)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert [t.value for t in study.trials] == [planted(fake.ran[f"tune-toy-{n}"]) for n in range(3)]
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3  # the sampler kept its place


def test_a_resumed_search_draws_new_points_and_the_same_record_the_same_next_one(tmp_path):
    """Each `peftpipe tune` starts its sampler from tune.seed: seeded by the trials the study
    holds, the second does not draw the first one's points again (it did: the mrpc search's
    trial 4 repeated trial 2)."""
    import shutil

    fake = FakeExperiments()
    params = parse_params({"recipe": "toy", "tune": {"sampler": "random", "study": "toy",
                                                     "storage": f"sqlite:///{tmp_path}/study.db",
                                                     "space": {"train.learning_rate": {"low": 1e-5, "high": 1e-2}}}})
    read = lambda name, metric: tune.Outcome(0.5)  # noqa: E731
    tune.search(params, 1, 0, run=fake.run, read=read, say=lambda line: None)
    shutil.copy(tmp_path / "study.db", tmp_path / "after-one.db")
    study = tune.search(params, 1, 0, run=fake.run, read=read, say=lambda line: None)
    first, second = (t.params["train.learning_rate"] for t in study.trials)
    assert first != second
    (tmp_path / "after-one.db").replace(tmp_path / "study.db")  # the same record again
    again = tune.search(params, 1, 0, run=lambda *args, **kwargs: None, read=read, say=lambda line: None)
    assert again.trials[1].params["train.learning_rate"] == second


def test_sigterm_stops_tune_as_ctrl_c_does(tmp_path, monkeypatch):
    """`peftpipe tune` turns SIGTERM into the interrupt that stops the trial it runs."""
    import signal

    from peftpipe.cli import main
    from peftpipe.tools import tune as search_module

    stopped = []

    def search(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            stopped.append(True)
            raise

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"tune": {"space": {"lora.r": {"choices": [4, 8]}}}})
    monkeypatch.setattr(search_module, "search", search)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        CliRunner().invoke(main, ["tune"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped == [True]


def test_each_trial_is_pushed_as_it_ends_and_a_failed_push_is_one_line(tmp_path):
    fake, pushed, said = FakeExperiments(), [], []
    params = toy_params(tmp_path, sampler="random", study="pushed")

    def push(name):
        pushed.append(name)
        return f"tune: {name}: dvc exp push origin failed" if name.endswith("-1") else None

    study = tune.search(params, 2, 0, run=fake.run, read=fake.read, say=said.append, push=push)
    assert pushed == ["tune-pushed-0", "tune-pushed-1"]
    assert "tune: tune-pushed-1: dvc exp push origin failed" in said
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]  # the trial still counts


def test_a_pruned_or_failed_experiment_is_recorded_as_such(tmp_path):
    params = toy_params(tmp_path, sampler="random", study="states")
    outcomes = iter([tune.Outcome(0.5), tune.Outcome(0.1, pruned=True), tune.Outcome(None)])

    def run(name, values, link, minutes=0):
        if name.endswith("-3"):
            raise RuntimeError(f"{name}: dvc exp run failed: planted")

    study = tune.search(params, 4, 0, run=run, read=lambda name, metric: next(outcomes), say=lambda line: None)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert tune.record(study, tmp_path / "plots")["pruned"] == 1


WORKER = textwrap.dedent("""
    import sys, time
    from peftpipe.tools import tune
    from peftpipe.params import parse_params

    params = parse_params({"recipe": "toy", "tune": {"sampler": "random", "study": "shared",
        "storage": sys.argv[1], "space": {"lora.r": {"choices": [4, 8, 16, 32]},
                                          "train.learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}}})
    def run(name, values, link, minutes=0):
        print(name, flush=True)
        time.sleep(0.3)
    tune.search(params, 4, 0, run=run, read=lambda name, metric: tune.Outcome(0.5), say=lambda line: None)
""")


def test_two_worker_processes_share_one_study_without_repeating_a_trial(tmp_path):
    storage = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(storage=storage, study_name="shared", direction="maximize")  # created once, as a first worker would
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, storage], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    names = [line.strip() for worker in workers for line in worker.communicate(timeout=300)[0].splitlines()]
    assert all(worker.returncode == 0 for worker in workers)
    assert sorted(names) == sorted(f"tune-shared-{n}" for n in range(8))  # each trial number ran once
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 8 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_the_train_stage_reports_to_its_trial_and_stops_when_pruned(tiny_project, monkeypatch):
    """Five finished trials scored 0.9 and more at every epoch; this one learns nothing
    (learning rate 1e-9): the median pruner stops it after its first evaluation, and the stage
    ends cleanly with the adapter saved and the stop recorded."""
    from peftpipe.trial import TrialLink

    storage = f"sqlite:///{tiny_project}/study.db"
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(value=0.95, intermediate_values={e: 0.9 + e / 100 for e in range(1, 11)}))
    trial = study.ask()
    link = TrialLink(storage, "prune", trial._trial_id, trial.number, "f1", "median")
    monkeypatch.setenv(*next(iter(link.to_environment().items())))
    write_params(tiny_project / "params.yaml", {"train": {"epochs": 10, "learning_rate": 1e-9}})
    for stage in ("download", "split", "tokenize_align", "train"):
        run_stage(stage)
    trained = read_json(tiny_project / "metrics/train.json")
    assert trained["tune"] == {"trial": trial.number, "study": "prune", "pruned_at_epoch": 1.0}
    assert trained["epochs"] == 1.0 and (tiny_project / "models/adapter/peftpipe.json").exists()
    reported = optuna.load_study(study_name="prune", storage=storage).trials[-1].intermediate_values
    assert list(reported) == [1] and reported[1] < 0.9


def test_train_without_a_trial_reports_nothing(tiny_project):
    write_params(tiny_project / "params.yaml", {"train": {"max_steps": 5}})
    for stage in ("download", "split", "tokenize_align", "train"):
        run_stage(stage)
    assert "tune" not in read_json(tiny_project / "metrics/train.json")


@pytest.mark.slow  # three dvc exp runs of the tiny model in subprocesses (~1 min)
def test_tune_runs_trials_as_dvc_experiments_and_scores_the_best_once_on_test(tmp_path, tiny_model_dir):
    repo = copy_repo(tmp_path)
    write_tiny_recipe(repo, tiny_model_dir)
    write_params(repo / "params.yaml", {"train": {"epochs": 2}, "tune": {
        "sampler": "grid", "pruner": "none", "study": "tiny",
        "space": {"train.learning_rate": {"choices": [1e-6, 2e-2]}}}})
    git_repo(repo)
    output = run_cli(["peftpipe", "tune", "--trials", "2"], repo)
    assert "tune: 2 trials in study 'tiny': 2 complete, 0 pruned, 0 failed" in output
    assert "'train.learning_rate': 0.02" in output  # the planted best: the tiny model learns nothing at 1e-6
    assert "(scored once); validation f1" in output
    shown = json.loads(run_cli(["dvc", "exp", "show", "--json"], repo))
    experiments = {rev["name"]: rev for entry in shown for exp in entry.get("experiments") or [] for rev in exp["revs"]}
    assert {f"tune-tiny-{n}" for n in range(2)} | {"tune-tiny-best"} <= set(experiments)
    trial = experiments["tune-tiny-0"]["data"]
    assert "learning_rate" in trial["params"]["params.yaml"]["data"]["train"]
    assert trial["params"]["params.yaml"]["data"]["tune"]["trial"] == 0
    assert "validation" in trial["metrics"]["metrics/train.json"]["data"]
    best = experiments["tune-tiny-best"]["data"]["metrics"]["metrics/eval.json"]["data"]
    assert best["extra"]["validation"]["overall"]["f1_ci"]["low"] <= best["extra"]["validation"]["overall"]["f1"]
    study = read_json(repo / "metrics/tune/study.json")
    assert study["best"]["params"]["train.learning_rate"] == 0.02 and study["complete"] == 2


def test_a_worker_that_loses_the_race_to_create_the_study_joins_it(tmp_path, monkeypatch):
    """Two workers starting on a new study both create it; on PostgreSQL the second one's
    insert fails (sqlalchemy's IntegrityError): it loads the study the first one made."""
    import optuna

    params = toy_params(tmp_path, sampler="random", study="raced")
    made = tune.open_study(params)
    real_create = optuna.create_study

    class IntegrityError(Exception):
        pass

    def collide(**kwargs):
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(optuna, "create_study", collide)
    joined = tune.open_study(params)
    assert joined.study_name == made.study_name == "raced" and joined._study_id == made._study_id

    calls = []

    def collide_once(**kwargs):  # two workers creating optuna's tables at once: the study is not made
        calls.append(kwargs["study_name"])
        if len(calls) == 1:
            raise IntegrityError('duplicate key value violates unique constraint "pg_type_typname_nsp_index"')
        return real_create(**kwargs)

    monkeypatch.setattr(optuna, "create_study", collide_once)
    fresh = tune.open_study(toy_params(tmp_path, sampler="random", study="schema-raced"))
    assert fresh.study_name == "schema-raced" and calls == ["schema-raced", "schema-raced"]

    def broken(**kwargs):
        raise RuntimeError("database is down")

    monkeypatch.setattr(optuna, "create_study", broken)
    with pytest.raises(RuntimeError, match="database is down"):  # any other failure is not a race
        tune.open_study(params)


def test_each_trial_gets_the_per_trial_time_budget(tmp_path):
    params = toy_params(tmp_path, sampler="random", study="budget")
    params = params.model_copy(update={"tune": params.tune.model_copy(update={"trial_minutes": 7.5})})
    budgets = []
    tune.search(params, 2, 0, run=lambda name, values, link, minutes=0: budgets.append(minutes),
                read=lambda name, metric: tune.Outcome(0.5), say=lambda line: None)
    assert budgets == [7.5, 7.5]


def fake_long_dvc_run(tmp_path, monkeypatch) -> None:
    """`dvc` on PATH: a run that starts a long stage process (its pid in tmp_path/child) and waits."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path}/child\nwait\n")
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {})


def stage_process_gone(tmp_path) -> bool:
    import time

    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # gone (or a zombie)


def test_a_trial_over_its_budget_is_stopped_with_every_process_it_started(tmp_path, monkeypatch):
    """run_experiment's budget: the dvc run and the stage processes under it are stopped."""
    import time

    fake_long_dvc_run(tmp_path, monkeypatch)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"toy-1: over its budget of 0.01 min \(tune.trial_minutes\); stopped"):
        tune.run_experiment("toy-1", {"lora.r": 8}, None, minutes=0.01)
    assert time.monotonic() - started < 30
    assert stage_process_gone(tmp_path)


def test_stopping_tune_stops_the_trial_it_was_running(tmp_path, monkeypatch):
    """Ctrl-C reaches peftpipe tune only (the trial's run is in its own session): the run and
    the stage processes under it are stopped with it, not left training unrecorded."""
    import signal

    fake_long_dvc_run(tmp_path, monkeypatch)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            tune.run_experiment("toy-2", {"lora.r": 8}, None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stage_process_gone(tmp_path)


def test_a_mapping_params_key_can_be_searched():
    """split.per_class.train: rows per class, searched like any leaf; its value checked."""
    params = parse_params({"task": {"kind": "sequence_classification"},
                           "tune": {"space": {"split.per_class.train": {"choices": [32, 64, 128]}}}})
    assert tune.distributions(params.tune.space)["split.per_class.train"].choices == (32, 64, 128)
    with pytest.raises(ParamsError, match=r"space.split.per_class.train: got 0, expected a value split.per_class.train"):
        parse_params({"tune": {"space": {"split.per_class.train": {"choices": [0, 64]}}}})
    with pytest.raises(ParamsError, match="a param key such as lora.r"):
        parse_params({"tune": {"space": {"lora.r.x": {"choices": [1, 2]}}}})


def test_a_list_param_is_searched_over_whole_lists_and_set_as_hydra_reads_it():
    params = parse_params({"tune": {"space": {"peft.modules_to_save": {"choices": [[], ["pooler", "encoder.layer.5"]]}}}})
    found = tune.distributions(params.tune.space)["peft.modules_to_save"]
    assert found.choices == ("[]", "[pooler,encoder.layer.5]")
    assert experiments.set_options({"peft.modules_to_save": ["pooler", "encoder.layer.5"], "train.bf16": True}) == \
        ["-S", "++peft.modules_to_save=[pooler,encoder.layer.5]", "-S", "++train.bf16=true"]
    with pytest.raises(ParamsError, match="space.peft.modules_to_save: got "):
        parse_params({"tune": {"space": {"peft.modules_to_save": {"choices": [["pooler", ""]]}}}})


def test_a_relative_sqlite_storage_is_this_workspaces_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = tune.storage_url(parse_params({"tune": {"storage": "sqlite:///searches/r.db"}}).tune)
    assert url == f"sqlite:///{tmp_path / 'searches' / 'r.db'}"
    assert (tmp_path / "searches").is_dir()
    assert tune.storage_url(parse_params({"tune": {"storage": "sqlite:////srv/t.db"}}).tune) == "sqlite:////srv/t.db"
