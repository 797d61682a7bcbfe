"""Named bounds on what peftpipe reads, so a hostile or broken input stops in one line
instead of filling the memory: a YAML alias bomb, a gzip bomb, a 50 MB params file, a
data file of one endless line, an error message that would list every label.

Each bound is far above what a real input needs (the default params.yaml is 7 KB with
about 200 values; CoNLL-2003's longest line is under 200 characters) and is listed in
docs/troubleshooting.md. Hitting one names the file and the limit.
"""

from __future__ import annotations

from typing import Any

# params.yaml, recipes/*.yaml: bytes on disk, values after YAML aliases are expanded, nesting.
PARAMS_FILE_BYTES = 1 << 20
PARAMS_VALUES = 20_000
PARAMS_DEPTH = 20
# Data files: bytes after decompression (gz, bz2, xz, zip), and the expansion ratio beyond
# which a small compressed file is taken for a bomb (text compresses 3-10x; a ratio of 200
# is only reached by runs of one byte) once it has grown past RATIO_CHECKED_FROM.
DECOMPRESSED_BYTES = 4 << 30
DECOMPRESSION_RATIO = 200
RATIO_CHECKED_FROM = 64 << 20
# One line of a text data file (a CSV row, a JSON line, a CoNLL token line).
LINE_CHARS = 10_000_000
# Messages: a list shows this many items, then "and N more"; a whole line is cut to MESSAGE_CHARS.
MESSAGE_ITEMS = 8
MESSAGE_CHARS = 2_000


def listed(items, limit: int = MESSAGE_ITEMS, separator: str = ", ") -> str:
    """``items`` joined for a message, the first ``limit`` of them and "and N more"."""
    items = [str(item) for item in items]
    shown = separator.join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def one_line(message: str, limit: int = MESSAGE_CHARS) -> str:
    """A message as one line of at most about ``limit`` characters (its start and its end kept)."""
    message = " ".join(str(message).split()) if "\n" in str(message) else str(message)
    if len(message) <= limit:
        return message
    cut = len(message) - limit
    return f"{message[: limit - 200]} ... ({cut} characters cut) ... {message[-200:]}"


def expanded_size(value: Any, where: str, error: type[Exception]) -> int:
    """How many values ``value`` holds once every shared reference (a YAML alias) is
    expanded, or ``error`` past PARAMS_VALUES, past PARAMS_DEPTH, or for a value that holds
    itself. Counted with memoisation, so a billion-laughs document costs its node count."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise error(f"{where}: a YAML alias refers to a value that holds it (a loop); write the value out")
        if depth > PARAMS_DEPTH:
            raise error(f"{where}: nested more than {PARAMS_DEPTH} levels deep (limit PARAMS_DEPTH)")
        open_.add(key)
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > PARAMS_VALUES:
                raise error(f"{where}: more than {PARAMS_VALUES:,} values once its YAML aliases are expanded "
                            f"(limit PARAMS_VALUES); a params file needs a few hundred")
        open_.discard(key)
        sizes[key] = total
        return total

    return size(value, 0)
