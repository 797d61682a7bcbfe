"""Atomic writes: a failed or interrupted stage never leaves an output that looks valid.

Everything is written to a temporary sibling first and renamed into place at the end;
a rename within one folder is atomic on POSIX file systems. A temporary's name carries the
process that writes it (``.NAME.tmp-<pid>-<random>``), so a later run removes only the
leftovers of runs that are gone, never another live run's.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
    # numpy scalars (from seqeval / scikit-learn) are not JSON serialisable.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _mode(target: Path, directory: bool) -> int:
    if target.exists() and not target.is_symlink():
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def process_alive(pid: int) -> bool:
    """Whether another process with this id runs on this machine (our own id: no; it can only
    be a dead process's, reused)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


# This project's naming rule for temporaries: .NAME.tmp-<pid>-<tempfile's 8 random characters>.
# Only names that follow it are ever swept: a user's own `.raw.tmp-notes` is not ours.
_TEMPORARY = re.compile(r"(\d+)-[a-z0-9_]{8}")


def _stale(temporary: Path, prefix: str) -> bool:
    """Whether ``temporary`` is one of our temporaries whose writing process is gone."""
    found = _TEMPORARY.fullmatch(temporary.name[len(prefix):])
    return found is not None and not process_alive(int(found.group(1)))


def sweep_stale(target: str | os.PathLike) -> None:
    """Remove what killed runs left beside ``target`` (a SIGKILL skips every cleanup): every
    stage does this for its outputs when it starts, not only when it comes to write them."""
    target = Path(target)
    prefix = f".{target.name}.tmp-"
    if target.parent.is_dir():
        for stale in target.parent.glob(prefix + "*"):
            if _stale(stale, prefix):
                _remove(stale)


def _umask_modes(folder: Path) -> None:
    """What libraries wrote inside a temporary folder gets the modes a plain open() gives
    (some write weights 0600): an output's files all readable alike on a shared machine."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it onto ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    prefix = f".{target.name}.tmp-{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    # mkstemp/mkdtemp create 0600/0700, and the rename keeps that: shared machines and
    # shared DVC caches need the modes a plain open() would give (or the file's own).
    os.chmod(tmp, _mode(target, directory))
    try:
        yield tmp
        if directory:
            _umask_modes(tmp)
        _remove(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            _remove(tmp)


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy ``source`` to ``target`` so that ``target`` is either its old self or a whole
    copy: a backup that fails half-way (a full disk) never replaces a good one."""
    with atomic_path(target) as tmp:
        shutil.copy2(source, tmp)


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file the pipeline wrote itself (a user's files go through read_json_file)."""
    return json.loads(Path(path).read_text())


def decode(raw: bytes, encoding: str, where: str, error: type[Exception], advice: str) -> str:
    """Bytes a user brought as text, or ``error`` naming the line with the first byte that is
    not ``encoding``. A UTF-8 byte-order mark (Excel and Notepad write one) is dropped: left
    in, it would be glued to the first token, column name or key."""
    by_mark = False
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
        # A UTF-16 or UTF-32 byte-order mark (Excel's "Unicode text", PowerShell's default)
        # says the encoding outright; read as UTF-8 the file is only a wall of bad bytes.
        for mark, marked in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                             (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
            if raw.startswith(mark):
                encoding, by_mark = marked, True
                break
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        why = f", read as {encoding}: it starts with that byte-order mark" if by_mark else ""
        raise error(f"{where}: line {line} is not valid {encoding.removesuffix('-sig')} "
                    f"(byte 0x{raw[err.start]:02x}{why}); {advice}") from None


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def check_files(files: dict[str, str], key: str, error: type[Exception], consequence: str) -> None:
    """Each of ``files`` ({name: path}, under params key ``key``) is a file that can be read,
    or ``error`` naming the first that is not and ``consequence``: checked where a stage would
    otherwise find out late (the train stage, for the evaluate stage's eval.extra)."""
    for name, path in files.items():
        problem = unusable(Path(path))
        if problem:
            raise error(f"{key}.{name} ({path}): {problem} ({consequence})")


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def url_problem(value: str) -> str | None:
    """Why a path-valued key cannot hold ``value`` when it is a URL (Path() would turn
    https://x into https:/x and report it missing), or None."""
    if URL.match(str(value)) and not re.match(r"^[A-Za-z]:[/\\]", str(value)):  # C:/data is a Windows path
        return ("is a URL; this key takes a local path: download the file first (e.g. under inputs/), or for a "
                "data set on the Hugging Face hub set data.source: hub and data.name")
    return None


def unusable(path: Path) -> str | None:
    """Why ``path`` cannot be the file it should be, as the end of a sentence, or None."""
    if problem := url_problem(str(path)):
        return problem
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link that leads back to itself (a link loop); point it at the real file"
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    if path.is_dir():
        return "is a folder, not a file"
    if not path.exists():
        if not path.is_absolute() and ".." in path.parts and "/.dvc/tmp/exps/" in Path.cwd().as_posix() + "/":
            return ("file not found: this experiment runs in a copy of the repository (.dvc/tmp/exps, as `dvc exp "
                    "run --queue` and `--temp` do), where a relative path that leaves the repository does not "
                    "resolve; give it as an absolute path (`-S key=/abs/path`; peftpipe methods and tune do that)")
        return "file not found"
    with open(path, "rb") as fh:
        start = fh.read(len(LFS_POINTER))
    if not start:
        return "the file is empty"
    if start == LFS_POINTER:
        return "is a Git LFS pointer, not the file itself; run `git lfs pull` (or download the real file)"
    return None


def read_json_file(path: str | os.PathLike, error: type[Exception]) -> Any:
    """A JSON file a user brought, or ``error`` with one line naming the file and the place."""
    path = Path(path)
    problem = unusable(path)
    if problem:
        raise error(f"{path}: {problem}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{path}: not valid JSON (not UTF-8 at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
