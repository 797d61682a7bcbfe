"""`peftpipe compare A B`: is B really better than A on the same test rows?

Reads the test predictions each run saved (data/predictions/test.jsonl: the input, the
gold label, the prediction) from two experiments, branches, commits or the workspace,
through DVC, without rerunning anything. For each headline metric: A, B, the difference
B - A with a paired bootstrap 95% interval (the same resampled rows for both), and a
two-sided p-value from approximate randomisation (each row's two predictions swapped at
random, 10,000 times). Refuses when the runs were scored on different rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftpipe import intervals
from peftpipe.errors import InputError
from peftpipe.params import SET_NAME

PREDICTIONS = "data/predictions/test.jsonl"
WORKSPACE = ("workspace", ".")
PERMUTATIONS = 10_000
CHUNK = 500


@dataclass
class Difference:
    metric: str
    a: float
    b: float
    low: float
    high: float
    p_value: float

    @property
    def diff(self) -> float:
        return self.b - self.a

    def verdict(self, alpha: float = 0.05) -> str:
        if self.p_value >= alpha:
            return "no significant difference"
        return "B better" if self.diff > 0 else "A better"


def read_rows(text: str, where: str) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"{where}: line {number}: not valid JSON ({err.msg})") from None
    if not rows or not all(isinstance(r, dict) and "gold" in r and "predicted" in r for r in rows):
        raise InputError(f"{where}: not a predictions file (rows with 'gold' and 'predicted')")
    return rows


def predictions_path(test_set: str = "test") -> str:
    """Where the evaluate stage saved a test set's predictions (eval.extra names its others)."""
    import re

    if not re.fullmatch(SET_NAME, test_set):
        raise InputError(f"--set {test_set!r}: expected test or a name from eval.extra")
    return str(Path(PREDICTIONS).with_name(f"{test_set}.jsonl"))


def load_predictions(rev: str, path: str = PREDICTIONS) -> list[dict]:
    """The predictions a revision saved: a file path, the workspace, or any git revision or
    experiment name DVC knows (read from its cache)."""
    if Path(rev).is_file():
        return read_rows(Path(rev).read_text(), rev)
    if rev in WORKSPACE:
        if not Path(path).is_file():
            raise InputError(f"{path}: not in the workspace; run `dvc repro evaluate` first")
        return read_rows(Path(path).read_text(), path)
    import dvc.api

    try:
        return read_rows(dvc.api.read(path, rev=_commit(rev)), f"{rev}:{path}")
    except InputError:
        raise
    except Exception as err:  # dvc raises many types for an unknown revision or a missing output
        raise InputError(f"{rev}: cannot read its {path} ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); give a commit, branch or experiment name") from None


def _commit(rev: str) -> str:
    """An experiment name as its commit (dvc.api reads git revisions); others as given."""
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import resolve_name

    with Repo(".") as repo:
        ref = resolve_name(repo.scm, rev).get(rev)
        return repo.scm.get_ref(str(ref)) if ref else rev


def rows_digest(rows: list[dict]) -> str:
    """What was scored: every row's input and gold label, in order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps({k: v for k, v in row.items() if k != "predicted"}, sort_keys=True).encode())
    return digest.hexdigest()


def _counts(kind: str, rows: list[dict], labels: list[str]) -> dict[str, np.ndarray]:
    gold, predicted = [r["gold"] for r in rows], [r["predicted"] for r in rows]
    if kind == "token_classification":
        return intervals.entity_counts(gold, predicted)
    return intervals.class_counts(gold, predicted, labels)


def compare(rows_a: list[dict], rows_b: list[dict], seed: int = 0,
            resamples: int = intervals.RESAMPLES, permutations: int = PERMUTATIONS) -> list[Difference]:
    """The paired comparison of two runs' predictions on the same rows."""
    if len(rows_a) != len(rows_b) or rows_digest(rows_a) != rows_digest(rows_b):
        differ = sum(x != y for x, y in zip(([{k: v for k, v in r.items() if k != "predicted"} for r in rows_a]),
                                            ([{k: v for k, v in r.items() if k != "predicted"} for r in rows_b])))
        raise InputError(f"the two runs were scored on different test rows ({len(rows_a)} vs {len(rows_b)} rows, "
                         f"{differ} of the common ones differ): a paired comparison needs the same split "
                         f"(same data, split.* and model.max_length)")
    kind = "token_classification" if isinstance(rows_a[0]["gold"], list) else "sequence_classification"
    labels = sorted({r["gold"] for r in rows_a} | {r["predicted"] for r in rows_a + rows_b}) \
        if kind != "token_classification" else []
    a, b = _counts(kind, rows_a, labels), _counts(kind, rows_b, labels)
    if kind == "token_classification":
        def scores(sums):
            return intervals.entity_scores(sums)
    else:
        def scores(sums):
            return intervals.class_scores(sums, len(labels) == 2)
    point_a = scores({k: v.sum(axis=0) for k, v in a.items()})
    point_b = scores({k: v.sum(axis=0) for k, v in b.items()})
    n = len(rows_a)
    rng = np.random.default_rng(seed)
    boot: dict[str, list] = {}
    for start in range(0, resamples, CHUNK):
        rows = rng.integers(0, n, size=(min(CHUNK, resamples - start), n))
        sa = scores({k: v[rows].sum(axis=1) for k, v in a.items()})
        sb = scores({k: v[rows].sum(axis=1) for k, v in b.items()})
        for name in sa:
            boot.setdefault(name, []).append(sb[name] - sa[name])
    extreme = {name: 0 for name in point_a}
    total_a = {k: v.sum(axis=0) for k, v in a.items()}
    for start in range(0, permutations, CHUNK):
        swap = rng.integers(0, 2, size=(min(CHUNK, permutations - start), n))
        moved = {k: np.tensordot(swap, b[k] - a[k], axes=(1, 0)) for k in a}  # B's counts where swapped
        sa = scores({k: total_a[k] + moved[k] for k in a})
        sb = scores({k: total_a[k] + (b[k] - a[k]).sum(axis=0) - moved[k] for k in a})
        for name in extreme:
            observed = abs(float(point_b[name] - point_a[name]))
            extreme[name] += int((np.abs(sb[name] - sa[name]) >= observed - 1e-12).sum())
    return [Difference(name, round(float(point_a[name]), 4), round(float(point_b[name]), 4),
                       round(float(np.percentile(np.concatenate(boot[name]), 2.5)), 4),
                       round(float(np.percentile(np.concatenate(boot[name]), 97.5)), 4),
                       round((extreme[name] + 1) / (permutations + 1), 4))
            for name in point_a]


def table(a: str, b: str, differences: list[Difference], rows: int) -> str:
    lines = [f"A = {a}, B = {b}: {rows} test rows, paired (bootstrap 95% interval of B - A; "
             f"approximate randomisation p-value)",
             f"{'metric':<18} {'A':>8} {'B':>8} {'B - A':>8}  {'95% interval':<19} {'p':>7}  verdict"]
    for d in differences:
        lines.append(f"{d.metric:<18} {d.a:>8.4f} {d.b:>8.4f} {d.diff:>+8.4f}  [{d.low:+.4f}, {d.high:+.4f}]"
                     f"{d.p_value:>8.4f}  {d.verdict()}")
    return "\n".join(lines)
