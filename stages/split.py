"""split: make train/validation/test from data/raw (seeded), balance classes when
split.per_class asks, and count what each split holds."""


import pandas as pd

from peftpipe.io import atomic_path, read_json, write_json
from peftpipe.provenance import write_metrics
from peftpipe.splitting import balance_per_class, handle_leakage, make_splits, repeated_rows
from peftpipe.stage import stage
from peftpipe.tasks import get_task


@stage(reads=("raw",), writes=("split", "report"))
def main(params, raw, split, report):
    """Carve the splits the source lacks out of its train split; sample per class."""
    task = get_task(params.task.kind)
    sources = {path.stem: pd.read_parquet(path) for path in sorted(raw.glob("*.parquet"))}
    splits = make_splits(sources, params.split)
    short = {}
    if params.split.per_class:
        splits, short = balance_per_class(splits, params.split)
        for name, classes in short.items():
            print(f"split: {name}: fewer rows than split.per_class.{name} ({params.split.per_class[name]}) "
                  f"for {', '.join(f'{c} ({n})' for c, n in classes.items())}; took them all")
    repeated = repeated_rows(splits, task.row_keys)
    splits = handle_leakage(splits, repeated, params.split.on_leakage)
    with atomic_path(split, directory=True) as tmp:
        for name, frame in splits.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(tmp / "labels.json", read_json(raw / "meta.json")["labels"])
    facts = task.data_report(splits)
    if params.split.per_class:
        facts["balance"] = {"per_class": params.split.per_class, "short_classes": short}
    if params.split.group_by:
        for name, frame in splits.items():
            facts[name]["groups"] = int(frame["group"].nunique())
    if params.split.on_leakage == "drop":
        facts["dropped_as_repeats"] = {name: len(rows) for name, rows in repeated.items()}
    write_metrics(report, facts, params.split.seed)
    warn_about(facts, params.split.on_leakage)
    print("split: " + ", ".join(f"{name} {splits[name].shape[0]}" for name in splits) + f" rows -> {split}")


def warn_about(report: dict, on_leakage: str) -> None:
    """What metrics/data.json records that makes scores optimistic or meaningless, said on
    the console too."""
    for name in ("validation", "test"):
        repeats, rows = report[name].get("rows_also_in_train", 0), report[name]["rows"]
        if repeats and on_leakage == "warn":
            print(f"split: warning: {repeats} of {rows} {name} rows repeat a train row (scores will be optimistic); "
                  f"split.on_leakage: drop removes them, fail stops")
        missing = report[name].get("types_missing_from_train") or report[name].get("classes_missing_from_train")
        if missing:
            print(f"split: warning: {name} has {', '.join(missing)}, which train never shows")


if __name__ == "__main__":
    main()
