"""`peftpipe methods`: every PEFT method, run as queued DVC experiments on the user's own
data, then one table to compare them.

    peftpipe methods                 # the methods, and what each is
    peftpipe methods --queue         # dvc exp run --queue -n method-<name> -S peft.method=<name>, each
    dvc queue start -j 1             # run them (cached stages are reused: only train onward reruns)
    peftpipe methods --table         # test metric with its interval, trainable share, seconds, memory,
                                     # latency, the paired difference from lora; plots in metrics/methods/

The runs are ordinary experiments (`dvc exp show`, `peftpipe compare method-lora method-dora`).
A method that does not fit the model (prefix tuning on a model that takes no key/value
cache) stops its run at the train stage, in seconds, with the reason.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from peftpipe import experiments
from peftpipe.errors import ParamsError
from peftpipe.io import atomic_path, write_json
from peftpipe.methods import METHODS
from peftpipe.params import load_params
from peftpipe.tools.summarize import exp_show, runs

PREFIX = "method-"
RECORD = Path("metrics/methods")


def queue(run: Callable[[list[str]], object] = lambda cmd: subprocess.run(cmd, check=True),
          settings: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> list[str]:
    """Queue one experiment per method (``only``: those), each with the same extra ``settings``
    (`-S key=value`, e.g. export.onnx=false to skip the ONNX graphs); the names queued."""
    unknown = [name for name in only if name not in METHODS]
    if unknown:
        raise ParamsError(f"--method {', '.join(unknown)}: not a method; expected one of {', '.join(METHODS)}")
    # Queued runs happen in a copy of the repository: paths that leave it are pinned.
    pinned = experiments.set_options(experiments.pinned_paths(load_params("params.yaml")))
    names = []
    for name in only or METHODS:
        extra = [*pinned, *(arg for setting in settings for arg in ("-S", setting))]
        run(["dvc", "exp", "run", "--queue", "-n", f"{PREFIX}{name}", "-S", f"peft.method={name}", *extra])
        names.append(f"{PREFIX}{name}")
    return names


def rows(shown: list, metric: str = "f1") -> list[dict]:
    """One row per method experiment in `dvc exp show --json`, best ``metric`` first. A method
    run under several commits (`--all-commits`) counts once: the newest, which exp show lists first."""
    found = {}
    for run in runs(shown):
        name = str(run["name"])
        if not name.startswith(PREFIX) or name[len(PREFIX):] in found:
            continue
        overall = run["metrics"].get("overall", {})
        found[name[len(PREFIX):]] = {
            "method": name[len(PREFIX):], "experiment": name, metric: overall.get(metric),
            "ci": overall.get(f"{metric}_ci"),
            "trainable_share": run.get("train", {}).get("trainable_share"),
            "train_seconds": run.get("train", {}).get("train_seconds"),
            "peak_rss_mib": (run.get("train", {}).get("peak_memory_mib") or {}).get("rss"),
            "ms_per_example": run.get("export", {}).get("merged_ms_per_example"),
            "f1_is": run["metrics"].get("f1_is"),
        }
    return sorted(found.values(), key=lambda row: -(row[metric] or 0.0))


def add_paired(found: list[dict], against: str, metric: str = "f1", load=None) -> None:
    """Each row's paired difference from the ``against`` method on the same test rows (the
    bootstrap interval and p-value of `peftpipe compare`), in ``row["vs"]``."""
    from peftpipe.tools.compare import compare, holm, load_predictions

    load = load or load_predictions
    reference = next((row for row in found if row["method"] == against), None)
    if reference is None:
        return
    run_a = load(reference["experiment"])
    for row in found:
        if row is reference:
            continue
        difference = next(d for d in compare(run_a, load(row["experiment"])) if d.metric == metric)
        row["vs"] = {"method": against, "diff": round(difference.diff, 4), "low": difference.low,
                     "high": difference.high, "p": difference.p_value}
    # Every method against one: as many tests as methods, so the p-values are read together (Holm).
    compared = [row for row in found if row.get("vs")]
    for row, adjusted in zip(compared, holm([row["vs"]["p"] for row in compared])):
        row["vs"]["p_adjusted"] = adjusted
        row["vs"]["verdict"] = "no significant difference" if adjusted >= 0.05 else \
            ("better" if row["vs"]["diff"] > 0 else "worse")


def table(found: list[dict], metric: str = "f1") -> str:
    if not found:
        return f"no {PREFIX}* experiments yet: peftpipe methods --queue && dvc queue start -j 1"
    against = next((row["vs"]["method"] for row in found if row.get("vs")), None)
    lines = [f"{'method':<15} {metric + ' [95% interval]':<26} {'trained':>8} {'train s':>8} {'peak MiB':>8} "
             f"{'ms/example':>10}" + (f"  vs {against}: difference [95% interval], p" if against else "")]
    for row in found:
        ci = row["ci"] or {}
        score = f"{row[metric]:.4f} [{ci.get('low', float('nan')):.4f}, {ci.get('high', float('nan')):.4f}]" \
            if row[metric] is not None else "-"
        share = f"{row['trainable_share']:.2%}" if row["trainable_share"] is not None else "-"
        seconds = f"{row['train_seconds']:.0f}" if row["train_seconds"] is not None else "-"
        latency = f"{row['ms_per_example']:.1f}" if row["ms_per_example"] is not None else "-"
        peak = f"{row['peak_rss_mib']:.0f}" if row.get("peak_rss_mib") is not None else "-"
        vs = row.get("vs")
        paired = (f"  {vs['diff']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}], p {vs['p']:.4f}"
                  f"{' *' if vs.get('p_adjusted', vs['p']) < 0.05 else ''}" if vs else "")
        lines.append(f"{row['method']:<15} {score:<26} {share:>8} {seconds:>8} {peak:>8} {latency:>10}{paired}")
    meanings = sorted({row["f1_is"] for row in found if row.get("f1_is")})
    if metric == "f1" and len(meanings) > 1:
        lines.append(f"note: f1 means different things in these rows ({'; '.join(meanings)}): compare rows "
                     f"of one meaning only")
    elif metric == "f1" and meanings:
        lines.append(f"f1: {meanings[0]}")
    if against:
        tested = sum(1 for row in found if row.get("vs"))
        lines.append(f"* p < 0.05 once adjusted for the {tested} comparisons (Holm): a significant difference from "
                     f"{against} (paired on the same test rows)")
    return "\n".join(lines)


def plots_yaml(metric: str) -> str:
    return f"""# Written by peftpipe methods --table: what `dvc plots show` draws of the method comparison.
plots:
  - Methods, test {metric}:
      template: bar_horizontal_sorted
      x: {metric}
      y:
        methods.json: method
  - Methods, test {metric} against train seconds:
      template: scatter
      x: train_seconds
      y:
        methods.json: {metric}
"""


def record(found: list[dict], metric: str = "f1", folder: Path = RECORD) -> Path:
    """metrics/methods/: the rows (methods.json) and a plots-only dvc.yaml for `dvc plots show`."""
    flat = [{**{k: v for k, v in row.items() if k not in ("ci", "vs")},
             f"{metric}_low": (row["ci"] or {}).get("low"), f"{metric}_high": (row["ci"] or {}).get("high"),
             **({"vs_" + k: v for k, v in row["vs"].items()} if row.get("vs") else {})}
            for row in found if row[metric] is not None]
    # dvc plots reads none of the rows when one has a null or lacks a field another has (a run
    # without peak memory, the reference without a difference): only the fields every row has.
    shared = set.intersection(*({k for k, v in row.items() if v is not None} for row in flat)) if flat else set()
    plotted = [{k: v for k, v in row.items() if k in shared} for row in flat]
    with atomic_path(folder, directory=True) as tmp:
        write_json(tmp / "methods.json", plotted)
        (tmp / "dvc.yaml").write_text(plots_yaml(metric))
    return folder


def described() -> list[str]:
    return [f"{name:<15} {method.summary}" for name, method in METHODS.items()]


def current(all_commits: bool = False, metric: str = "f1") -> list[dict]:
    return rows(exp_show(all_commits), metric)


def as_json(found: list[dict]) -> str:
    return json.dumps(found)
