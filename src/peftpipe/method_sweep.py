"""`peftpipe methods`: every PEFT method, run as queued DVC experiments on the user's own
data, then one table to compare them.

    peftpipe methods                 # the methods, and what each is
    peftpipe methods --queue         # dvc exp run --queue -n method-<name> -S peft.method=<name>, each
    dvc queue start -j 1             # run them (cached stages are reused: only train onward reruns)
    peftpipe methods --table         # test metric with its interval, trainable share, seconds, latency

The runs are ordinary experiments (`dvc exp show`, `peftpipe compare method-lora method-dora`).
A method that does not fit the model (prefix tuning on a model that takes no key/value
cache) stops its run at the train stage, in seconds, with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from peftpipe.methods import METHODS
from peftpipe.summarize import exp_show, runs

PREFIX = "method-"


def queue(run: Callable[[list[str]], object] = lambda cmd: subprocess.run(cmd, check=True)) -> list[str]:
    """Queue one experiment per method; the names queued."""
    names = []
    for name in METHODS:
        run(["dvc", "exp", "run", "--queue", "-n", f"{PREFIX}{name}", "-S", f"peft.method={name}"])
        names.append(f"{PREFIX}{name}")
    return names


def rows(shown: list, metric: str = "f1") -> list[dict]:
    """One row per method experiment in `dvc exp show --json`, best ``metric`` first."""
    found = []
    for run in runs(shown):
        name = str(run["name"])
        if not name.startswith(PREFIX):
            continue
        metrics = run["metrics"]
        overall = metrics.get("overall", {})
        found.append({
            "method": name[len(PREFIX):], metric: overall.get(metric), "ci": overall.get(f"{metric}_ci"),
            "trainable_share": run.get("train", {}).get("trainable_share"),
            "train_seconds": run.get("train", {}).get("train_seconds"),
            "peak_rss_mib": (run.get("train", {}).get("peak_memory_mib") or {}).get("rss"),
            "ms_per_example": run.get("export", {}).get("merged_ms_per_example"),
        })
    return sorted(found, key=lambda row: -(row[metric] or 0.0))


def table(found: list[dict], metric: str = "f1") -> str:
    if not found:
        return f"no {PREFIX}* experiments yet: peftpipe methods --queue && dvc queue start -j 1"
    lines = [f"{'method':<15} {metric + ' [95% interval]':<26} {'trained':>8} {'train s':>8} {'peak MiB':>8} "
             f"{'ms/example':>10}"]
    for row in found:
        ci = row["ci"] or {}
        score = f"{row[metric]:.4f} [{ci.get('low', float('nan')):.4f}, {ci.get('high', float('nan')):.4f}]" \
            if row[metric] is not None else "-"
        share = f"{row['trainable_share']:.2%}" if row["trainable_share"] is not None else "-"
        seconds = f"{row['train_seconds']:.0f}" if row["train_seconds"] is not None else "-"
        latency = f"{row['ms_per_example']:.1f}" if row["ms_per_example"] is not None else "-"
        peak = f"{row['peak_rss_mib']:.0f}" if row.get("peak_rss_mib") is not None else "-"
        lines.append(f"{row['method']:<15} {score:<26} {share:>8} {seconds:>8} {peak:>8} {latency:>10}")
    return "\n".join(lines)


def described() -> list[str]:
    return [f"{name:<15} {method.summary}" for name, method in METHODS.items()]


def current(all_commits: bool = False) -> list[dict]:
    return rows(exp_show(all_commits))
