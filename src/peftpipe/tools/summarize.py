"""`peftpipe summarize`: experiments grouped by their params minus the seed, each metric as
mean +- standard deviation over the seeds.

One seed says little (the default's test F1 interval is 0.17 wide); a recipe run over
several seeds (`dvc exp run --queue -S seed=1,2,3 && dvc queue start`) says how much of a
difference is the seed. Reads `dvc exp show --json`; runs nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from dataclasses import dataclass, field

from peftpipe.errors import InputError
from peftpipe.params import leaves

METRICS_FILE = "metrics/eval.json"


@dataclass
class Group:
    params: dict  # the params the runs share (flattened), seed left out
    names: list[str] = field(default_factory=list)
    seeds: list = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def stats(self) -> dict[str, dict]:
        return {metric: {"mean": round(statistics.fmean(v), 4),
                         "sd": round(statistics.stdev(v), 4) if len(v) > 1 else None, "n": len(v)}
                for metric, v in self.values.items()}


def runs(shown: list) -> list[dict]:
    """Every run in `dvc exp show --json`: the workspace, each commit, each experiment."""
    found = []

    def visit(entry: dict) -> None:
        data = entry.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
        files = data.get("metrics") or {}
        metrics = (files.get(METRICS_FILE) or {}).get("data")
        if params and metrics:
            found.append({"name": entry.get("name") or data.get("rev") or entry.get("rev"), "params": params,
                          "metrics": metrics, "train": (files.get("metrics/train.json") or {}).get("data") or {},
                          "export": (files.get("metrics/export.json") or {}).get("data") or {}})
        for experiment in entry.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                # A run in progress shows its workspace's files, which are still its baseline's:
                # DVC marks it with data.rev "workspace" (its own rev is the queued task's).
                if "workspace" not in (rev.get("rev"), (rev.get("data") or {}).get("rev")):
                    visit(rev)

    for entry in shown:
        if entry.get("rev") != "workspace":  # the workspace repeats HEAD, or is a run in progress
            visit(entry)
    return found


def group(found: list[dict], seed_key: str = "seed") -> list[Group]:
    groups: dict[str, Group] = {}
    for run in found:
        params = leaves(run["params"])
        seed = params.pop(seed_key, None)
        key = json.dumps(params, sort_keys=True, default=str)
        entry = groups.setdefault(key, Group(params))
        entry.names.append(run["name"])
        entry.seeds.append(seed)
        for metric, value in run["metrics"].get("overall", {}).items():
            if isinstance(value, (int, float)):  # the intervals are mappings: left out
                entry.values.setdefault(metric, []).append(float(value))
    return list(groups.values())


def differing(groups: list[Group]) -> list[str]:
    """The params whose values tell the groups apart."""
    keys = sorted({k for g in groups for k in g.params})
    return [k for k in keys if len({json.dumps(g.params.get(k), default=str) for g in groups}) > 1]


def exp_show(all_commits: bool = False) -> list:
    try:
        result = subprocess.run(["dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])],
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise InputError(f"dvc exp show failed: {getattr(err, 'stderr', '') or err}".strip()) from None
    return json.loads(result.stdout)


def table(groups: list[Group], metrics: list[str]) -> str:
    keys = differing(groups)
    lines = []
    for g in groups:
        label = ", ".join(f"{k}={g.params.get(k)}" for k in keys) or "(same params)"
        seeds = ", ".join(str(s) for s in g.seeds)
        lines.append(f"{label}: {len(g.names)} run(s), seeds {seeds}")
        for metric in metrics:
            s = g.stats().get(metric)
            if s:
                spread = f" +- {s['sd']:.4f}" if s["sd"] is not None else " (one run: no spread)"
                lines.append(f"  {metric:<18} {s['mean']:.4f}{spread}")
    return "\n".join(lines)
