"""split: make train/validation/test from data/raw (seeded), balance classes when
split.per_class asks, and count what each split holds."""

from pathlib import Path

import pandas as pd

from peftpipe.io import atomic_path, read_json, write_json
from peftpipe.provenance import write_metrics
from peftpipe.splitting import balance_per_class, make_splits
from peftpipe.stage import stage
from peftpipe.tasks import get_task

RAW, OUT, REPORT = Path("data/raw"), "data/split", "metrics/data.json"


@stage
def main(params):
    """Carve the splits the source lacks out of its train split; sample per class."""
    task = get_task(params.task.kind)
    raw = {path.stem: pd.read_parquet(path) for path in sorted(RAW.glob("*.parquet"))}
    splits = make_splits(raw, params.split)
    short = {}
    if params.split.per_class:
        splits, short = balance_per_class(splits, params.split)
        for name, classes in short.items():
            print(f"split: {name}: fewer rows than split.per_class.{name} ({params.split.per_class[name]}) "
                  f"for {', '.join(f'{c} ({n})' for c, n in classes.items())}; took them all")
    with atomic_path(OUT, directory=True) as tmp:
        for name, frame in splits.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(tmp / "labels.json", read_json(RAW / "meta.json")["labels"])
    report = task.data_report(splits)
    if params.split.per_class:
        report["balance"] = {"per_class": params.split.per_class, "short_classes": short}
    write_metrics(REPORT, report, params.split.seed)
    print("split: " + ", ".join(f"{name} {splits[name].shape[0]}" for name in splits) + f" rows -> {OUT}")


if __name__ == "__main__":
    main()
