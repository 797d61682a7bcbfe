"""Errors a user can act on. The stage runner prints them as one line (no traceback)."""


class PeftpipeError(Exception):
    """Base class: the message names the file, key or value and what would be valid."""


class ParamsError(PeftpipeError):
    """params.yaml (or a recipe) has an unknown key, a wrong type or a bad value."""


class DataError(PeftpipeError):
    """Input data is missing, malformed or inconsistent with the label set."""


class ModelError(PeftpipeError):
    """A model cannot be found, or does not fit the task."""


class ExportError(PeftpipeError):
    """The exported model does not reproduce the adapter model's predictions."""


class InputError(PeftpipeError):
    """Input given on the command line or stdin cannot be read."""


# What to do about a failed read or write, by errno: the class of fault, not the call that hit it.
_OS_ADVICE = {
    "ENOSPC": "the disk is full; free some space and rerun",
    "EFBIG": "the file grew past the size this system allows (a file-size limit, ulimit -f); raise it or free space",
    "EDQUOT": "the disk quota is used up; free some space and rerun",
    "EROFS": "the file system is read-only; run from a writable copy of the project",
    "EACCES": "permission denied; make it writable (or readable) for this user, or run from a copy you own",
    "EPERM": "the operation is not permitted here; check the folder's owner and mode",
    "ENOENT": "it is not there (a folder removed while the run was going?); rerun",
    "ELOOP": "a symbolic link that points back at itself (a link loop); point it at the real file",
    "ENAMETOOLONG": "the path is too long for this file system; use a shorter name",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EISDIR": "it is a folder, not a file",
    "EMFILE": "too many files are open at once (ulimit -n); raise the limit and rerun",
    "EIO": "the disk reported an input/output error; check the device",
}


def os_error_line(err: OSError) -> str | None:
    """One line for an OSError whose errno we know: the path and what to do; else None."""
    import errno

    name = errno.errorcode.get(err.errno or 0)
    advice = _OS_ADVICE.get(name or "")
    if advice is None:
        return None
    path = _target(err.filename) if err.filename is not None else "a file"
    other = f" -> {_target(err.filename2)}" if getattr(err, "filename2", None) else ""
    return f"{path}{other}: {advice} ({name})"


def _target(path) -> str:
    """A temporary sibling (.NAME.tmp-<pid>-<random>, io.atomic_path) as the output it stands for."""
    import re

    return re.sub(r"(^|/)\.([^/]+?)\.tmp-\d+-[^/]+", r"\1\2", str(path))
