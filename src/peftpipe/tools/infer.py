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

import numpy as np
import pandas as pd

from peftpipe import limits
from peftpipe.errors import DataError
from peftpipe.io import unusable
from peftpipe.sources import (
    data_suffix,
    format_of,
    look_alike_warning,
    look_alikes,
    own_separator,
    read_conll,
    read_delimited,
    read_file,
    read_text,
    separator_of,
)
from peftpipe.tasks.token_classification import SCHEME_PREFIXES, is_tag_id, normal_tag

LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "topic", "sentiment")
PAIR_NAMES = (("sentence1", "sentence2"), ("text_a", "text_b"), ("question", "passage"), ("premise", "hypothesis"),
              ("question1", "question2"), ("text", "text_pair"))
MAX_CLASSES = 200
# Column names that mark a first row as a header. Not one- or two-letter names: "y" is as
# likely a headerless file's first label (y/n) as a column name.
HEADER_NAMES = {name for name in (*LABEL_NAMES, *(n for pair in PAIR_NAMES for n in pair), "sentence", "tokens",
                                  "tags", "words", "ner_tags", "review", "content", "description",
                                  "word", "token", "tag", "sentence #", "sentence_id") if len(name) > 2}


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
    first = next(csv.reader(io.StringIO(sample), delimiter=sep), [])
    if any(cell.strip().lower() in HEADER_NAMES for cell in first):
        return True  # "label", "text", "sentence1": csv.Sniffer guesses from lengths and types, and misses these
    try:
        return csv.Sniffer().has_header(sample)
    except csv.Error:
        first = next(csv.reader(io.StringIO(sample), delimiter=sep), [])
        return not any(cell.strip().lstrip("-").replace(".", "", 1).isdigit() for cell in first)


def looks_like_conll(text: str, separator: str) -> bool:
    """A csv/tsv file laid out as CoNLL: one token and its tag a line, blank lines between
    sentences. Read as a table, each word would become a row (a text whose class is its tag)."""
    lines = text.splitlines()
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if len(filled) < 2:
        return False
    gaps = sum(1 for i in range(filled[0], filled[-1]) if not lines[i].strip() and lines[i - 1].strip())
    single_words = sum(1 for i in filled if len(lines[i].split(separator)) >= 2
                       and not lines[i].split(separator)[0].strip().count(" "))
    return gaps >= 2 and single_words >= 0.9 * len(filled)


def read_table(path: Path, fmt: str, encoding: str) -> tuple[pd.DataFrame, str, bool | None, str | None]:
    """The file as a frame, its format (a csv/tsv laid out as CoNLL is read as CoNLL), and for
    csv/tsv whether it had a header row and its separator when not the format's own."""
    if fmt not in ("csv", "tsv"):
        return read_file(path, fmt, encoding), fmt, None, None
    text = read_text(path, encoding)
    separator = separator_of(text, fmt)
    if looks_like_conll(text, separator or own_separator(fmt)):
        return read_conll(path, encoding, text), "conll", None, None
    header = has_header(path, text, separator or own_separator(fmt))
    frame = read_delimited(path, text, fmt, header, separator)
    if frame.empty:
        raise DataError(f"{path}: no rows" + (" (only a header row)" if header else ""))
    return frame, fmt, header, separator


def holds_objects(series: pd.Series) -> bool:
    """Whether any value is a list, array or object: never a class."""
    return bool(series.map(lambda v: isinstance(v, (dict, list, np.ndarray))).any())


def is_list_column(series: pd.Series) -> bool:
    values = series.dropna()
    return len(values) > 0 and all(hasattr(v, "__len__") and not isinstance(v, (str, dict)) for v in values)


def label_column(frame: pd.DataFrame) -> str:
    by_name = [c for c in frame.columns if str(c).lower() in LABEL_NAMES]
    if by_name:
        return by_name[0]
    scalar = [c for c in frame.columns if not holds_objects(frame[c])]
    candidates = [c for c in scalar if frame[c].nunique() <= min(MAX_CLASSES, max(2, len(frame) // 5))]
    if not candidates:
        raise DataError(f"no column looks like a class (each has more than {MAX_CLASSES} values, or one per "
                        f"few rows): which column holds the label? set data.columns.label")
    # Fewest distinct values; between equals, the shorter values (classes are words, texts are sentences).
    return min(candidates, key=lambda c: (frame[c].nunique(), frame[c].astype(str).str.len().mean()))


def class_names(series: pd.Series, label: str) -> pd.Series:
    """The class column as the download stage will read it: names stripped of spaces, ids as
    ints; a column that mixes ids and names, or has rows without a class, stops here, with
    the question the download stage would ask."""
    missing = np.flatnonzero(series.isna().to_numpy())
    if len(missing):
        raise DataError(f"the class column {label!r} is empty in {len(missing)} of {len(series)} rows (first: row "
                        f"{missing[0]}); give those rows a class or remove them")

    def as_written(value):
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        return value

    names = series.map(as_written)
    is_id = names.map(lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)))
    if is_id.any() and not is_id.all():
        first_id, first_name = int(np.argmax(is_id.to_numpy())), int(np.argmin(is_id.to_numpy()))
        raise DataError(f"the class column {label!r} mixes ids and names (row {first_id}: {names.iloc[first_id]!r}, "
                        f"row {first_name}: {names.iloc[first_name]!r}); use class names, or ids into data.labels, "
                        f"throughout")
    return names


def _given_column(frame: pd.DataFrame, column: str, option: str) -> str:
    """A column the user named (--text, --label), as the frame spells it."""
    found = {str(c): c for c in frame.columns}
    if column not in found:
        raise DataError(f"{option} {column!r}: no such column; the file has {limits.listed(map(repr, found))}")
    return found[column]


def infer_classification(frame: pd.DataFrame, text_columns: str | None, text: tuple[str, ...] = (),
                         label: str | None = None) -> tuple[dict, list[str], list[str]]:
    """The classification params; ``text`` (--text, one column or several to join) and
    ``label`` (--label) decide where inference cannot (a text column of numbers)."""
    label = _given_column(frame, label, "--label") if label else label_column(frame)
    # Not text: lists (tokens), objects (a nested `meta` field), and beside real texts a column
    # with one value in every row (a constant carries nothing to learn from).
    texts = [c for c in frame.columns if c != label and (pd.api.types.is_string_dtype(frame[c]) or frame[c].dtype == object)
             and not is_list_column(frame[c]) and not holds_objects(frame[c])]
    texts = [c for c in texts if frame[c].nunique() > 1] or texts
    if text:
        texts = [_given_column(frame, column, "--text") for column in text]
        if label in texts:
            raise DataError(f"--text {label!r} is also the class column; name the class with --label")
        if len(texts) > 1 and text_columns is None:
            text_columns = "join"
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
    if holds_objects(frame[label]):
        example = next(v for v in frame[label] if isinstance(v, (dict, list, np.ndarray)))
        raise DataError(f"the class column {label!r} holds lists or objects (row values like {example!r}): one class "
                        f"per row is what peftpipe trains (multi-label classification is not supported)")
    counts = class_names(frame[label], label).value_counts().sort_index(key=lambda names: names.map(str))
    if len(counts) < 2:
        raise DataError(f"the class column {label!r} holds " + (f"one class only ({counts.index[0]!r}, every row)"
                        if len(counts) else "no values") + ": a classifier needs two or more; is it the right column "
                        "(data.columns.label) and the whole data set?")
    if len(counts) > len(frame) / 2 and len(frame) >= 10:
        raise DataError(f"the class column {label!r} has {len(counts)} different values in {len(frame)} rows: about one "
                        f"row per value is an id or a text, not a class; which column holds the class? set "
                        f"data.columns.label")
    said.append(f"{len(counts)} classes: " + limits.listed([f"{k} ({v})" for k, v in counts.items()]))
    check = [look_alike_warning(names) for names in look_alikes([str(k) for k in counts.index])]
    data: dict = {"columns": columns, "labels": []}
    if pd.api.types.is_integer_dtype(frame[label]):
        data["labels"] = {int(k): str(k) for k in counts.index}
        check.append("data.labels: the classes are ids; give each its name (e.g. 1: World)")
    return data, said, check


def infer(files: list[Path], text_columns: str | None = None, encoding: str = "utf-8", text: tuple[str, ...] = (),
          label: str | None = None) -> Inferred:
    """What params read these files, or a DataError that asks one question."""
    splits = split_names(files)
    train = splits["train"]
    problem = unusable(train)
    if problem:
        raise DataError(f"{train}: {problem}")
    fmt = format_of(train)
    if fmt is None:
        raise DataError(f"{train}: cannot tell the format from '{data_suffix(train)}'; use a .csv, .tsv, .jsonl, "
                        f".json, .parquet or CoNLL (.conll, .txt) file (or one of them compressed: .gz, .bz2, .xz)")
    frame, read_as, header, separator = read_table(train, fmt, encoding)
    data = {"source": "local", "name": None, "files": {s: str(p) for s, p in splits.items()},
            "format": "auto" if read_as == fmt else read_as}
    said = [f"format: {fmt}" + ("" if header is None else f", {'a header row' if header else 'no header row'}")
            + (f", fields separated by {separator!r}" if separator else "")
            + ("" if read_as == fmt else f" laid out as CoNLL (a token and its tag a line, blank lines between "
                                         f"sentences): read as {read_as}"),
            f"{len(frame)} rows in {train}"]
    data["header"] = header is not False
    if separator:
        data["separator"] = separator
    list_columns = [c for c in frame.columns if is_list_column(frame[c])]
    if read_as == "conll" or len(list_columns) >= 2:
        tokens, tags = ("tokens", "tags") if read_as == "conll" else _tokens_and_tags(frame, list_columns)
        data["columns"] = {"tokens": tokens, "tags": tags}
        said.append("rows are token lists: token classification (NER)"
                    + ("" if read_as == "conll" else f": words in {tokens!r}, tags in {tags!r}"))
        return _token_classification(train, data, said, [t for row in frame[tokens] for t in row],
                                     [t for row in frame[tags] for t in row], read_as == "conll", tags)
    word_rows = _word_rows(frame)
    if word_rows:
        tokens, tags, sentence = word_rows
        data["columns"] = {"tokens": tokens, "tags": tags, "sentence": sentence}
        said.append(f"rows are words, their sentences named by {sentence!r}: token classification (NER): words in "
                    f"{tokens!r}, tags in {tags!r}")
        return _token_classification(train, data, said, list(frame[tokens].dropna()), list(frame[tags].dropna()),
                                     False, tags)
    spelled = _token_lists_as_strings(frame)
    if spelled:
        raise DataError(f"{train}: columns {spelled[0]!r} and {spelled[1]!r} look like NER data written as strings "
                        f"(a word and its tag per space, as many tags as words in every row); peftpipe reads token "
                        f"lists (JSON arrays) or CoNLL columns, since a whitespace split would hide mistakes: "
                        f"write them as lists")
    more, lines, check = infer_classification(frame, text_columns, text, label)
    data.update(more)
    return Inferred("sequence_classification", data, said + ["rows are texts with a class: "
                                                              "sequence classification"] + lines, check)


def _token_classification(path: Path, data: dict, said: list[str], words: list, tags: list, conll: bool,
                          column: str) -> Inferred:
    """The NER params once the words and tags are found: the tags checked, their scheme."""
    data["labels"] = []
    _check_reads_as_tags(path, tags, words, conll, column)
    scheme, types, check = tag_scheme(tags)
    if scheme != "iob2":
        data["tag_scheme"] = scheme
        said.append(f"tag scheme: {scheme} ({'bare entity types' if scheme == 'io' else 'S-/E- or U-/L- tags'}; "
                    f"converted to IOB2 when read)")
    if types is not None:
        said.append(f"{len(types)} entity types: {limits.listed(types)}")
    return Inferred("token_classification", data, said, check)


# "Sentence #" (Kaggle's ner_dataset.csv), sentence_id, sentence_idx, sent_id, sentence
SENTENCE_NAME = re.compile(r"^sent(ence)?[ _#-]*(id|idx|no|nr|num|number)?[ _#]*$", re.IGNORECASE)


def _word_rows(frame: pd.DataFrame) -> tuple[str, str, str] | None:
    """(words, tags, sentence) columns when each row is one word of a sentence: a column
    named like a sentence id whose values run over several rows (or are blank below a
    sentence's first word), a column of O/B-X/I-X tags, and one of single words. GLUE's
    `sentence,label` (a text and a class) is none of that: its sentences do not repeat."""
    named = [c for c in frame.columns if SENTENCE_NAME.match(str(c).strip()) and not holds_objects(frame[c])]
    if not named or len(frame) < 2:
        return None
    sentence = named[0]
    ids = frame[sentence].map(lambda v: None if pd.isna(v) or (isinstance(v, str) and not v.strip()) else v).ffill()
    if (ids != ids.shift()).sum() > 0.9 * len(frame):  # about one row per sentence: texts, not words
        return None

    def named_tag_share(column) -> float:
        values = [v for v in frame[column].dropna() if isinstance(v, str)]
        return sum(normal_tag(v) == "O" or normal_tag(v)[:2] in SCHEME_PREFIXES for v in values) / max(1, len(frame))

    scalar = [c for c in frame.columns if c != sentence and not holds_objects(frame[c])]
    tags = max(scalar, key=named_tag_share, default=None)
    if tags is None or named_tag_share(tags) < 0.5:
        return None
    words = [c for c in scalar if c != tags and frame[c].map(lambda v: isinstance(v, str)).all()
             and frame[c].str.split().map(len).mean() <= 1.2]
    if not words:
        return None
    named_words = [c for c in words if str(c).lower() in TOKEN_NAMES]
    return (named_words[0] if named_words else max(words, key=lambda c: frame[c].nunique())), tags, sentence


TOKEN_NAMES = ("tokens", "words", "token", "word", "text")
TAG_NAMES = ("tags", "ner_tags", "ner", "tag", "labels", "label", "entities", "bio")
def _tag_likeness(values: list) -> float:
    """The share of values that read as NER tags: O, a prefixed type, or an integer id."""
    def tag_like(v) -> bool:
        tag = normal_tag(str(v))
        return is_tag_id(v) or tag == "O" or tag[:2] in SCHEME_PREFIXES
    return sum(map(tag_like, values)) / max(1, len(values))


MIN_TAG_SHARE = 0.2  # NER data is mostly O: a tag column below this share of O/B-X/I-X is not one


def _check_reads_as_tags(path: Path, tags: list, words: list, conll: bool, column: str) -> None:
    """Stop when the tag column holds words (a CoNLL file written tag first, or the wrong
    column): read as the io scheme, every word would become an entity type."""
    bare = next((tag for tag in map(str, tags) if normal_tag(tag) in SCHEME_PREFIXES), None)
    if bare is not None:  # "B-" would train and score an entity type named ""
        raise DataError(f"{path}: tag {bare!r} has no entity type after its prefix; write it as e.g. "
                        f"{normal_tag(bare)}PER")
    share = _tag_likeness(tags)
    if share >= MIN_TAG_SHARE:
        return
    where = "the last column" if conll else f"column {column!r}"
    first = ", ".join(map(repr, list(dict.fromkeys(map(str, tags)))[:4]))
    swapped = _tag_likeness(words) >= MIN_TAG_SHARE
    raise DataError(f"{path}: {where} should hold the NER tags, but only {share:.0%} of its values read as tags (O, "
                    f"B-X, I-X; it holds {first}, ...)" + (
                        "; the first column reads as tags: CoNLL puts the word first and its tag last" if conll and
                        swapped else "; set data.columns.tokens and data.columns.tags" if not conll else ""))


def _token_lists_as_strings(frame: pd.DataFrame) -> tuple[str, str] | None:
    """(words column, tags column) when two string columns hold sentences and their tags
    written out with spaces: every row as many tags as words, tags reading as O/B-X/I-X."""
    strings = [c for c in frame.columns if len(frame) and frame[c].map(lambda v: isinstance(v, str)).all()]
    split = {c: frame[c].str.split() for c in strings}
    for tags in strings:
        lengths = split[tags].map(len)
        if lengths.mean() <= 1 or _tag_likeness([t for row in split[tags] for t in row]) < 0.9:
            continue
        for words in strings:
            if words != tags and (split[words].map(len) == lengths).all():
                return words, tags
    return None


def _tokens_and_tags(frame: pd.DataFrame, list_columns: list) -> tuple[str, str]:
    """Which list column holds the words and which the tags: by name first (tokens/words,
    tags/ner_tags/...), then by content (tags read as O, B-X, I-X or ids; words have more
    distinct values). Two columns that cannot be told apart stop with the question."""
    values = {c: [v for row in frame[c].dropna() for v in row] for c in list_columns}
    named_tags = [c for c in list_columns if str(c).lower() in TAG_NAMES]
    tags = named_tags[0] if named_tags else max(list_columns, key=lambda c: (_tag_likeness(values[c]),
                                                                              -len(set(map(str, values[c])))))
    others = [c for c in list_columns if c != tags]
    named_tokens = [c for c in others if str(c).lower() in TOKEN_NAMES]
    tokens = named_tokens[0] if named_tokens else max(others, key=lambda c: len(set(map(str, values[c]))))
    if not named_tags and _tag_likeness(values[tags]) <= _tag_likeness(values[tokens]):
        raise DataError(f"list columns {tokens!r} and {tags!r}: cannot tell which holds the words and which the "
                        f"tags; set data.columns.tokens and data.columns.tags")
    return tokens, tags


def tag_scheme(tags: list) -> tuple[str, list[str] | None, list[str]]:
    """The NER tag scheme the tags are written in (iob2, io or bioes), the entity types (None
    for integer ids) and what the user should check."""
    if any(map(is_tag_id, tags)):
        return "iob2", None, ["data.labels: the tags are ids; list the tag names in id order (O, B-X, I-X, ...)"]
    named = {normal_tag(str(t)) for t in tags} - {"O"}
    prefixes = {t[:2] for t in named if t[:2] in SCHEME_PREFIXES}
    scheme = "bioes" if prefixes & {"E-", "S-", "L-", "U-"} else "io" if named and not prefixes else "iob2"
    types = sorted({t[2:] if t[:2] in SCHEME_PREFIXES else t for t in named})
    return scheme, types, []
