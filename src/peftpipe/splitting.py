"""Make train/validation/test: keep the splits the source has, carve the missing ones from
train, then (split.per_class) sample the same number of rows of every class."""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftpipe.errors import DataError
from peftpipe.params import SPLITS, SplitParams


def make_splits(raw: dict[str, pd.DataFrame], split: SplitParams) -> dict[str, pd.DataFrame]:
    """Seeded: the same params give the same rows in the same order. With a `group` column
    (split.group_by) whole groups are carved, so no group is on two sides."""
    rng = np.random.default_rng(split.seed)
    train = raw["train"]
    missing = [name for name in ("validation", "test") if name not in raw]
    if "group" in train:
        order = _group_order(train, rng)
    elif split.stratify and "label" in train:
        order = _stratified_order(train["label"].to_numpy(), rng)
    else:
        order = rng.permutation(len(train))
    result = {name: raw[name].reset_index(drop=True) for name in raw if name in SPLITS}
    start = 0
    for name in missing:
        size = max(1, round(getattr(split, name) * len(train)))
        if "group" in train and start + size < len(order):  # end on a group boundary
            groups = train["group"].to_numpy()[order]
            while start + size < len(order) and groups[start + size] == groups[start + size - 1]:
                size += 1
        result[name] = train.iloc[order[start : start + size]].reset_index(drop=True)
        start += size
    result["train"] = train.iloc[np.sort(order[start:])].reset_index(drop=True)
    for name in SPLITS:
        if result[name].empty:
            raise DataError(f"split '{name}' is empty ({len(train)} train rows to carve from)")
    return result


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded order in which every stretch holds each class in its share of the whole: each
    class's rows, shuffled, are spread evenly over [0, 1) (row j of n at (j + u) / n, u a
    random offset per class) and the order sorts by that position. Carving the first 10%
    then takes 10% of every class (rounded), as scikit-learn's stratified split does."""
    position = np.empty(len(labels))
    for name in sorted(set(labels.tolist()), key=str):
        rows = np.flatnonzero(labels == name)
        rows = rows[rng.permutation(len(rows))]
        position[rows] = (np.arange(len(rows)) + rng.random()) / len(rows)
    return np.lexsort((rng.random(len(labels)), position))


def balance_per_class(splits: dict[str, pd.DataFrame], split: SplitParams) -> tuple[dict[str, pd.DataFrame], dict]:
    """Sample ``split.per_class[name]`` rows of each class from each named split (seeded).

    A class with fewer rows gives all it has (``on_short_class: take``, reported in the
    returned {split: {class: rows there}}) or stops the stage (``fail``). The sampled rows
    keep the source order, so the result does not depend on the class order.
    """
    balanced, short = dict(splits), {}
    for offset, name in enumerate(SPLITS):
        if name not in split.per_class:
            continue
        wanted, frame = split.per_class[name], splits[name]
        rng = np.random.default_rng([split.seed, offset])
        keep = []
        for label, rows in sorted(frame.groupby("label").indices.items()):
            if len(rows) < wanted:
                if split.on_short_class == "fail":
                    raise DataError(
                        f"split '{name}': class {label!r} has {len(rows)} rows, split.per_class.{name} "
                        f"asks for {wanted}; lower it or set split.on_short_class: take"
                    )
                short.setdefault(name, {})[label] = len(rows)
            keep.extend(rng.choice(rows, size=min(wanted, len(rows)), replace=False))
        balanced[name] = frame.iloc[np.sort(keep)].reset_index(drop=True)
    return balanced, short


def _group_order(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Row positions with the groups in a seeded random order, each group's rows together."""
    names = np.array(sorted(frame["group"].unique()))
    rank = {name: i for i, name in enumerate(names[rng.permutation(len(names))])}
    return np.array(sorted(range(len(frame)), key=lambda i: (rank[frame["group"].iat[i]], i)))


def repeated_rows(splits: dict[str, pd.DataFrame], row_keys) -> dict[str, list[int]]:
    """Per validation/test split, the rows that repeat a train row (``row_keys`` is the
    task's: the words of a sentence, the text or pair)."""
    seen = set(row_keys(splits["train"]))
    return {name: [i for i, key in enumerate(row_keys(frame)) if key in seen]
            for name, frame in splits.items() if name != "train"}


def handle_leakage(splits: dict[str, pd.DataFrame], repeated: dict[str, list[int]], policy: str):
    """split.on_leakage: warn keeps the rows (metrics/data.json counts them), drop removes
    them from validation/test, fail stops."""
    found = {name: rows for name, rows in repeated.items() if rows}
    if not found or policy == "warn":
        return splits
    if policy == "fail":
        name, rows = next(iter(found.items()))
        raise DataError(f"split '{name}': {len(rows)} of {len(splits[name])} rows repeat a train row (first: row "
                        f"{rows[0]}); remove them, or set split.on_leakage: drop (or warn)")
    kept = {name: frame.drop(index=found.get(name, [])).reset_index(drop=True) for name, frame in splits.items()}
    for name, frame in kept.items():
        if frame.empty:
            raise DataError(f"split '{name}': every row repeats a train row, so split.on_leakage: drop leaves it "
                            f"empty; the data holds duplicates: deduplicate it, or set split.on_leakage: warn")
    return kept
