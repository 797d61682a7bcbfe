"""params files: read (size, depth and alias bounds, YAML syntax errors with their line),
validated into Params, and edited in place keeping comments, with a backup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from peftpipe import limits
from peftpipe.errors import ParamsError
from peftpipe.io import atomic_copy, atomic_path, decode
from peftpipe.params.messages import explain
from peftpipe.params.schema import Params, _field_at


def parse_params(data: Any, file: str = "params.yaml") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{file}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(data, context={"root": str(Path(file).parent)})
    except ValidationError as err:
        raise ParamsError(explain(err, data, file)) from None


def _yaml_problem(err: Exception) -> str:
    """The parser's complaint on one line, with the line and column it points at."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if not problem:
        return " ".join(str(err).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def read_yaml(path: Path) -> Any:
    """A YAML file's content (YAML 1.2, as DVC writes it: 1e-3 is a number), or a ParamsError
    naming the file and, for a syntax error, the line and column."""
    from ruamel.yaml import YAML, YAMLError

    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, not a file")
    if not path.exists():
        raise ParamsError(f"{path}: file not found (run from the project root, or pass --params)")
    size = path.stat().st_size
    if size > limits.PARAMS_FILE_BYTES:
        raise ParamsError(f"{path}: {size:,} bytes, over the {limits.PARAMS_FILE_BYTES:,} a params file may have "
                          f"(limit PARAMS_FILE_BYTES); data belongs in data files, not in params")
    text = decode(path.read_bytes(), "utf-8", str(path), ParamsError, "save it as UTF-8")
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise ParamsError(f"{path}: nested too deep to read (limit PARAMS_DEPTH, {limits.PARAMS_DEPTH} levels)") from None
    limits.expanded_size(data, str(path), ParamsError)
    return data


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    data = read_yaml(path)
    if data is None:  # DVC cannot even parse dvc.yaml's ${...} against an empty file
        raise ParamsError(f"{path}: the file is empty; start from a recipe (peftpipe recipe NAME) or the README's")
    return parse_params(data, str(path))


# Words YAML 1.1 readers (PyYAML, many tools) read as booleans or null: written quoted, so
# every reader reads the string that was meant ("no" is a class name, not false).
_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""}


def yaml_writer():
    """The one YAML writer of params files (write_params, and recipes' params.yaml): ruamel's
    round trip, so comments and key order stay, with values every YAML reader reads the
    same: YAML 1.1's boolean words quoted, null written as null (not left blank), 1.0e-05
    rather than 1e-05 (a string to YAML 1.1), and 5 for 5.0 (as a person writes it; the
    schema reads an integer as a float)."""
    from ruamel.yaml import YAML

    def string(representer, value: str):
        style = '"' if value.lower() in _YAML11_WORDS else None
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    def null(representer, value):
        return representer.represent_scalar("tag:yaml.org,2002:null", "null")

    def number(representer, value: float):
        if value.is_integer() and abs(value) < 1e15:
            return representer.represent_scalar("tag:yaml.org,2002:int", str(int(value)))
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return representer.represent_scalar("tag:yaml.org,2002:float", text)

    yaml = YAML()
    yaml.width = 4096  # a long list stays on its line (a folded one reads as two keys' worth)
    yaml.representer.add_representer(str, string)
    yaml.representer.add_representer(type(None), null)
    yaml.representer.add_representer(float, number)
    return yaml


def _schema_at(path: str) -> type[BaseModel] | None:
    """The schema section at a dotted path (``data.columns``), or None where the value there is
    not a section (a mapping of the user's own, like tune.space or data.files)."""
    field = _field_at(path.split(".")) if path else None
    schema = field.annotation if field is not None else Params if not path else None
    return schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None


def _describes(comment, section: str | None, key: str) -> bool:
    """Whether an end-of-line comment is the schema's description of ``section.key``."""
    schema = _schema_at(section) if section else Params
    field = getattr(schema, "model_fields", {}).get(key)
    text = " ".join(str(getattr(part, "value", part)) for part in (comment or []) if part is not None)
    return bool(field is not None and field.description and field.description in text)


def write_params(path: Path, changes: dict) -> Path | None:
    """Set ``changes`` ({section: {key: value}}, or {key: value} at the top) in a params
    file, keeping its comments and every other key (the schema's defaults where there is no
    file), check the result, and write it atomically. A file that changes is kept first as
    <name>.bak, whose path is returned: a user's edits are never dropped without a copy."""
    import io

    from ruamel.yaml import YAML

    yaml = yaml_writer()
    old = path.read_text() if path.exists() else None
    document = None
    if old is not None:
        read_yaml(path)  # a broken file stops here, with its line and column
        document = yaml.load(old)
    if not isinstance(document, dict):
        document = Params().model_dump()

    def put(mapping, key, value, section: str | None = None) -> None:
        path = f"{section}.{key}" if section else key
        if isinstance(value, dict) and value and isinstance(mapping.get(key), dict) and _schema_at(path) is not None:
            for inner, setting in value.items():  # a section is edited in place: its comments stay
                put(mapping[key], inner, setting, f"{section}.{key}" if section else key)
            return
        mapping[key] = value
        comments = getattr(mapping, "ca", None)  # a comment about the old value would now mislead,
        if comments is not None and key in comments.items and not _describes(comments.items[key], section, key):
            del comments.items[key]  # but the schema's description of the key stays

    for key, value in changes.items():
        put(document, key, value)
    text = io.StringIO()
    yaml.dump(document, text)
    parse_params(YAML(typ="safe", pure=True).load(text.getvalue()), str(path))
    backup = None
    if old is not None and old != text.getvalue():
        backup = path.with_name(path.name + ".bak")
        atomic_copy(path, backup)  # whole or not at all: a failed copy keeps the previous backup
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
    return backup


def leaves(data: dict, section: type[BaseModel] = Params, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a params tree (params.yaml's, a recipe's, a run's in `dvc exp
    show`), descending into the schema's sections only: a mapping-valued param (data.files,
    data.labels) is one value. A key the schema does not know is a leaf as it stands."""
    flat = {}
    for key, value in data.items():
        field = section.model_fields.get(key)
        inner = field.annotation if field is not None else None
        if isinstance(inner, type) and issubclass(inner, BaseModel) and isinstance(value, dict):
            flat.update(leaves(value, inner, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def nest(flat: dict[str, Any]) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        *path, last = key.split(".")
        target = nested
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    return nested
