"""How a type reads in a message: the schema's field types and a PEFT config's options
are said the same way ('an integer', "one of 'a', 'b'", 'a list of strings')."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel


def describe(annotation: Any) -> str:
    """A type as a user reads it: 'an integer', "one of 'a', 'b'", 'a list of strings'."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return describe(typing.get_args(annotation)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = type(None) in typing.get_args(annotation)
        return " or ".join(describe(a) for a in inner) + (" or null" if nullable else "")
    if origin is list:
        item = typing.get_args(annotation)[0]
        items = typing.get_args(item) if typing.get_origin(item) in (Union, types.UnionType) else (item,)
        plural = {str: "strings", int: "integers", float: "numbers"}
        return "a list of " + " or ".join(plural.get(i, describe(i)) for i in items)
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"a mapping of {describe(key).split(' ', 1)[1]}s to {describe(value).split(' ', 1)[1]}s"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of its keys (or nothing: its defaults)"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))
