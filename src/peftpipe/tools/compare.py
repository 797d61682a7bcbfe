"""`peftpipe compare A B`: is B really better than A on the same test rows?

Reads the test predictions each run saved (data/predictions/test.jsonl: the input, the
gold label, the prediction; task.json beside it: the task and the labels in data.labels
order, so a binary f1 is the positive class's, as in metrics/eval.json) from two experiments, branches, commits or the workspace,
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

from peftpipe import experiments, intervals
from peftpipe.errors import InputError
from peftpipe.evaluation import PREDICTIONS_MEANING
from peftpipe.params import SET_NAME
from peftpipe.tasks import get_task

PREDICTIONS = "data/predictions/test.jsonl"
WORKSPACE = ("workspace", ".")
PERMUTATIONS = 10_000
CHUNK = 500


PRIMARY = "f1"  # the metric a comparison is about; the others are secondary


@dataclass
class Difference:
    metric: str
    a: float
    b: float
    low: float
    high: float
    p_value: float
    # The p-value the verdict reads: the primary metric's as it is; the secondary metrics'
    # adjusted together for multiple comparisons (Holm), so four metrics tested at 0.05 do
    # not turn noise into a finding one time in five.
    p_adjusted: float | None = None

    @property
    def diff(self) -> float:
        return self.b - self.a

    @property
    def primary(self) -> bool:
        return self.metric == PRIMARY

    def verdict(self, alpha: float = 0.05) -> str:
        p = self.p_value if self.p_adjusted is None else self.p_adjusted
        if p >= alpha:
            return "no significant difference"
        return "B better" if self.diff > 0 else "A better"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: each p-value as it must be read when all of them were
    tested together (family-wise error at the level read)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = round(running, 4)
    return adjusted


@dataclass(frozen=True)
class Meaning:
    """What a predictions file's rows mean, as the evaluate stage wrote it beside them
    (``task.json``): the task kind and the labels in ``data.labels`` order, so a binary
    ``f1`` is the same class's as in metrics/eval.json."""
    task: str
    labels: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, where: str) -> Meaning:
        try:
            found = json.loads(text)
            task, labels = found["task"], found["labels"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{where}: not a predictions description (JSON with 'task' and 'labels'); "
                             f"rerun `dvc repro evaluate` to write it") from None
        if not isinstance(task, str) or not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise InputError(f"{where}: 'task' must be a name and 'labels' a list of class names")
        return cls(task, tuple(labels))


@dataclass
class Predictions:
    rows: list[dict]
    meaning: Meaning


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


def meaning_path(path: str | Path) -> Path:
    """The description the evaluate stage writes beside its predictions files."""
    return Path(path).with_name(PREDICTIONS_MEANING)


def load_predictions(rev: str, path: str = PREDICTIONS) -> Predictions:
    """The predictions a revision saved, with what they mean: a file path (its task.json
    beside it), the workspace, or any git revision or experiment name DVC knows (read from
    its cache)."""
    if Path(rev).is_file():
        return Predictions(read_rows(Path(rev).read_text(), rev), _read_meaning(meaning_path(rev), rev))
    if rev in WORKSPACE:
        if not Path(path).is_file():
            raise InputError(f"{path}: not in the workspace; run `dvc repro evaluate` first")
        return Predictions(read_rows(Path(path).read_text(), path), _read_meaning(meaning_path(path), path))
    import dvc.api

    commit = experiments.commit_of(rev)
    texts = []
    for wanted in (path, str(meaning_path(path))):
        try:
            texts.append(dvc.api.read(wanted, rev=commit))
        except Exception as err:  # dvc raises many types for an unknown revision or a missing output
            raise InputError(f"{rev}: cannot read its {wanted} ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]}); give a commit, branch or experiment name"
                             + (" (runs evaluated before predictions described themselves need "
                                "`dvc exp run` again)" if wanted != path else "")) from None
    return Predictions(read_rows(texts[0], f"{rev}:{path}"), Meaning.parse(texts[1], f"{rev}:{meaning_path(path)}"))


def _read_meaning(where: Path, rows_file: str) -> Meaning:
    if not where.is_file():
        raise InputError(f"{rows_file}: no {where.name} beside it (the task and the labels in data.labels order, "
                         f"which the evaluate stage writes); without it a binary f1 could be the other class's")
    return Meaning.parse(where.read_text(), str(where))


def rows_digest(rows: list[dict]) -> str:
    """What was scored: every row's input and gold label, in order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps({k: v for k, v in row.items() if k != "predicted"}, sort_keys=True).encode())
    return digest.hexdigest()


def check_paired(a: Predictions, b: Predictions) -> None:
    """A and B were scored on the same rows, with the same task and labels: or InputError."""
    rows_a, rows_b = a.rows, b.rows
    if len(rows_a) != len(rows_b) or rows_digest(rows_a) != rows_digest(rows_b):
        differ = sum(x != y for x, y in zip(([{k: v for k, v in r.items() if k != "predicted"} for r in rows_a]),
                                            ([{k: v for k, v in r.items() if k != "predicted"} for r in rows_b])))
        raise InputError(f"the two runs were scored on different test rows ({len(rows_a)} vs {len(rows_b)} rows, "
                         f"{differ} of the common ones differ): a paired comparison needs the same split "
                         f"(same data, split.* and model.max_length)")
    if a.meaning != b.meaning:
        raise InputError(f"the two runs describe their predictions differently (A: {a.meaning.task}, labels "
                         f"{list(a.meaning.labels)[:5]}; B: {b.meaning.task}, labels {list(b.meaning.labels)[:5]}): "
                         f"a paired comparison needs the same task and label order")


def compare(a: Predictions, b: Predictions, seed: int = 0,
            resamples: int = intervals.RESAMPLES, permutations: int = PERMUTATIONS) -> list[Difference]:
    """The paired comparison of two runs' predictions on the same rows."""
    check_paired(a, b)
    task, labels = get_task(a.meaning.task), list(a.meaning.labels)
    unknown = sorted(set().union(*(task.labels_in(r["gold"]) for r in a.rows)) - set(labels))
    if unknown:
        raise InputError(f"gold labels {unknown[:5]} are not in the predictions' labels {labels[:5]}")
    rows_a, rows_b = a.rows, b.rows
    scores = task.scores(labels)
    counts_a, counts_b = (task.counts([r["gold"] for r in rows], [r["predicted"] for r in rows], labels)
                          for rows in (rows_a, rows_b))
    point_a = scores({k: v.sum(axis=0) for k, v in counts_a.items()})
    point_b = scores({k: v.sum(axis=0) for k, v in counts_b.items()})
    # One bootstrap (intervals.bootstrap) over both runs' counts side by side: each resample
    # takes the same rows from A and B, and the score is B's minus A's.
    both = {**{("a", k): v for k, v in counts_a.items()}, **{("b", k): v for k, v in counts_b.items()}}

    def difference(sums):
        sa, sb = (scores({k: sums[(side, k)] for k in counts_a}) for side in ("a", "b"))
        return {name: sb[name] - sa[name] for name in sa}

    bounds = intervals.bootstrap(both, difference, seed, resamples)
    p_values = _randomisation(counts_a, counts_b, scores, point_a, point_b, seed, permutations)
    found = [Difference(name, round(float(point_a[name]), 4), round(float(point_b[name]), 4),
                        bounds[name][0], bounds[name][1], p_values[name])
             for name in point_a]
    secondary = [d for d in found if not d.primary]
    for d, adjusted in zip(secondary, holm([d.p_value for d in secondary])):
        d.p_adjusted = adjusted
    for d in found:
        if d.primary:
            d.p_adjusted = d.p_value
    return found


def same_predictions(a: Predictions, b: Predictions) -> bool:
    """A and B predicted the same on every row (the same run twice, e.g. `workspace` right
    after `dvc exp run` made it): there is nothing to test."""
    return all(x["predicted"] == y["predicted"] for x, y in zip(a.rows, b.rows))


def _randomisation(a, b, scores, point_a, point_b, seed: int, permutations: int) -> dict[str, float]:
    """Two-sided approximate randomisation: each row's two predictions swapped at random."""
    n = len(next(iter(a.values())))
    rng = np.random.default_rng([seed, 1])
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
    return {name: round((count + 1) / (permutations + 1), 4) for name, count in extreme.items()}


def _signed(value: float) -> str:
    """+0.0123, never -0.0000."""
    text = f"{value:+.4f}"
    return "+0.0000" if text == "-0.0000" else text


def table(a: str, b: str, differences: list[Difference], rows: int, test_set: str = "test") -> str:
    lines = [f"A = {a}, B = {b}: {rows} rows of the {test_set!r} set, paired (bootstrap 95% interval of B - A; "
             f"approximate randomisation p-value)",
             f"{'metric':<18} {'A':>8} {'B':>8} {'B - A':>8}  {'95% interval':<19} {'p':>7} {'p adj':>7}  verdict"]
    for d in sorted(differences, key=lambda d: not d.primary):
        name = f"{d.metric} (primary)" if d.primary else d.metric
        lines.append(f"{name:<18} {d.a:>8.4f} {d.b:>8.4f} {_signed(d.diff):>8}  [{_signed(d.low)}, {_signed(d.high)}]"
                     f"{d.p_value:>8.4f}{d.p_adjusted if d.p_adjusted is not None else d.p_value:>8.4f}  {d.verdict()}")
    others = len(differences) - 1
    lines.append(f"The verdict reads {PRIMARY} as it is and the {others} other metrics' p-values adjusted together "
                 f"(Holm), so testing them all does not multiply false findings.")
    return "\n".join(lines)
