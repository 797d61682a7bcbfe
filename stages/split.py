"""split: make train/validation/test from data/raw (seeded), and count what each holds."""

from pathlib import Path

import pandas as pd

from peftpipe.io import atomic_path, read_json, write_json
from peftpipe.provenance import write_metrics
from peftpipe.splitting import data_report, make_splits
from peftpipe.stage import stage

RAW, OUT, REPORT = Path("data/raw"), "data/split", "metrics/data.json"


@stage
def main(params):
    """Carve the splits the source lacks out of its train split."""
    raw = {path.stem: pd.read_parquet(path) for path in sorted(RAW.glob("*.parquet"))}
    splits = make_splits(raw, params.split)
    with atomic_path(OUT, directory=True) as tmp:
        for name, frame in splits.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(tmp / "labels.json", read_json(RAW / "meta.json")["labels"])
    report = data_report(splits)
    write_metrics(REPORT, report, params.split.seed)
    print("split: " + ", ".join(f"{name} {r['rows']}" for name, r in report.items()) + f" rows -> {OUT}")


if __name__ == "__main__":
    main()
