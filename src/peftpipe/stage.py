"""What every stage script shares: options, params loading, offline set-up, error display."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from peftpipe import hub, quiet
from peftpipe.errors import PeftpipeError, os_error_line
from peftpipe.io import sweep_stale
from peftpipe.limits import one_line
from peftpipe.params import Params, load_params, reads
from peftpipe.runlock import one_run


def configure_runtime(params: Params) -> None:
    """Quiet library noise and skip hub look-ups when nothing in the recipe needs the hub.

    Offline, each hub look-up otherwise retries for 20-50 s before failing.
    """
    if not params.uses_hub():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    elif hub.go_offline_if_unreachable():
        print(f"stage: the hub ({hub.endpoint()}) cannot be reached: only cached models and data sets will load",
              file=sys.stderr)
    quiet.install()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # The "newly initialized: classifier" load report is expected for a new head.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not sys.stderr.isatty():
        # In CI logs a bar redrawn with carriage returns is noise: the Trainer prints plain
        # periodic loss lines instead (see training.training_arguments).
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


# Set in a stage relaunched under another launcher (accelerate): it runs, not relaunches again.
RELAUNCHED_ENV = "PEFTPIPE_RELAUNCHED"


def launched() -> bool:
    """This process was started by a launcher already: our relaunch, or a distributed launch
    by hand (`accelerate launch ... stages/train.py` on each machine sets LOCAL_RANK)."""
    return any(os.environ.get(name) for name in (RELAUNCHED_ENV, "LOCAL_RANK", "WORLD_SIZE"))


def relaunch(prefix: list[str]) -> int:
    """Run this same script with its arguments under ``prefix`` (an argument list, no
    shell) and return its exit code."""
    import subprocess

    env = {**os.environ, RELAUNCHED_ENV: "1"}
    return subprocess.run([*prefix, sys.argv[0], *sys.argv[1:]], env=env).returncode


def stage(reads: tuple[str, ...] = (), writes: tuple[str, ...] = (), scratch: tuple[str, ...] = (),
          launcher: Callable[[Params], list[str] | None] | None = None):
    """Turn ``fn(params, **paths)`` into a click command with --params, --debug and one
    required option per path it reads or writes (``--adapter models/adapter``).

    The paths are given on dvc.yaml's command line and nowhere else: dvc.yaml is the one
    place that says where each stage's inputs and outputs live (tests/test_dvc_yaml.py checks
    that each path read is a dependency and each path written an output). ``scratch`` paths
    are neither (checkpoints). ``launcher(params)``: the command that should run this stage
    (accelerate launch ...), or None to run it here. A PeftpipeError becomes one line on
    stderr and exit code 2; --debug shows the traceback.
    """

    def decorate(fn: Callable[..., None]) -> click.Command:
        @click.option("--params", "params_path", default="params.yaml", show_default=True,
                      type=click.Path(dir_okay=False), help="Params file to read.")
        @click.option("--debug", is_flag=True, help="Show full tracebacks.")
        @functools.wraps(fn)
        def wrapper(params_path: str, debug: bool, **paths) -> None:
            # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so temporary outputs are removed.
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
            try:
                params = load_params(params_path)
                prefix = launcher(params) if launcher and not launched() else None
                if prefix:
                    sys.exit(relaunch(prefix))
                configure_runtime(params)
                name = Path(fn.__code__.co_filename).stem
                with one_run(name), params_read_record(params, name):
                    for output in writes:  # a killed run's temporaries go before anything else
                        sweep_stale(paths[output])
                    fn(params, **paths)
            except PeftpipeError as err:
                if debug:
                    raise
                click.echo(f"error: {one_line(str(err))}", err=True)
                sys.exit(2)
            except Exception as err:  # a library's error we have not translated yet: still one line
                if debug:
                    raise
                click.echo(f"error: {one_line(unexpected(err))}", err=True)
                sys.exit(2)

        for name in reversed((*reads, *writes, *scratch)):
            role = "reads" if name in reads else "writes" if name in writes else "scratch space"
            wrapper = click.option(f"--{name.replace('_', '-')}", name, required=True, type=click.Path(path_type=Path),
                                   help=f"{role} (dvc.yaml passes it)")(wrapper)
        command = click.command(help=fn.__doc__)(wrapper)
        command.paths = {"reads": reads, "writes": writes, "scratch": scratch}
        return command

    return decorate


# Developers: set to a folder, each stage writes <script>.json there: the params leaves it
# read (tests check them against dvc.yaml's params: lists, in both directions).
PARAMS_READ_ENV = "PEFTPIPE_PARAMS_READ"


@contextlib.contextmanager
def params_read_record(params: Params, name: str):
    folder = os.environ.get(PARAMS_READ_ENV)
    if not folder:
        yield
        return
    with reads(params) as found:
        try:
            yield
        finally:  # a stage that failed read what it read too
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"{name}.json").write_text(json.dumps(sorted(found)))


def unexpected(err: Exception) -> str:
    """One line for an error no reader translated, with where it came from: a read or
    write fault (full disk, read-only, permission) as its path and what to do."""
    import traceback

    if isinstance(err, OSError) and (line := os_error_line(err)):
        return line
    if isinstance(err, MemoryError):
        return "out of memory; an input too large for this machine (see the limits in docs/troubleshooting.md)"

    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "peftpipe" in f.filename or "/stages/" in f.filename]
    where = f" (in {Path(ours[-1].filename).name}:{ours[-1].lineno})" if ours else ""
    message = " ".join(str(err).split())[:300] or "no message"
    return f"{type(err).__name__}: {message}{where}; rerun with --debug for the traceback"
