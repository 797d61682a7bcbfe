"""Rerun recipes from scratch and write one table of what each gives.

    python bench/recipes.py                      # every *-cpu recipe and the default
    python bench/recipes.py conll-ner-cpu        # some of them
    python bench/recipes.py --docs               # also put the table into docs/recipes.md

Each recipe runs in a fresh clone of this commit beside the project (so `../shared/corpora`
resolves as it does here), with an empty DVC cache: `peftpipe recipe NAME`, then
`dvc exp run -n NAME`, timed. The clone is removed afterwards. What each run scored on its
test split (every headline metric with its 95% bootstrap interval), the untrained base and
the trivial reference from metrics/baseline.json, the wall time, the CPU, the date and the
commit go to bench/results/recipes-<UTC time>.json and .md. Nothing is asserted: this is a
measurement, and a recipe that fails is a row that says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS_START, DOCS_END = "<!-- recipes table: start -->", "<!-- recipes table: end -->"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def run(args: list[str], cwd: Path, code: Path | None = None) -> subprocess.CompletedProcess:
    """``args`` in ``cwd`` with this interpreter's tools; ``code``: the peftpipe source to
    import (a clone's src/, not the editable install's working tree)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def headline(scores: dict) -> dict:
    """{metric: {value, low, high}} for every overall score that comes with an interval."""
    overall = scores.get("overall", {})
    return {name: {"value": round(overall[name], 4), "low": ci["low"], "high": ci["high"]}
            for name, ci in ((key[:-3], value) for key, value in overall.items() if key.endswith("_ci"))
            if name in overall}


def run_recipe(name: str, commit: str) -> dict:
    """One recipe from scratch in a fresh clone; its row."""
    clone = ROOT.parent / f".peftpipe-recipes-{name}-{os.getpid()}"
    shutil.rmtree(clone, ignore_errors=True)
    row: dict = {"recipe": name, "commit": commit}
    try:
        done = run(["git", "clone", "--quiet", str(ROOT), str(clone)], ROOT)
        if done.returncode:
            return {**row, "error": done.stderr.strip()[-300:]}
        for command in (["peftpipe", "recipe", name], ["dvc", "exp", "run", "-n", name]):
            started = time.perf_counter()
            done = run(command, clone, code=clone / "src")
            if done.returncode:
                return {**row, "error": f"{' '.join(command)}: {(done.stderr or done.stdout).strip()[-400:]}"}
        row["seconds"] = round(time.perf_counter() - started)
        evaluated = json.loads((clone / "metrics/eval.json").read_text())
        baseline = json.loads((clone / "metrics/baseline.json").read_text())
        row["test"] = headline(evaluated)
        row["base"] = headline(baseline)
        row["reference"] = headline(baseline.get("reference", {}))
        row["reference_name"] = baseline.get("reference", {}).get("name")
        for extra, scores in (evaluated.get("extra") or {}).items():
            row.setdefault("extra", {})[extra] = headline(scores)
        return row
    finally:
        shutil.rmtree(clone, ignore_errors=True)


def cell(scores: dict | None, metric: str, interval: bool = True) -> str:
    if not scores or metric not in scores:
        return "-"
    s = scores[metric]
    return f"{s['value']:.4f} [{s['low']:.4f}, {s['high']:.4f}]" if interval else f"{s['value']:.4f}"


def table(rows: list[dict]) -> str:
    machines = sorted({row["machine"] for row in rows})
    lines = [f"Rerun with `python bench/recipes.py` on {'; '.join(machines)}: each recipe from scratch in a fresh "
             "clone of the commit named (`peftpipe recipe NAME && dvc exp run`), test split, 95% bootstrap "
             "intervals.", "",
             "| recipe | metric | trained [95% interval] | untrained base | trivial reference | wall time | commit, date |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        made = f"{row['commit'][:7]}, {row['date']}"
        if "error" in row:
            lines.append(f"| `{row['recipe']}` | - | failed: {row['error'][:120]} | - | - | - | {made} |")
            continue
        for metric in row["test"]:
            lines.append(f"| `{row['recipe']}` | {metric} | **{cell(row['test'], metric)}** | "
                         f"{cell(row['base'], metric, False)} | {cell(row['reference'], metric, False)} | "
                         f"{row['seconds'] // 60} min {row['seconds'] % 60} s | {made} |")
    return "\n".join(lines) + "\n"


def earlier_rows(files: list[Path], rerun: list[str]) -> list[dict]:
    """Rows of earlier runs (their results JSON) for recipes not rerun now, each keeping the
    commit, date and machine it was measured with."""
    kept: dict[str, dict] = {}
    for file in files:
        found = json.loads(file.read_text())
        for row in found["rows"]:
            if row["recipe"] not in rerun:
                kept[row["recipe"]] = {"date": found["date"], "machine": found["machine"], **row}
    return list(kept.values())


def put_into_docs(text: str) -> None:
    page = ROOT / "docs" / "recipes.md"
    content = page.read_text()
    if DOCS_START not in content:
        content += f"\n## Latest rerun\n\n{DOCS_START}\n{DOCS_END}\n"
    before, rest = content.split(DOCS_START, 1)
    page.write_text(f"{before}{DOCS_START}\n{text}{DOCS_END}{rest.split(DOCS_END, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="recipes (default: every *-cpu recipe and the default)")
    parser.add_argument("--docs", action="store_true", help="put the table into docs/recipes.md")
    parser.add_argument("--with", dest="earlier", action="append", type=Path, default=[], metavar="RESULTS_JSON",
                        help="also show this earlier run's rows (bench/results/recipes-*.json) for recipes not rerun")
    args = parser.parse_args()
    names = args.names or ["default", *sorted(p.stem for p in (ROOT / "recipes").glob("*-cpu.yaml"))]
    if run(["git", "status", "--porcelain", "--untracked-files=no"], ROOT).stdout.strip():
        print("recipes: note: the working tree has changes; the runs use the last commit", file=sys.stderr)
    commit = run(["git", "rev-parse", "HEAD"], ROOT).stdout.strip()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    machine = f"{cpu_model()}, {os.cpu_count()} cores" + (f" ({', '.join(cpu_flags())})" if cpu_flags() else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    rows, earlier = [], earlier_rows(args.earlier, names)
    for name in names:
        print(f"recipes: {name} ...", file=sys.stderr, flush=True)
        rows.append({"date": date, "machine": machine, **run_recipe(name, commit)})
        print(f"recipes: {name}: {json.dumps(rows[-1])[:300]}", file=sys.stderr, flush=True)
        text = table(earlier + rows)  # written after each recipe: a long run shows what it has
        (RESULTS / f"recipes-{stamp}.json").write_text(json.dumps(
            {"date": date, "machine": machine, "python": platform.python_version(), "rows": rows}, indent=2) + "\n")
        (RESULTS / f"recipes-{stamp}.md").write_text(text)
    if args.docs:
        put_into_docs(text)
    print(text)


if __name__ == "__main__":
    main()
