"""Make train/validation/test: keep the splits the source has, carve the missing ones from train."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from peftpipe.errors import DataError
from peftpipe.params import SPLITS, SplitParams


def make_splits(raw: dict[str, pd.DataFrame], split: SplitParams) -> dict[str, pd.DataFrame]:
    """Seeded: the same params give the same rows in the same order."""
    rng = np.random.default_rng(split.seed)
    train = raw["train"]
    missing = [name for name in ("validation", "test") if name not in raw]
    order = rng.permutation(len(train))
    result = {name: raw[name].reset_index(drop=True) for name in raw if name in SPLITS}
    start = 0
    for name in missing:
        size = max(1, round(getattr(split, name) * len(train)))
        result[name] = train.iloc[order[start : start + size]].reset_index(drop=True)
        start += size
    result["train"] = train.iloc[np.sort(order[start:])].reset_index(drop=True)
    for name in SPLITS:
        if result[name].empty:
            raise DataError(f"split '{name}' is empty ({len(train)} train rows to carve from)")
    return result


def entity_counts(tags: pd.Series) -> dict[str, int]:
    """How many entities of each type (B- tags) a split holds."""
    counts = Counter(tag[2:] for row in tags for tag in row if tag.startswith("B-"))
    return dict(sorted(counts.items()))


def data_report(splits: dict[str, pd.DataFrame]) -> dict:
    """Per split: rows, tokens, entities per type; for validation/test also how many rows
    repeat a train sentence (leakage) and which entity types train never shows."""
    train_sentences = {tuple(t) for t in splits["train"]["tokens"]} if "train" in splits else set()
    train_types = set(entity_counts(splits["train"]["tags"])) if "train" in splits else set()
    report = {}
    for name, frame in splits.items():
        entities = entity_counts(frame["tags"])
        report[name] = {
            "rows": len(frame),
            "tokens": int(sum(len(t) for t in frame["tokens"])),
            "entities": entities,
        }
        if name != "train":
            report[name]["rows_also_in_train"] = sum(tuple(t) in train_sentences for t in frame["tokens"])
            report[name]["types_missing_from_train"] = sorted(set(entities) - train_types)
    return report
