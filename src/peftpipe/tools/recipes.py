"""Recipes: the few keys a reference run changes, composed over the schema's defaults.

recipes/<name>.yaml holds only what differs from the defaults (params.Params), under a
header comment with the exact command, its runtime and its expected result. `peftpipe
recipe NAME` composes defaults + recipe into a complete params.yaml, which is what DVC
reads: dvc.yaml's params need every key in one complete file, so the
composition happens before DVC runs, not inside the stages (and not through DVC's Hydra
support, which rewrites params.yaml on every `dvc exp run` and would drop local edits).

A user's edits are the keys where params.yaml differs from the composition of the recipe
it names (`recipe:`); switching recipes carries them over or drops them only when asked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from peftpipe.errors import ParamsError
from peftpipe.params import Params, leaves, parse_params, read_yaml, yaml_writer

FOLDER = Path("recipes")
DEFAULT = "default"
COMMENT_COLUMN = 25


def known(folder: Path = FOLDER) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


# A recipe is a name in recipes/, never a path: `peftpipe recipe ../elsewhere/x` (or a params
# file's `recipe:`) must not read a file from outside the project's recipes.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")


def recipe_path(name: str, folder: Path = FOLDER) -> Path:
    """recipes/<name>.yaml, after checking that ``name`` is a name."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > 100:
        raise ParamsError(f"recipe {str(name)[:100]!r}: not a recipe name (letters, digits, '-', '_', no path); "
                          f"known: {', '.join(known(folder)) or 'none'}")
    return folder / f"{name}.yaml"


def overlay(name: str, folder: Path = FOLDER) -> dict:
    """recipes/<name>.yaml's keys (the default recipe may have no file: no keys)."""
    path = recipe_path(name, folder)
    if not path.exists():
        if name == DEFAULT:
            return {}
        raise ParamsError(f"no recipe {name!r} in {folder}/; known: {', '.join(known(folder)) or 'none'}")
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return data


def merge(base: dict, changes: dict, section: type[BaseModel] = Params) -> dict:
    """``changes`` over ``base``: sections (and data.columns) merge key by key; any other
    value, a mapping like data.files included, is replaced whole."""
    merged = dict(base)
    for key, value in changes.items():
        field = section.model_fields.get(key)
        inner = field.annotation if field is not None else None
        if isinstance(inner, type) and issubclass(inner, BaseModel) and isinstance(value, dict) \
                and isinstance(base.get(key), dict):
            merged[key] = merge(base[key], value, inner)
        else:
            merged[key] = value
    return merged


def compose(name: str, folder: Path = FOLDER) -> dict:
    """The complete params of recipe ``name``, checked against the schema."""
    data = merge(Params().model_dump(), {"recipe": name, **overlay(name, folder)})
    parse_params(data, str(folder / f"{name}.yaml"))
    return data


def edits(current: dict, folder: Path = FOLDER) -> dict[str, tuple[Any, Any]]:
    """Keys where ``current`` differs from the recipe it names: {key: (current, recipe's)}.
    A name that is no recipe (peftpipe init names the file) is compared with the defaults."""
    name = current.get("recipe", DEFAULT)
    base = compose(name, folder) if name in known(folder) or name == DEFAULT else \
        merge(Params().model_dump(), {"recipe": name})
    ours, theirs = leaves(current), leaves(base)
    return {key: (ours.get(key), theirs.get(key)) for key in sorted(set(ours) | set(theirs))
            if key != "recipe" and ours.get(key) != theirs.get(key)}


# --------------------------------------------------------------------------- writing


def header(name: str, folder: Path = FOLDER) -> list[str]:
    """The recipe file's leading comment lines."""
    path = recipe_path(name, folder)
    lines = path.read_text().splitlines() if path.exists() else []
    end = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return lines[:end]


def own_comments(name: str, folder: Path = FOLDER) -> dict[str, str]:
    """The end-of-line comments recipes/<name>.yaml writes beside its keys ({dotted key: text})."""
    from ruamel.yaml import YAML

    path = recipe_path(name, folder)
    if not path.exists():
        return {}
    found: dict[str, str] = {}

    def walk(mapping, prefix: str) -> None:
        for key, value in mapping.items():
            dotted = f"{prefix}{key}"
            token = (getattr(mapping, "ca", None).items.get(key) or [None] * 3)[2] if hasattr(mapping, "ca") else None
            text = getattr(token, "value", "") or ""
            if text.strip().startswith("#"):
                found[dotted] = text.strip().lstrip("#").strip().splitlines()[0]
            if isinstance(value, dict):
                walk(value, dotted + ".")

    document = YAML().load(path.read_text())
    if isinstance(document, dict):
        walk(document, "")
    return found


def _comment(field, value, default, own: str | None) -> str | None:
    """A key's comment: the recipe's own where it wrote one; else the schema's description,
    unless the description speaks of the default's value and the recipe changed it."""
    if own:
        return own
    if value != default and (field.json_schema_extra or {}).get("describes_default"):
        return None
    return field.description


def _document(data: dict, section: type[BaseModel], defaults: dict, own: dict[str, str], prefix: str = ""):
    """``data`` as ruamel's commented mapping in the schema's key order: sections as blocks
    (a blank line before each at the top), lists and small mappings in flow style, each key
    with the recipe's own comment or the schema's description."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    def flow(value):
        if isinstance(value, list):
            seq = CommentedSeq(flow(v) for v in value)
            seq.fa.set_flow_style()
            return seq
        if isinstance(value, dict):
            mapping = CommentedMap((k, flow(v)) for k, v in value.items())
            if not (value and all(isinstance(v, dict) for v in value.values())):  # tune.space: an entry a line
                mapping.fa.set_flow_style()
            return mapping
        return value

    mapping = CommentedMap()
    for key, field in section.model_fields.items():
        if key not in data:
            continue
        value, inner = data[key], field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel) and isinstance(value, dict):
            mapping[key] = _document(value, inner, defaults.get(key) or {}, own, f"{prefix}{key}.")
            comment = field.description
            if not prefix:
                mapping.yaml_set_comment_before_after_key(key, before="\n")
        else:
            mapping[key] = flow(value)
            comment = _comment(field, value, defaults.get(key), own.get(prefix + key))
        if comment:
            mapping.yaml_add_eol_comment(comment, key, column=COMMENT_COLUMN)
    return mapping


def render(data: dict, comments: list[str], own: dict[str, str] | None = None) -> str:
    """A params file: ``comments`` on top, then every key in the schema's order, each with
    the recipe's own comment or the schema's one-line description (params' one YAML writer)."""
    import io

    text = io.StringIO()
    yaml_writer().dump(_document(data, Params, Params().model_dump(), own or {}), text)
    return "\n".join(comments) + "\n" + text.getvalue()


def params_text(name: str, folder: Path = FOLDER, changes: dict | None = None) -> str:
    """What `peftpipe recipe NAME` writes: the recipe composed over the defaults (plus
    ``changes``, a user's edits to carry over), with the recipe's header."""
    data = compose(name, folder)
    if changes:
        data = merge(data, changes)
        parse_params(data, "params.yaml")
    note = [f"# params.yaml: recipe {name!r} = the schema's defaults (src/peftpipe/params/schema.py) + "
            f"recipes/{name}.yaml" + (", with your edits" if changes else "") + ".",
            "# Edit freely: `peftpipe recipe OTHER` refuses to drop your edits unless told (see --help)."]
    return render(data, [*header(name, folder), *note, ""], own_comments(name, folder))
