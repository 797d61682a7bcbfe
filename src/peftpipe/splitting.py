"""Make train/validation/test: keep the splits the source has, carve the missing ones from
train, then (split.per_class) sample the same number of rows of every class."""

from __future__ import annotations

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
