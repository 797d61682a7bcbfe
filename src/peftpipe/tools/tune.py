"""`peftpipe tune`: an Optuna search whose trials are ordinary DVC experiments.

Each trial asks the study for a point of `tune.space`, runs the pipeline up to the train stage
as a DVC experiment with those params set (`dvc exp run --temp -n tune-<study>-<n> -S ... train`:
download, split, tokenize and baseline come from the cache), reads the validation score from
the experiment's metrics/train.json and tells the study. The train stage reports each epoch's
validation score to the trial and stops when the pruner says so (see peftpipe.trial).

The search never reads test. At the end the best trial's params run the whole pipeline once,
as the experiment tune-<study>-best with eval.validation on: its test score, and its
validation score with an interval. The study (every trial, pruned ones, importances) is
written to metrics/tune/ for `dvc plots show`.

Workers share a study through its storage: several `peftpipe tune` processes (each in its own
clone on one machine, or on many machines with a database URL in tune.storage) ask the same
study for trials, and Optuna gives each trial number once. A stopped search started again
continues the same study. Each trial records its worker (host and process id); a worker
that starts or asks for a trial first marks FAIL the running trials of this host whose
process is gone (a worker killed mid-trial), so the study never counts them as running.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peftpipe import experiments
from peftpipe.errors import ParamsError
from peftpipe.io import write_json
from peftpipe.params import Params, SearchRange, TuneParams, load_params
from peftpipe.tools.summarize import exp_show, runs
from peftpipe.trial import TrialLink, make_pruner

PLOTS = Path("metrics/tune")
DEFAULT_STORAGE = Path(".dvc/tmp/tune.db")


@dataclass(frozen=True)
class Outcome:
    """What one trial's experiment reported: its validation score, whether it was pruned."""

    value: float | None
    pruned: bool = False


def study_name(params: Params) -> str:
    return params.tune.study or params.recipe


def storage_url(tune: TuneParams) -> str:
    """The study's storage: tune.storage, or a SQLite file in .dvc/tmp. A SQLite file is
    named absolutely (trials run in temporary copies of the repository): a relative
    sqlite:///searches/x.db is this workspace's file, the one a recipe commits."""
    if tune.storage.startswith("sqlite:///") and not tune.storage.startswith("sqlite:////"):
        relative = Path(tune.storage.removeprefix("sqlite:///"))
        relative.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{relative.resolve()}"
    if tune.storage:
        return tune.storage
    DEFAULT_STORAGE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORAGE.resolve()}"


def check(params: Params) -> None:
    if params.train.loop != "trainer" or params.train.launcher != "python":
        raise ParamsError("params.yaml: peftpipe tune runs train.loop trainer in one process (train.launcher python): "
                          "the pruner follows one Trainer's evaluations")


def make_sampler(tune: TuneParams, trials_so_far: int = 0):
    """The sampler, seeded by tune.seed and the trials the study already holds: a resumed
    search draws new points (seeded alike, each `peftpipe tune` drew the last one's points
    again), and the same record gives the same next point."""
    import optuna

    seed = None if tune.seed is None else tune.seed + trials_so_far
    if tune.sampler == "grid":
        grid_points(tune.space)  # checked here, walked by next_grid_point
    if tune.sampler in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(params: Params):
    """The study named by tune.study (or the recipe), created or continued; a storage that
    cannot be opened is one line naming tune.storage (its password hidden) and what to do."""
    try:
        return _open_study(params)
    except ImportError as err:
        missing = err.name or getattr(err.__cause__, "name", None) or getattr(err.__context__, "name", None)
        raise ParamsError(f"tune.storage {shown_url(storage_url(params.tune))}: its database driver "
                          f"{missing or ''} is not installed; install it (postgresql:// uses psycopg: "
                          f"pip install 'psycopg[binary]'; postgresql+psycopg2:// uses psycopg2-binary)") from None
    except Exception as err:
        kind = type(err).__name__
        if kind == "ArgumentError":
            raise ParamsError(f"tune.storage {shown_url(storage_url(params.tune))}: not a database URL; give e.g. "
                              f"postgresql://user@host:5432/db or sqlite:///path/to/study.db") from None
        if kind in ("OperationalError", "InterfaceError", "DatabaseError"):
            first = " ".join(str(getattr(err, "orig", err)).split())[:200]
            raise ParamsError(f"tune.storage {shown_url(storage_url(params.tune))}: cannot open the database "
                              f"({first}); check that it runs and the URL's host, port, user and name") from None
        raise


def reopened(study, params: Params):
    """The study on a new connection, its sampler and pruner kept (a fresh seeded sampler
    would draw the same points again). `dvc exp run` stashes the workspace's changes and
    puts them back, which rewrites a study database that git tracks and the search has
    changed (searches/<recipe>/study.db) as a new file: SQLite then refuses every write
    through a connection opened before ("attempt to write a readonly database"), and the
    trial's result was lost."""
    import optuna

    return optuna.load_study(study_name=study.study_name, storage=storage_url(params.tune), sampler=study.sampler,
                             pruner=study.pruner)


def shown_url(url: str) -> str:
    """A storage URL as it may be printed: any password replaced by ***."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def _open_study(params: Params):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    where = {"storage": storage_url(params.tune), "study_name": study_name(params),
             "sampler": make_sampler(params.tune), "pruner": make_pruner(params.tune.pruner)}
    for attempt in range(10):
        try:
            study = optuna.create_study(**where, direction="maximize", load_if_exists=True)
            study.sampler = make_sampler(params.tune, len(study.trials))
            return study
        except Exception as err:
            # Workers started together on a new database or study: each creates what it finds
            # missing (optuna's tables, then the study) and the loser's insert collides with
            # the winner's rows. What the winner made is there a moment later.
            if type(err).__name__ not in ("IntegrityError", "DuplicatedStudyError"):
                raise
        try:
            return optuna.load_study(**where)
        except KeyError:  # no study yet (the collision was in optuna's tables) or not visible yet
            time.sleep(0.1 * (attempt + 1))
    return optuna.create_study(**where, direction="maximize", load_if_exists=True)


def worker_identity() -> str:
    """host:pid of this worker, recorded on each trial it runs."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphaned_trials(study) -> list[int]:
    """Mark FAIL the running trials whose worker ran on this host and is gone; their numbers.
    (A worker on another machine is judged by its own machine when it starts again.)"""
    import os
    import socket

    from optuna.trial import TrialState

    from peftpipe.io import process_alive

    failed = []
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        failed.append(trial.number)
    return failed


def grid_points(space: dict[str, SearchRange]) -> list[dict]:
    import itertools

    if any(searched.choices is None for searched in space.values()):
        raise ParamsError("params.yaml: tune.sampler: got 'grid', expected choices for every tune.space key "
                          "(a grid has no ranges)")
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k].choices for k in keys))]


def next_grid_point(study, space: dict[str, SearchRange]) -> dict | None:
    """The first grid point no trial of the study has taken, or None. (Optuna's GridSampler
    stops the study from inside, which only works under study.optimize, not ask and tell.)"""
    taken = [t.params for t in study.get_trials(deepcopy=False)]
    return next((point for point in grid_points(space) if point not in taken), None)


def distributions(space: dict[str, SearchRange]) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    found = {}
    for key, searched in space.items():
        if searched.choices is not None:
            # Optuna's choices are scalars: a list choice travels as its override text, [a,b].
            found[key] = CategoricalDistribution([experiments.override_text(c) if isinstance(c, list) else c
                                                  for c in searched.choices])
        elif float(searched.low).is_integer() and float(searched.high).is_integer() and not searched.log \
                and (searched.step is None or float(searched.step).is_integer()):
            found[key] = IntDistribution(int(searched.low), int(searched.high), step=int(searched.step or 1))
        else:
            found[key] = FloatDistribution(searched.low, searched.high, log=searched.log, step=searched.step)
    return found


def interrupt(signum, frame) -> None:
    """A SIGTERM handler: stop as Ctrl-C stops (the running trial's processes with it)."""
    raise KeyboardInterrupt


def experiment_name(study: str, suffix: str | int) -> str:
    """A git-ref-safe name: tune-<study>-<n>."""
    return f"tune-{re.sub(r'[^A-Za-z0-9_-]+', '-', study)}-{suffix}"


def run_experiment(name: str, values: dict, link: TrialLink | None, target: str | None = "train",
                   minutes: float = 0) -> None:
    """``dvc exp run --temp``: the workspace stays as it is, so workers and the user's own
    edits do not collide; the experiment is recorded under ``name``. ``minutes``: its time
    budget (0: none); over it, the run and every process it started are stopped."""
    import os
    import signal

    # --temp runs in a copy of the repository: paths that leave it are pinned (not searched).
    pinned = experiments.set_options(experiments.pinned_paths(load_params("params.yaml")))
    command = ["dvc", "exp", "run", "--temp", "-n", name, *pinned, *experiments.set_options(values), *([target] if target else [])]
    env = {**os.environ, **(link.to_environment() if link else {})}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own group: a budget stops the stages it started too
    def stop() -> None:  # the run and every stage process it started
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    try:
        stdout, stderr = process.communicate(timeout=minutes * 60 or None)
    except subprocess.TimeoutExpired:
        stop()
        raise RuntimeError(f"{name}: over its budget of {minutes:g} min (tune.trial_minutes); stopped") from None
    except BaseException:
        # Ctrl-C or a kill reaches this process only: the run is in its own session, so
        # without this it would go on training with no one to record it.
        stop()
        raise
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).split())[-400:]
        raise RuntimeError(f"{name}: dvc exp run failed: {tail}")


def push_experiment(name: str, remote: str) -> str | None:
    """``dvc exp push``: the experiment's git ref to ``remote`` and its outputs to the DVC
    remote, so a clone elsewhere pulls it (`dvc exp pull REMOTE NAME`); a line on failure."""
    result = subprocess.run(["dvc", "exp", "push", remote, name], capture_output=True, text=True)
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).split())[-300:]
        return f"tune: {name}: dvc exp push {remote} failed, the experiment stays in this clone: {tail}"
    return None


def find_run(name: str) -> dict:
    """The named experiment in `dvc exp show`: params, eval metrics, train and export metrics."""
    for run in runs(exp_show(all_commits=True)):
        if run["name"] == name:
            return run
    raise RuntimeError(f"{name}: no such experiment in dvc exp show")


def read_outcome(name: str, metric: str) -> Outcome:
    """The trial's validation score from its metrics/train.json (a trial runs up to train:
    the experiment's metrics/eval.json is its parent commit's, never read)."""
    trained = find_run(name)["train"]
    value = (trained.get("validation") or {}).get(metric)
    pruned = (trained.get("tune") or {}).get("pruned_at_epoch") is not None
    return Outcome(None if value is None else float(value), pruned=pruned)


def search(params: Params, trials: int, timeout_minutes: float,
           run: Callable[..., None] = run_experiment,
           read: Callable[[str, str], Outcome] = read_outcome, say: Callable[[str], None] = print,
           push: Callable[[str], str | None] | None = None):
    """Run up to ``trials`` trials (or until ``timeout_minutes``) of the study; the study.
    ``run`` and ``read`` are the DVC side (tests give their own); ``push`` shares each
    trial's experiment (workers in other clones, on other machines)."""
    from optuna.trial import TrialState

    check(params)
    study = open_study(params)
    for number in fail_orphaned_trials(study):
        say(f"tune: trial {number} was left running by a worker that is gone: recorded as failed")
    space = distributions(params.tune.space)
    name = study_name(params)
    started = time.monotonic()
    for _ in range(trials):
        if timeout_minutes and time.monotonic() - started > timeout_minutes * 60:
            say(f"tune: time budget of {timeout_minutes:g} min spent")
            break
        if params.tune.sampler == "grid":
            point = next_grid_point(study, params.tune.space)
            if point is None:
                say("tune: every grid point has been tried")
                break
            study.enqueue_trial(point)
        fail_orphaned_trials(study)
        trial = study.ask(space)
        trial.set_user_attr("worker", worker_identity())
        values = dict(trial.params)
        experiment = experiment_name(name, trial.number)
        trial.set_user_attr("experiment", experiment)
        # The storage's id of the trial (Trial has no public one): the train stage reopens it by this.
        link = TrialLink(storage_url(params.tune), name, trial._trial_id, trial.number, params.tune.metric,
                         params.tune.pruner)
        say(f"tune: trial {trial.number} ({experiment}): {_shown(values)}")
        try:
            try:
                run(experiment, {**values, "tune.trial": trial.number}, link, minutes=params.tune.trial_minutes)
            finally:
                study = reopened(study, params)
            outcome = read(experiment, params.tune.metric)
            if push and (problem := push(experiment)):
                say(problem)
        except (RuntimeError, KeyboardInterrupt) as err:
            study.tell(trial.number, state=TrialState.FAIL)
            if isinstance(err, KeyboardInterrupt):
                raise
            say(f"tune: trial {trial.number} failed: {err}")
            continue
        if outcome.pruned:
            study.tell(trial.number, state=TrialState.PRUNED)
            say(f"tune: trial {trial.number} pruned")
        elif outcome.value is None:
            study.tell(trial.number, state=TrialState.FAIL)
            say(f"tune: trial {trial.number}: no validation {params.tune.metric} in metrics/train.json")
        else:
            study.tell(trial.number, outcome.value)
            say(f"tune: trial {trial.number}: validation {params.tune.metric} {outcome.value:.4f} "
                f"(best so far {study.best_value:.4f}, trial {study.best_trial.number})")
    return study


def _shown(values: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def record(study, folder: Path = PLOTS) -> dict:
    """metrics/tune/: every trial (history.json), parameter importances (importances.json),
    and a summary (study.json) with the counts and the best trial."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rows, best = [], None
    for trial in trials:
        if trial.state == TrialState.COMPLETE and (best is None or trial.value > best):
            best = trial.value
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                     "best": best, "experiment": trial.user_attrs.get("experiment"),
                     **{f"param.{k}": v for k, v in trial.params.items()}})
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    importances = []
    if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
        try:
            found = optuna.importance.get_param_importances(study)
            importances = [{"param": k, "importance": round(v, 4)} for k, v in found.items()]
        except (RuntimeError, ValueError):  # too few distinct values for the forest
            importances = []
    counts = {state: sum(1 for r in rows if r["state"] == state) for state in ("complete", "pruned", "fail")}
    summary = {"study": study.study_name, "trials": len(rows), **counts,
               "best": {"trial": study.best_trial.number, "value": study.best_value, "params": study.best_params,
                        "experiment": study.best_trial.user_attrs.get("experiment")} if complete else None}
    write_json(folder / "history.json", [{"trial": r["trial"], "value": r["value"], "best": r["best"]}
                                         for r in rows if r["state"] == "complete"])
    write_json(folder / "trials.json", rows)
    write_json(folder / "importances.json", importances)
    write_json(folder / "study.json", summary)
    # Their own dvc.yaml (plots only): `dvc plots show` draws them once a search has run,
    # while the pipeline's dvc.yaml names only what its stages write.
    (folder / "dvc.yaml").write_text(PLOTS_YAML)
    return summary


PLOTS_YAML = """\
# Written by peftpipe tune: what `dvc plots show` draws of the search.
plots:
  - Search, validation score per trial and best so far:
      x: trial
      y:
        history.json: [value, best]
  - Search, parameter importances:
      template: bar_horizontal
      x: importance
      y:
        importances.json: param
"""


def evaluate_best(params: Params, study, run: Callable = run_experiment, say: Callable[[str], None] = print) -> dict:
    """The best trial's params through the whole pipeline once (test scored, and validation
    with its interval); its metrics."""
    name = experiment_name(study_name(params), "best")
    say(f"tune: best trial {study.best_trial.number}: validation {params.tune.metric} {study.best_value:.4f}; "
        f"scoring it on test once ({name})")
    run(name, {**study.best_params, "eval.validation": True}, None, None)
    return find_run(name)["metrics"]


def scores_line(metrics: dict, metric: str) -> str:
    """'test f1 0.49 [0.40, 0.58]; validation f1 0.47 [0.41, 0.53]' from an eval.json."""
    def shown(overall: dict) -> str:
        bounds = overall.get(f"{metric}_ci") or {}
        return f"{overall.get(metric, float('nan')):.4f} [{bounds.get('low', float('nan')):.4f}, " \
               f"{bounds.get('high', float('nan')):.4f}]"

    validation = (metrics.get("extra") or {}).get("validation", {}).get("overall", {})
    return f"tune: test {metric} {shown(metrics.get('overall', {}))} (scored once); validation {metric} " \
           f"{shown(validation)}"
