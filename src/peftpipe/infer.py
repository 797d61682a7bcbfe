"""`peftpipe init FILE...`: look at a user's data files and say which params read them.

It tells the format, whether a CSV has a header row, whether rows are token lists (NER),
texts or text pairs, which column holds the class and what the classes are; then writes
the data section (and task.kind) of params.yaml. Where the files leave a real choice (two
text columns: a pair, or one text in two parts?) it stops with the question in one line
instead of guessing.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from peftpipe.errors import DataError
from peftpipe.io import unusable
from peftpipe.sources import FORMATS_BY_SUFFIX, read_delimited, read_file, read_text

LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "topic", "sentiment")
PAIR_NAMES = (("sentence1", "sentence2"), ("text_a", "text_b"), ("question", "passage"), ("premise", "hypothesis"),
              ("question1", "question2"), ("text", "text_pair"))
MAX_CLASSES = 200


@dataclass
class Inferred:
    task: str
    data: dict
    said: list[str] = field(default_factory=list)  # what was inferred, one line each
    check: list[str] = field(default_factory=list)  # keys the user should look at


def split_names(files: list[Path]) -> dict[str, Path]:
    """Which file is which split, by name; one file is train (the rest is carved from it)."""
    if len(files) == 1:
        return {"train": files[0]}
    patterns = {"train": r"train", "validation": r"valid|dev|(^|[^a-z])val([^a-z]|$)", "test": r"test|eval"}
    named = {}
    for path in files:
        hits = [split for split, pattern in patterns.items() if re.search(pattern, path.name.lower())]
        if len(hits) != 1 or hits[0] in named:
            raise DataError(f"{path}: cannot tell which split this file is; name the files *train*, *valid* or *dev*, "
                            f"and *test*, or pass one file")
        named[hits[0]] = path
    if "train" not in named:
        raise DataError(f"none of {', '.join(map(str, files))} is named *train*: which one is the train split?")
    return named


def has_header(path: Path, text: str, sep: str) -> bool:
    """csv.Sniffer's answer, checked: a first row whose values all also look like data
    (numbers where the column has numbers) is data, not a header."""
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().has_header(sample)
    except csv.Error:
        first = next(csv.reader(io.StringIO(sample), delimiter=sep), [])
        return not any(cell.strip().lstrip("-").replace(".", "", 1).isdigit() for cell in first)


def read_table(path: Path, fmt: str, encoding: str) -> tuple[pd.DataFrame, bool | None]:
    """The file as a frame, and for csv/tsv whether it had a header row."""
    if fmt not in ("csv", "tsv"):
        return read_file(path, fmt, encoding), None
    text = read_text(path, encoding)
    header = has_header(path, text, "\t" if fmt == "tsv" else ",")
    return read_delimited(path, text, fmt, header), header


def is_list_column(series: pd.Series) -> bool:
    values = series.dropna()
    return len(values) > 0 and all(hasattr(v, "__len__") and not isinstance(v, (str, dict)) for v in values)


def label_column(frame: pd.DataFrame) -> str:
    by_name = [c for c in frame.columns if str(c).lower() in LABEL_NAMES]
    if by_name:
        return by_name[0]
    candidates = [c for c in frame.columns if frame[c].nunique() <= min(MAX_CLASSES, max(2, len(frame) // 5))]
    if not candidates:
        raise DataError(f"no column looks like a class (each has more than {MAX_CLASSES} values, or one per "
                        f"few rows): which column holds the label? set data.columns.label")
    return min(candidates, key=lambda c: frame[c].nunique())


def infer_classification(frame: pd.DataFrame, text_columns: str | None) -> tuple[dict, list[str], list[str]]:
    label = label_column(frame)
    texts = [c for c in frame.columns if c != label and (pd.api.types.is_string_dtype(frame[c]) or frame[c].dtype == object)
             and not is_list_column(frame[c])]
    if not texts:
        raise DataError(f"no text column besides the label column {label!r}; which column holds the text?")
    pairs = [p for p in PAIR_NAMES if all(name in texts for name in p)]
    columns = {"label": label, "text_pair": None}
    said = [f"class column: {label!r}"]
    if len(texts) == 1:
        columns["text"] = texts[0]
    elif pairs and text_columns != "join":
        columns.update(text=pairs[0][0], text_pair=pairs[0][1])
    elif text_columns == "pair" and len(texts) == 2:
        columns.update(text=texts[0], text_pair=texts[1])
    elif text_columns == "join":
        columns["text"] = texts
    else:
        raise DataError(f"{len(texts)} text columns ({', '.join(map(repr, texts))}): are they one text in parts "
                        f"(rerun with --join) or a sentence pair (--pair)?")
    if isinstance(columns["text"], list):
        said.append(f"text: columns {', '.join(map(repr, texts))} joined into one text")
    elif columns.get("text_pair"):
        said.append(f"text pair: {columns['text']!r} and {columns['text_pair']!r}")
    else:
        said.append(f"text column: {columns['text']!r}")
    counts = frame[label].value_counts().sort_index()
    said.append(f"{len(counts)} classes: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    check = []
    data: dict = {"columns": columns, "labels": []}
    if pd.api.types.is_integer_dtype(frame[label]):
        data["labels"] = {int(k): str(k) for k in counts.index}
        check.append("data.labels: the classes are ids; give each its name (e.g. 1: World)")
    return data, said, check


def infer(files: list[Path], text_columns: str | None = None, encoding: str = "utf-8") -> Inferred:
    """What params read these files, or a DataError that asks one question."""
    splits = split_names(files)
    train = splits["train"]
    problem = unusable(train)
    if problem:
        raise DataError(f"{train}: {problem}")
    fmt = FORMATS_BY_SUFFIX.get(train.suffix.lower())
    if fmt is None:
        raise DataError(f"{train}: cannot tell the format from '{train.suffix}'; use a .csv, .tsv, .jsonl, .json, "
                        f".parquet or CoNLL (.conll, .txt) file")
    frame, header = read_table(train, fmt, encoding)
    data = {"source": "local", "name": None, "files": {s: str(p) for s, p in splits.items()}, "format": "auto"}
    said = [f"format: {fmt}" + ("" if header is None else f", {'a header row' if header else 'no header row'}"),
            f"{len(frame)} rows in {train}"]
    data["header"] = header is not False
    list_columns = [c for c in frame.columns if is_list_column(frame[c])]
    if fmt == "conll" or len(list_columns) >= 2:
        tokens, tags = ("tokens", "tags") if fmt == "conll" else _tokens_and_tags(frame, list_columns)
        types = sorted({t[2:] if t[:2] in ("B-", "I-") else t for row in frame[tags] for t in row} - {"O"})
        data["columns"] = {"tokens": tokens, "tags": tags}
        data["labels"] = []
        said += ["rows are token lists: token classification (NER)",
                 f"{len(types)} entity types: {', '.join(map(str, types))}"]
        return Inferred("token_classification", data, said, [])
    more, lines, check = infer_classification(frame, text_columns)
    data.update(more)
    return Inferred("sequence_classification", data, said + ["rows are texts with a class: "
                                                              "sequence classification"] + lines, check)


def _tokens_and_tags(frame: pd.DataFrame, list_columns: list) -> tuple[str, str]:
    """Of the list columns, the tags are the one with the fewest distinct values."""
    distinct = {c: len({str(v) for row in frame[c].dropna() for v in row}) for c in list_columns}
    named = [c for c in list_columns if str(c).lower() in ("tokens", "words")]
    tags = min(list_columns, key=lambda c: distinct[c])
    tokens = named[0] if named and named[0] != tags else max(list_columns, key=lambda c: distinct[c])
    return tokens, tags
