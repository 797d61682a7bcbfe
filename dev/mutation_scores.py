"""Mutation scores per module from mutmut's results (mutants/**/*.meta), as TESTING.md shows
them; `--survivors` adds each surviving mutant with the line it changes.

    python dev/mutation_scores.py              # the table
    python dev/mutation_scores.py --survivors  # and what survived, module by module

Run after `mutmut run` (TESTING.md); reads files only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter
from pathlib import Path

MUTANTS = Path("mutants")


def results() -> dict[str, dict[str, int | None]]:
    """{module file: {mutant name: exit code}}"""
    found = {}
    for meta in sorted(MUTANTS.glob("src/**/*.py.meta")):
        found[str(meta.relative_to(MUTANTS / "src"))[: -len(".meta")]] = json.loads(meta.read_text())["exit_code_by_key"]
    return found


def table(found: dict) -> str:
    from mutmut.stats import status_by_exit_code  # mutmut's own reading of its exit codes

    lines = ["| module | killed | survived | no test reaches it | not checked | score |", "|---|---|---|---|---|---|"]
    for module, codes in found.items():
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        caught = counts["killed"] + counts["timeout"] + counts["caught by type check"]
        judged = caught + counts["survived"]
        score = f"**{100 * caught / judged:.1f}%**" if judged else "-"
        lines.append(f"| `{module}` | {caught} | {counts['survived']} | {counts['no tests']} | "
                     f"{counts['not checked']} | {score} |")
    return "\n".join(lines)


def changed_line(name: str) -> str:
    """The lines a mutant changes, before -> after (from `mutmut show`)."""
    shown = subprocess.run(["mutmut", "show", name], capture_output=True, text=True).stdout.splitlines()
    before = [line[1:].strip() for line in shown if line.startswith("-") and not line.startswith("---")]
    after = [line[1:].strip() for line in shown if line.startswith("+") and not line.startswith("+++")]
    return f"`{' '.join(before)}` -> `{' '.join(after)}`"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="list each surviving mutant and its change")
    args = parser.parse_args()
    found = results()
    if not found:
        raise SystemExit("no mutmut results here (mutants/ is made by `mutmut run`)")
    print(table(found))
    if args.survivors:
        for module, codes in found.items():
            alive = [name for name, code in codes.items() if code == 0]
            if alive:
                print(f"\n{module}")
                for name in alive:
                    print(f"- {name.split('.')[-1]}: {changed_line(name)}")


if __name__ == "__main__":
    main()
