"""Bootstrap intervals: the point scores they resample are the reported ones, they cover the
true value about 95% of the time, and they are deterministic."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from peftpipe import intervals
from peftpipe.tasks import get_task
from peftpipe.tasks import sequence_classification as sc
from peftpipe.tasks import token_classification as tc


def random_ner(n: int, seed: int, noise: float = 0.3) -> tuple[list, list]:
    rng = random.Random(seed)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(n)]
    gold = [tc.iob1_to_iob2(row) for row in gold]
    predicted = [[t if rng.random() > noise else rng.choice(tags) for t in row] for row in gold]
    return gold, predicted


def test_summed_entity_counts_give_seqevals_scores():
    gold, predicted = random_ner(200, seed=1)
    sums = {k: v.sum() for k, v in intervals.entity_counts(gold, predicted).items()}
    ours = intervals.entity_scores(sums)
    reference = tc.compute_metrics(gold, predicted)["overall"]
    for name in ("precision", "recall", "f1", "accuracy"):
        assert float(ours[name]) == pytest.approx(reference[name], abs=1e-12), name


@pytest.mark.parametrize("labels", [["no", "yes"], ["a", "b", "c", "d"]])
def test_summed_class_counts_give_scikit_learns_scores(labels):
    rng = random.Random(2)
    gold = [rng.choice(labels[:-1] if len(labels) > 2 else labels) for _ in range(300)]  # a class absent from gold
    predicted = [g if rng.random() > 0.4 else rng.choice(labels) for g in gold]
    sums = {k: v.sum(axis=0) for k, v in intervals.class_counts(gold, predicted, labels).items()}
    ours = intervals.class_scores(sums, 1 if len(labels) == 2 else None)
    reference = sc.compute_metrics(gold, predicted, labels)["overall"]
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "f1"):
        assert float(ours[name]) == pytest.approx(reference[name], abs=1e-12), name


def test_intervals_cover_the_true_accuracy_about_95_percent_of_the_time():
    """Simulated test sets from a classifier whose true accuracy is 0.8: the 95% interval of
    each holds 0.8 in about 95% of 200 draws (binomial spread of that share: +-3%)."""
    rng = np.random.default_rng(0)
    covered = 0
    for draw in range(200):
        right = rng.random(250) < 0.8
        gold = ["yes"] * 250
        predicted = ["yes" if r else "no" for r in right]
        counts = intervals.class_counts(gold, predicted, ["no", "yes"])
        low, high = intervals.bootstrap(counts, lambda s: intervals.class_scores(s, 1), seed=draw,
                                        resamples=1000)["accuracy"]
        covered += low <= 0.8 <= high
    assert 0.89 <= covered / 200 <= 0.99


def test_intervals_are_deterministic_and_narrow_with_more_examples():
    gold, predicted = random_ner(300, seed=3)
    first = get_task("token_classification").intervals(gold, predicted, [], seed=7)
    assert first == get_task("token_classification").intervals(gold, predicted, [], seed=7)
    point = tc.compute_metrics(gold, predicted)["overall"]
    for name in ("precision", "recall", "f1", "accuracy"):
        low, high = first[name]
        assert low < point[name] < high
    more = get_task("token_classification").intervals(gold * 4, predicted * 4, [], seed=7)
    assert more["f1"][1] - more["f1"][0] < 0.7 * (first["f1"][1] - first["f1"][0])


# --------------------------------------------------------------------------- peftpipe compare


def rows(gold, predicted):
    return [{"tokens": [f"w{i}"] * len(g), "gold": g, "predicted": p} for i, (g, p) in enumerate(zip(gold, predicted))]


def ner_run(gold, predicted):
    from peftpipe.tools.compare import Meaning, Predictions

    return Predictions(rows(gold, predicted), Meaning("token_classification", ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")))


def write_run(folder, name, data, task="token_classification", labels=("O", "B-PER", "I-PER", "B-LOC", "I-LOC")):
    """A predictions file and the task.json the evaluate stage writes beside it."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in data))
    (folder / "task.json").write_text(json.dumps({"task": task, "labels": list(labels)}))
    return str(folder / name)


def test_compare_finds_a_planted_difference():
    from peftpipe.tools.compare import compare

    gold, worse = random_ner(300, seed=4, noise=0.4)
    _, better = random_ner(300, seed=4, noise=0.15)
    differences = {d.metric: d for d in compare(ner_run(gold, worse), ner_run(gold, better), resamples=2000,
                                                permutations=2000)}
    f1 = differences["f1"]
    assert f1.diff > 0.1 and f1.low > 0 and f1.p_value < 0.01 and f1.verdict() == "B better"
    assert f1.a == pytest.approx(tc.compute_metrics(gold, worse)["overall"]["f1"], abs=1e-4)


def test_compare_sees_no_difference_between_two_runs_that_differ_by_noise():
    from peftpipe.tools.compare import Meaning, Predictions, compare

    rng = random.Random(5)
    labels = ["neg", "neu", "pos"]
    gold = [rng.choice(labels) for _ in range(400)]
    # Two runs of the same quality whose mistakes fall on different rows.
    run_a = [g if rng.random() > 0.3 else rng.choice(labels) for g in gold]
    run_b = [g if rng.random() > 0.3 else rng.choice(labels) for g in gold]
    as_rows = [Predictions([{"text": f"t{i}", "gold": g, "predicted": p} for i, (g, p) in enumerate(zip(gold, run))],
                           Meaning("sequence_classification", tuple(labels)))
               for run in (run_a, run_b)]
    differences = compare(*as_rows, resamples=2000, permutations=2000)
    assert {d.metric for d in differences} == {"accuracy", "balanced_accuracy", "macro_f1", "f1"}
    for d in differences:
        assert d.p_value > 0.05 and d.low < 0 < d.high and d.verdict() == "no significant difference", d


def test_compare_refuses_runs_scored_on_different_rows(tmp_path):
    from click.testing import CliRunner

    from peftpipe.cli import main

    gold, predicted = random_ner(50, seed=6)
    first, second = rows(gold, predicted), rows(gold, predicted)
    second[3]["gold"] = ["O"] * len(second[3]["gold"])
    for name, data in (("a.jsonl", first), ("b.jsonl", second)):
        write_run(tmp_path, name, data)
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    assert result.exit_code == 2
    assert "the two runs were scored on different test rows (50 vs 50 rows, 1 of the common ones differ)" in result.output
    same = CliRunner().invoke(main, ["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl")])
    assert same.exit_code == 0 and "made the same prediction on every one of the 50 rows of the 'test' set" in \
        same.output and "nothing to compare" in same.output


def test_compare_names_the_primary_metric_adjusts_the_others_and_prints_no_negative_zero(tmp_path):
    from click.testing import CliRunner

    from peftpipe.cli import main
    from peftpipe.tools.compare import holm

    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]  # Holm: 3 x 0.01, max(2 x 0.03, .), max(1 x 0.04, .)
    assert holm([0.5]) == [0.5]
    gold, worse = random_ner(200, seed=4, noise=0.4)
    _, better = random_ner(200, seed=4, noise=0.3)
    write_run(tmp_path, "a.jsonl", rows(gold, worse))
    write_run(tmp_path, "b.jsonl", rows(gold, better))
    result = CliRunner().invoke(main, ["compare", "--set", "test", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    lines = result.output.splitlines()
    assert "rows of the 'test' set" in lines[0] and lines[2].startswith("f1 (primary)")
    assert "-0.0000" not in result.output and "adjusted together (Holm)" in lines[-1]
    found = json.loads(CliRunner().invoke(main, ["compare", "--json", str(tmp_path / "a.jsonl"),
                                                 str(tmp_path / "b.jsonl")]).output)
    assert found["primary"] == "f1" and found["set"] == "test"
    by_name = {m["metric"]: m for m in found["metrics"]}
    assert by_name["f1"]["p_adjusted"] == by_name["f1"]["p_value"]
    secondary = [m for name, m in by_name.items() if name != "f1"]
    assert [m["p_adjusted"] for m in secondary] == holm([m["p_value"] for m in secondary])
    assert all(m["p_adjusted"] >= m["p_value"] for m in secondary)


def test_compare_binary_f1_is_eval_jsons_positive_class_even_when_it_sorts_first(tmp_path):
    """MRPC's labels are [not_equivalent, equivalent]: the positive class (the second in
    data.labels) sorts first. compare's f1 must be the f1 metrics/eval.json reports for the
    same predictions, not the F1 of whichever class sorts second."""
    from click.testing import CliRunner

    from peftpipe.cli import main

    labels = ["not_equivalent", "equivalent"]
    rng = random.Random(11)
    gold = [rng.choice(labels) for _ in range(400)]
    predicted = [g if rng.random() > 0.25 else rng.choice(labels) for g in gold]
    data = [{"text": f"s{i}", "text_pair": f"t{i}", "gold": g, "predicted": p}
            for i, (g, p) in enumerate(zip(gold, predicted))]
    path = write_run(tmp_path, "test.jsonl", data, "sequence_classification", labels)
    other = write_run(tmp_path, "other.jsonl", [{**row, "predicted": row["gold"]} for row in data],
                      "sequence_classification", labels)
    report = sc.compute_metrics(gold, predicted, labels)
    result = CliRunner().invoke(main, ["compare", "--json", path, other])
    assert result.exit_code == 0, result.output
    f1 = next(m for m in json.loads(result.output)["metrics"] if m["metric"] == "f1")
    assert f1["a"] == round(report["overall"]["f1"], 4) == round(report["per_class"]["equivalent"]["f1"], 4)
    assert f1["a"] != round(report["per_class"]["not_equivalent"]["f1"], 4)  # the two classes' F1 differ here


def test_compare_refuses_predictions_without_their_description(tmp_path):
    from click.testing import CliRunner

    from peftpipe.cli import main

    gold, predicted = random_ner(20, seed=6)
    path = write_run(tmp_path, "a.jsonl", rows(gold, predicted))
    (tmp_path / "task.json").unlink()
    result = CliRunner().invoke(main, ["compare", path, path])
    assert result.exit_code == 2 and "no task.json beside it" in result.output
    (tmp_path / "task.json").write_text("[1, 2]")
    result = CliRunner().invoke(main, ["compare", path, path])
    assert result.exit_code == 2 and "not a predictions description" in result.output


# --------------------------------------------------------------------------- peftpipe summarize


def exp(name, seed, r, f1):
    return {"rev": name, "name": name, "data": {
        "params": {"params.yaml": {"data": {"seed": seed, "lora": {"r": r, "alpha": 16}}}},
        "metrics": {"metrics/eval.json": {"data": {"overall": {"f1": f1, "f1_ci": {"low": 0, "high": 1}}}}}}}


def test_summarize_groups_runs_by_params_without_the_seed():
    from peftpipe.tools import summarize

    shown = [{"rev": "workspace", **exp("workspace", 1, 16, 0.9)},  # repeats HEAD: left out
             {**exp("abc123", 1, 16, 0.50), "experiments": [
                 {"revs": [exp("s2", 2, 16, 0.54)]}, {"revs": [exp("s3", 3, 16, 0.46)]},
                 {"revs": [exp("r8s1", 1, 8, 0.47)]}, {"revs": [exp("r8s2", 2, 8, 0.49)]}]}]
    shown[0]["rev"] = "workspace"
    groups = summarize.group(summarize.runs(shown))
    assert summarize.differing(groups) == ["lora.r"]
    by_r = {g.params["lora.r"]: g for g in groups}
    assert by_r[16].names == ["abc123", "s2", "s3"] and by_r[16].seeds == [1, 2, 3]
    stats = by_r[16].stats()["f1"]
    assert stats == {"mean": 0.5, "sd": 0.04, "n": 3} and "f1_ci.low" not in by_r[16].stats()
    assert by_r[8].stats()["f1"]["mean"] == 0.48
    text = summarize.table(groups, ["f1"])
    assert "lora.r=16: 3 run(s), seeds 1, 2, 3" in text and "f1                 0.5000 +- 0.0400" in text


def test_summarize_takes_a_mapping_valued_param_as_one_value():
    from peftpipe.tools import summarize

    runs = [exp(name, 1, 16, 0.5) for name in ("a", "b")]
    for run, train in zip(runs, ("a.csv", "b.csv")):
        run["data"]["params"]["params.yaml"]["data"]["data"] = {"files": {"train": train, "test": "t.csv"}}
    groups = summarize.group(summarize.runs(runs))
    assert summarize.differing(groups) == ["data.files"]
    assert groups[0].params["data.files"] == {"train": "a.csv", "test": "t.csv"}


def test_entity_f1_with_more_misses_than_hits_is_not_zero():
    scores = intervals.entity_scores({"tp": np.array(1), "fp": np.array(0), "fn": np.array(3), "right": np.array(5),
                                      "words": np.array(8)})
    assert float(scores["f1"]) == pytest.approx(2 / 5) and float(scores["recall"]) == pytest.approx(1 / 4)


def test_a_label_neither_gold_nor_predicted_counts_zero_in_macro_f1_and_resamples_score_apart():
    gold, predicted = ["a", "b", "a", "b"], ["a", "b", "b", "c"]
    labels = ["a", "b", "c", "d"]  # d: in no row at all
    sums = {k: v.sum(axis=0) for k, v in intervals.class_counts(gold, predicted, labels).items()}
    ours = intervals.class_scores(sums, None)
    reference = sc.compute_metrics(gold, predicted, labels)["overall"]
    assert float(ours["macro_f1"]) == pytest.approx(reference["macro_f1"]) == pytest.approx((2 / 3 + 1 / 2) / 4)
    stacked = {k: np.stack([v, v * 0 + (k == "gold") * np.array([2, 0, 0, 0])]) for k, v in sums.items()}
    both = intervals.class_scores(stacked, None)  # (resamples x classes): each resample on its own
    assert both["balanced_accuracy"].tolist() == pytest.approx([float(ours["balanced_accuracy"]), 0.0])


def test_the_interval_is_the_2_5th_and_97_5th_percentile_of_exactly_the_asked_resamples():
    """Chunked resampling is one stream of draws: the same rows as drawing all resamples at
    once in chunks of CHUNK, every row of the set drawable, 1,234 resamples in all."""
    rng = np.random.default_rng(4)
    values = rng.random(50)
    counts = {"x": values}
    seen = []

    def mean(sums):
        seen.append(len(sums["x"]))
        return {"mean": sums["x"] / 50}

    found = intervals.bootstrap(counts, mean, seed=9, resamples=1234)["mean"]
    assert sum(seen) == 1234
    draws = np.random.default_rng(9)
    rows = np.concatenate([draws.integers(0, 50, size=(min(intervals.CHUNK, 1234 - start), 50))
                           for start in range(0, 1234, intervals.CHUNK)])
    means = values[rows].mean(axis=1)
    assert found == [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]
    assert all(len(f"{bound}".split(".")[-1]) <= 4 for bound in found)


def test_the_first_row_is_drawn_too():
    # Two rows, only the first with a value: a resample without it anywhere would give 0 throughout.
    found = intervals.bootstrap({"x": np.array([1.0, 0.0])}, lambda s: {"share": s["x"] / 2}, seed=0, resamples=400)
    assert found["share"] == [0.0, 1.0]
