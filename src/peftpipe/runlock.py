"""One run of a stage at a time in one project: a second run started while the first is
still going (a second terminal, a retried job) stops at once with one line naming the
first, instead of both writing the same outputs.

The lock lives outside the project (the system's temporary folder, keyed by the project's
real path and the stage), so a read-only project can still be locked, and `dvc exp run`'s
copies of the project (other paths) run side by side. The operating system releases it
when its process ends in any way, SIGKILL included; a paused run (SIGSTOP) still holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from peftpipe.errors import PeftpipeError


class Busy(PeftpipeError):
    """Another run of the same stage holds the project."""


def lock_path(stage: str, project: Path | None = None) -> Path:
    project = (project or Path.cwd()).resolve()
    key = hashlib.sha256(str(project).encode()).hexdigest()[:16]
    # Per user: one user's lock folder must not stop another's runs on a shared machine.
    return Path(tempfile.gettempdir()) / f"peftpipe-locks-{os.getuid()}" / f"{key}-{stage}.lock"


def _is_helper_process() -> bool:
    """A second process of one `accelerate launch`: the launch's first process holds the lock."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0"


@contextlib.contextmanager
def one_run(stage: str) -> Iterator[None]:
    """Hold the project's lock for ``stage``, or raise Busy naming the run that holds it."""
    from filelock import FileLock, Timeout

    if _is_helper_process():
        yield
        return
    path = lock_path(stage)
    owner = path.with_suffix(".owner")
    lock = FileLock(str(path), timeout=0)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:  # (an OSError too: caught first)
        raise Busy(f"stage {stage}: another run is writing its outputs in {Path.cwd()} ({_describe(owner)}); "
                   f"wait for it to end, or stop it, then rerun") from None
    except OSError:  # no writable temporary folder: run unguarded rather than not at all
        lock = None
    try:
        if lock is not None:
            owner.write_text(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        yield
    finally:
        if lock is not None:
            lock.release()


def _describe(owner: Path) -> str:
    try:
        found = json.loads(owner.read_text())
        return f"pid {found['pid']}, started {found['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its process id was not recorded"
