"""pydantic's validation errors as our one line: the file, the key, the value and what is
allowed (from the field's declared bounds and rules), with a did-you-mean for a misspelt key."""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from peftpipe.params.schema import Params, _field_at, _section_at
from peftpipe.wording import describe


def _locate(loc: tuple, data: Any) -> tuple[list[str], Any, Any, dict]:
    """Follow an error's location through the schema and the input: (the key's parts, the
    annotation there, the value given, the field's extra schema). The walk stops at a union:
    the whole field is then described, not one of its alternatives."""
    parts, annotation, value, extra = [], Params, data, {}
    for step in loc:
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and step in annotation.model_fields:
            field = annotation.model_fields[step]
            annotation, extra = field.annotation, field.json_schema_extra or {}
        elif origin is dict and isinstance(value, dict) and step in value:
            annotation, extra = typing.get_args(annotation)[1], {}
        elif origin is list and isinstance(step, int):
            annotation = typing.get_args(annotation)[0]
            parts[-1] += f"[{step}]"
            value = value[step] if isinstance(value, list) and step < len(value) else None
            continue
        else:
            break
        parts.append(str(step))
        value = value.get(step) if isinstance(value, dict) else None
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return parts, annotation, value, extra


def _range(annotation: Any, error: dict, extra: dict, metadata: list) -> str:
    """What a bounded field allows, from its declared bounds (``metadata``: the field's)."""
    kind, ctx = error["type"], error.get("ctx", {})
    if "allowed" in extra:
        return extra["allowed"]
    number = "an integer" if annotation is int else "a number"
    if kind in ("greater_than", "greater_than_equal"):
        return extra.get("too_low") or (f"{number} > {ctx['gt']:.15g}" if "gt" in ctx else f"{number} >= {ctx['ge']:.15g}")
    if extra.get("too_high"):
        return extra["too_high"]
    high = f"{ctx['le']:.15g}]" if "le" in ctx else f"{ctx['lt']:.15g})"
    low = next((m for m in metadata if getattr(m, "gt", None) is not None or getattr(m, "ge", None) is not None), None)
    if low is None:
        return f"{number} {'<=' if 'le' in ctx else '<'} {high[:-1]}"
    if getattr(low, "gt", None) is not None:
        return f"{number} in {f'[{low.gt + 1:.15g}' if annotation is int else f'({low.gt:.15g}'}, {high}"
    return f"{number} in [{low.ge:.15g}, {high}"


def explain(err: ValidationError, data: Any, file: str) -> str:
    """The first of pydantic's errors as our one line."""
    error = err.errors(include_url=False)[0]
    loc, kind = tuple(error["loc"]), error["type"]
    parts, annotation, value, extra = _locate(loc, data)
    key = ".".join(parts)
    if kind == "extra_forbidden":  # the walk stopped at the section that lacks the key
        section_key, unknown = key, str(loc[-1])
        section = _section_at(section_key)
        valid = list(section.model_fields)
        close = difflib.get_close_matches(unknown, valid, n=1) or [n for n in valid if unknown.startswith(n)]
        where = f"{section_key}." if section_key else ""
        hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
        return (f"{file}: unknown key '{where}{unknown}'{hint}; valid keys"
                f"{' in ' + section_key if section_key else ''}: {', '.join(valid)}")
    if kind == "allowed":
        ctx = error["ctx"]
        # A field's own rule names the field again (its loc ends there); a section's rule names
        # a key inside the section.
        inside = parts[:-1] if parts and ctx["key"].split(".")[0] == parts[-1] else parts
        full = ".".join([*inside, ctx["key"]])
        return f"{file}: {full}: got {ctx['value']!r}, expected {ctx['allowed']}"
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind == "finite_number":
        return f"{file}: {key}: got {value!r}, expected a finite number"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        field = _field_at(parts)
        metadata = list(field.metadata) if field is not None else []
        return f"{file}: {key}: got {value!r}, expected {_range(annotation, error, extra, metadata)}"
    return f"{file}: {key}: expected {describe(annotation)}, got {value!r} ({type(value).__name__})"
