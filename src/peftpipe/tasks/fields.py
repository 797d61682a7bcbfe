"""A row's fields as the tasks need them, or a DataError naming the row and field.

Data files hold whatever their writer put there: a string where a list of words belongs
(it would be split into characters), a null, a nested list. Each is stopped here, with the
row named, rather than converted into something that trains and scores as nonsense.
"""

from __future__ import annotations

import math

import numpy as np

from peftpipe.errors import DataError


def describe(value) -> str:
    """What a value is, in the words of a JSON file."""
    if is_null(value):
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "a number"
    return f"a {type(value).__name__}"


def is_null(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def is_scalar(value) -> bool:
    return not isinstance(value, (list, tuple, dict, np.ndarray))


def word_list(value, field: str, item: str, expected: str, where: str) -> list:
    """A list field (tokens, tags) as a Python list of scalars."""
    if is_null(value):
        raise DataError(f"{where}: {field} is null")
    if not isinstance(value, (list, tuple, np.ndarray)):
        hint = " (a whitespace split here would hide mistakes: write the list in the file)" if isinstance(
            value, str) else ""
        raise DataError(f"{where}: {field} is {describe(value)}, expected a list{hint}")
    values = list(value)
    for position, element in enumerate(values):
        if is_null(element):
            raise DataError(f"{where}: {item} {position} is null")
        if not is_scalar(element):
            raise DataError(f"{where}: {item} {position} is {describe(element)}, expected {expected}")
        if isinstance(element, str):
            no_nul(element, f"{item} {position}", where)
    return values


def words(value, field: str, where: str) -> list[str]:
    """A list of words: strings only. A number in a JSON or parquet list has lost its text
    (1.50 reads as 1.5, 1e3 as 1000.0): refused, naming it, rather than turned into other text."""
    found = word_list(value, field, "token", "a word", where)
    for position, element in enumerate(found):
        if not isinstance(element, str):
            raise DataError(f"{where}: token {position} is {describe(element)} ({element!r}), expected a word: "
                            f"write it as a string in the file (\"{element}\") so its text is kept as written")
    return found


def text(value, field: str, where: str) -> str:
    """A text field as a string (null is an empty text: the caller drops such rows)."""
    if is_null(value):
        return ""
    if not is_scalar(value):
        raise DataError(f"{where}: {field} is {describe(value)}, expected a string")
    return no_nul(str(value), field, where)


def no_nul(value: str, field: str, where: str) -> str:
    """A NUL byte is no text: a binary file, or one cut or padded by a broken export."""
    if "\x00" in value:
        raise DataError(f"{where}: {field} holds a NUL byte (\\x00) at character {value.index(chr(0))}: is the "
                        f"file binary, or was it cut? Remove the NUL bytes (e.g. tr -d '\\000')")
    return value


def names_from_ids(ids: list[int], labels: dict[int, str], what: str, names: str, where: str) -> list[str]:
    """Integer ids (tner's data, hub ClassLabel columns, a CSV of class numbers) as names,
    through data.labels (a list in id order, or a mapping from id to name)."""
    if not labels:
        raise DataError(f"{where}: {what}s are integer ids; list the {names} in id order in data.labels "
                        f"(or map each id to its name: {{1: World, 2: Sports}})")
    bad = [i for i in ids if int(i) not in labels]
    if bad:
        keys = sorted(labels)
        known = f"{keys[0]}-{keys[-1]}" if keys == list(range(keys[0], keys[-1] + 1)) else ", ".join(map(str, keys))
        raise DataError(f"{where}: {what} id {bad[0]} is outside data.labels (ids {known})")
    return [labels[int(i)] for i in ids]
