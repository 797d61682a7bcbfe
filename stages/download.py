"""download: fetch the raw data set named by `data.*` into data/raw.

Writes one parquet file per split the source has (the task's canonical columns) and
meta.json (label names, source, package version or file hashes, row counts).
"""

from peftpipe.io import atomic_path, write_json
from peftpipe.sources import load_raw, look_alike_warning, look_alikes, unwatched_notes
from peftpipe.stage import stage
from peftpipe.tasks import get_task


@stage(writes=("raw",))
def main(params, raw):
    """Load data.source into data/raw."""
    loaded = load_raw(params.data, params.task.kind, params.split.group_by)
    with atomic_path(raw, directory=True) as tmp:
        for split, frame in loaded.splits.items():
            frame.to_parquet(tmp / f"{split}.parquet", index=False)
        write_json(tmp / "meta.json", {**loaded.meta, "labels": loaded.labels})
    print(f"download: {', '.join(f'{s} {n}' for s, n in loaded.meta['rows'].items())} rows, "
          f"{len(loaded.labels)} labels -> {raw}")
    if params.data.source == "local":
        for note in unwatched_notes(params.data.files, "data.files", "download"):
            print(note)
    seen = get_task(params.task.kind).label_values(loaded.splits["train"])
    if len(seen) < 2:
        print(f"download: warning: every train row has the label {next(iter(seen))!r}: there is nothing to learn; "
              f"check the data and data.columns")
    for names in look_alikes(loaded.labels):
        print(f"download: warning: {look_alike_warning(names)}")
    for split, dropped in loaded.meta["dropped_empty_rows"].items():
        if dropped:
            print(f"download: warning: {split}: dropped {dropped} rows with no tokens or text")
    for split, recased in loaded.meta.get("recased_tag_rows", {}).items():
        if recased:
            print(f"download: {split}: tags of {recased} rows written in lower case or with spaces (b-per) were "
                  f"read as B-per: seqeval scores only upper-case prefixes")
    for split, converted in loaded.meta["bio_repaired_rows"].items():
        if converted:
            print(f"download: {split}: tags of {converted} rows converted to IOB2 "
                  f"(data.tag_scheme {params.data.tag_scheme}, data.on_invalid_bio {params.data.on_invalid_bio})")


if __name__ == "__main__":
    main()
