"""Does length-grouped batching cost F1? The default recipe at its 5 epochs, grouped
(train.group_by_length: true) vs random batches, over several seeds, with the paired test.

Each arm and seed is an ordinary DVC experiment (train, evaluate and export rerun; the data
stages come from the cache), so the runs stay inspectable with `dvc exp show`. Then:
the paired test per seed (`peftpipe compare` on the same 239 test tweets), the mean +- sd
of test F1 per arm, and a pooled paired test over every seed's predictions (the rows of all
seeds side by side: each arm's seed-s run is paired with the other arm's seed-s run).

    python bench/length_grouping.py                       # 6 runs, about 25 minutes on 2 cores
    python bench/length_grouping.py --seeds 42 1 2 3 4    # more seeds
    python bench/length_grouping.py --reuse               # analyse experiments already run

Throughput is measured by bench/run.py (alternating runs on an otherwise idle machine):
these runs share the machine with whatever else runs, so their train seconds are printed
but are not the speed claim.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from peftpipe.tools.compare import Predictions, compare, load_predictions, table

ARMS = {"grouped": "true", "random": "false"}


def name(arm: str, seed: int) -> str:
    return f"lengthgroup-{arm}-s{seed}"


def existing() -> set[str]:
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True,
                                      check=True).stdout)
    return {rev.get("name") for commit in shown for exp in (commit.get("experiments") or []) for rev in exp["revs"]}


def run(arm: str, seed: int) -> None:
    # Both keys set on every run: `dvc exp run` leaves its -S changes in params.yaml.
    subprocess.run(["dvc", "exp", "run", "-q", "-n", name(arm, seed), "-S", f"seed={seed}",
                    "-S", f"train.group_by_length={ARMS[arm]}"], check=True)


def train_seconds(experiment: str) -> float:
    import dvc.api

    from peftpipe.experiments import commit_of

    return json.loads(dvc.api.read("metrics/train.json", rev=commit_of(experiment)))["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--reuse", action="store_true", help="Analyse experiments that already exist.")
    args = parser.parse_args()
    have = existing() if args.reuse else set()
    for seed in args.seeds:
        for arm in ARMS:
            if name(arm, seed) not in have:
                print(f"running {name(arm, seed)}", flush=True)
                run(arm, seed)
    pooled: dict[str, Predictions] = {}
    report = {"seeds": args.seeds, "per_seed": [], "f1": {}, "train_seconds": {}}
    for seed in args.seeds:
        rows = {arm: load_predictions(name(arm, seed)) for arm in ARMS}
        for arm in ARMS:
            pooled.setdefault(arm, Predictions([], rows[arm].meaning)).rows.extend(rows[arm].rows)
        differences = compare(rows["grouped"], rows["random"])
        print(table(name("grouped", seed), name("random", seed), differences, len(rows["grouped"].rows)), "\n")
        report["per_seed"].append({"seed": seed, "metrics": [d.__dict__ | {"verdict": d.verdict()} for d in differences]})
        for arm in ARMS:
            f1 = next(d for d in differences if d.metric == "f1")
            report["f1"].setdefault(arm, []).append(f1.a if arm == "grouped" else f1.b)
            report["train_seconds"].setdefault(arm, []).append(train_seconds(name(arm, seed)))
    differences = compare(pooled["grouped"], pooled["random"])
    print(table("grouped (all seeds)", "random (all seeds)", differences, len(pooled["grouped"].rows)), "\n")
    report["pooled"] = [d.__dict__ | {"verdict": d.verdict()} for d in differences]
    for arm in ARMS:
        f1 = report["f1"][arm]
        print(f"{arm:8} test F1 {statistics.mean(f1):.4f} +- {statistics.stdev(f1):.4f} over seeds {args.seeds}; "
              f"train seconds {report['train_seconds'][arm]} (shared machine: see bench/run.py for speed)")
    out = Path("bench/results") / f"length-grouping-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"-> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
