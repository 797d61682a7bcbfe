"""The pieces of `peftpipe compare` and of the intervals, one by one, at their edges: what
mutation testing (TESTING.md) found no test looked at."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from conftest import git_commit, run_cli

from peftpipe import intervals
from peftpipe.errors import InputError
from peftpipe.tools.compare import Difference, Meaning, Predictions, _signed, check_paired, compare, holm


@pytest.mark.parametrize("p, adjusted, diff, verdict", [
    (0.01, None, 0.2, "B better"), (0.01, None, -0.2, "A better"), (0.01, 0.2, 0.2, "no significant difference"),
    (0.2, 0.01, -0.1, "A better"), (0.05, None, 0.3, "no significant difference"),
    (0.049, 0.049, 0.3, "B better"),
])
def test_the_verdict_reads_the_adjusted_p_value_at_the_level(p, adjusted, diff, verdict):
    assert Difference("f1", 0.5, 0.5 + diff, -1, 1, p, adjusted).verdict() == verdict


def test_holm_caps_at_one_and_keeps_four_decimals():
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([0.012345]) == [0.0123]
    assert holm([0.04, 0.01, 0.03]) == [0.06, 0.03, 0.06]
    assert holm([]) == []


@pytest.mark.parametrize("value, shown", [(-0.00001, "+0.0000"), (0.0, "+0.0000"), (0.12344, "+0.1234"),
                                          (-0.5, "-0.5000"), (0.00005, "+0.0001")])
def test_signed_numbers_never_show_a_negative_zero(value, shown):
    assert _signed(value) == shown


def classes(gold, predicted, labels=("neg", "pos")):
    return Predictions([{"text": str(i), "gold": g, "predicted": p} for i, (g, p) in enumerate(zip(gold, predicted))],
                       Meaning("sequence_classification", tuple(labels)))


def test_paired_runs_must_share_rows_task_and_labels():
    a = classes(["neg", "pos"], ["neg", "pos"])
    with pytest.raises(InputError, match=r"A: sequence_classification, labels \['neg', 'pos'\]; "
                                         r"B: sequence_classification, labels \['pos', 'neg'\]"):
        check_paired(a, classes(["neg", "pos"], ["neg", "pos"], labels=("pos", "neg")))
    with pytest.raises(InputError, match=r"gold labels \['maybe'\] are not in the predictions' labels \['neg', 'pos'\]"):
        compare(classes(["neg", "maybe"], ["neg", "pos"]), classes(["neg", "maybe"], ["pos", "pos"]))


def test_compare_bootstraps_both_runs_on_the_same_rows_with_its_seed_and_resamples():
    rng = random.Random(3)
    gold = [rng.choice(["neg", "pos"]) for _ in range(120)]
    a_pred = [g if rng.random() > 0.3 else rng.choice(["neg", "pos"]) for g in gold]
    b_pred = [g if rng.random() > 0.2 else rng.choice(["neg", "pos"]) for g in gold]
    a, b = classes(gold, a_pred), classes(gold, b_pred)
    found = {d.metric: d for d in compare(a, b, seed=5, resamples=300, permutations=300)}
    ca = intervals.class_counts(gold, a_pred, ["neg", "pos"])
    cb = intervals.class_counts(gold, b_pred, ["neg", "pos"])
    both = {**{("a", k): v for k, v in ca.items()}, **{("b", k): v for k, v in cb.items()}}

    def difference(sums):
        sa = intervals.class_scores({k: sums[("a", k)] for k in ca}, 1)
        sb = intervals.class_scores({k: sums[("b", k)] for k in cb}, 1)
        return {name: sb[name] - sa[name] for name in sa}

    expected = intervals.bootstrap(both, difference, 5, 300)
    for name, d in found.items():
        assert [d.low, d.high] == expected[name], name
        point_a = intervals.class_scores({k: v.sum(axis=0) for k, v in ca.items()}, 1)[name]
        point_b = intervals.class_scores({k: v.sum(axis=0) for k, v in cb.items()}, 1)[name]
        assert (d.a, d.b) == (round(float(point_a), 4), round(float(point_b), 4))
    assert compare(a, b, seed=6, resamples=300, permutations=300)[0].low != found["accuracy"].low or \
        compare(a, b, seed=6, resamples=300, permutations=300)[0].high != found["accuracy"].high


def test_the_randomisation_p_value_matches_the_exact_one_on_a_small_set():
    """8 rows: every one of the 2^8 ways to swap the two runs' predictions, enumerated; the
    approximate p-value (10,000 random swaps) lands within sampling error of the exact one."""
    gold = ["pos", "neg", "pos", "pos", "neg", "pos", "neg", "neg"]
    a_pred = ["neg", "neg", "neg", "pos", "pos", "pos", "pos", "neg"]
    b_pred = ["pos", "neg", "pos", "pos", "neg", "neg", "neg", "neg"]
    observed = abs(np.mean([g == p for g, p in zip(gold, b_pred)]) - np.mean([g == p for g, p in zip(gold, a_pred)]))
    extreme = 0
    for swaps in itertools.product([0, 1], repeat=8):
        sa = [b if s else a for a, b, s in zip(a_pred, b_pred, swaps)]
        sb = [a if s else b for a, b, s in zip(a_pred, b_pred, swaps)]
        diff = abs(np.mean([g == p for g, p in zip(gold, sb)]) - np.mean([g == p for g, p in zip(gold, sa)]))
        extreme += diff >= observed - 1e-12
    exact = extreme / 256
    approximate = next(d for d in compare(classes(gold, a_pred), classes(gold, b_pred), resamples=200,
                                          permutations=10_000) if d.metric == "accuracy")
    assert approximate.p_value == pytest.approx(exact, abs=0.02)


def test_entity_scores_at_their_edges():
    sums = {"tp": np.array([1, 0, 0, 2]), "fp": np.array([2, 0, 3, 0]), "fn": np.array([0, 0, 1, 2]),
            "right": np.array([5, 4, 0, 3]), "words": np.array([6, 4, 0, 4])}
    found = intervals.entity_scores(sums)
    assert found["precision"].tolist() == [1 / 3, 0.0, 0.0, 1.0]  # more wrong than right; none predicted
    assert found["recall"].tolist() == [1.0, 0.0, 0.0, 0.5]
    assert found["f1"].tolist() == pytest.approx([0.5, 0.0, 0.0, 2 / 3])
    assert found["accuracy"].tolist() == [5 / 6, 1.0, 0.0, 0.75]
    assert all(np.asarray(v).dtype.kind == "f" for v in found.values())
    with np.errstate(all="raise"):  # no division by zero escapes as a warning or an error
        intervals.entity_scores(sums)


def test_class_scores_at_their_edges():
    # Two classes, the second the positive one; a class never predicted and one never in gold.
    sums = {"hit": np.array([3, 0]), "gold": np.array([3, 2]), "predicted": np.array([5, 0])}
    found = intervals.class_scores(sums, positive=1)
    assert found["accuracy"] == 0.6 and found["balanced_accuracy"] == 0.5
    assert found["f1"] == 0.0 and found["macro_f1"] == pytest.approx(0.375)
    assert intervals.class_scores(sums, positive=0)["f1"] == pytest.approx(0.75)
    assert intervals.class_scores(sums, positive=None)["f1"] == pytest.approx(0.375)
    absent = {"hit": np.array([2, 0]), "gold": np.array([2, 0]), "predicted": np.array([2, 0])}
    assert intervals.class_scores(absent, None)["balanced_accuracy"] == 1.0  # only classes present in gold
    with np.errstate(all="raise"):
        intervals.class_scores(absent, None)


def test_scores_with_single_counts_and_a_prediction_outside_the_labels():
    # Exactly one gold entity, one predicted, one word: the thresholds are > 0, not > 1.
    one = {"tp": np.array([1]), "fp": np.array([0]), "fn": np.array([0]), "right": np.array([1]),
           "words": np.array([1])}
    assert {k: v.tolist() for k, v in intervals.entity_scores(one).items()} == {
        "precision": [1.0], "recall": [1.0], "f1": [1.0], "accuracy": [1.0]}
    missed = {"tp": np.array([0]), "fp": np.array([0]), "fn": np.array([1]), "right": np.array([0]),
              "words": np.array([1])}
    assert intervals.entity_scores(missed)["f1"].tolist() == [0.0]
    single = {"hit": np.array([1, 0]), "gold": np.array([1, 0]), "predicted": np.array([1, 0])}
    found = intervals.class_scores(single, positive=0)
    assert (found["accuracy"], found["balanced_accuracy"], found["f1"]) == (1.0, 1.0, 1.0)
    # A prediction that is no label at all (generation writes one) counts for no class.
    counts = intervals.class_counts(["a", "b"], ["a", "zebra"], ["a", "b"])
    assert counts["predicted"].tolist() == [[1, 0], [0, 0]] and counts["hit"].tolist() == [[1, 0], [0, 0]]
    assert all(v.dtype == np.int64 for v in counts.values())


def test_table_lines_as_printed():
    from peftpipe.tools.compare import table

    lines = table("A1", "B1", [Difference("precision", 0.5, 0.6, 0.01, 0.2, 0.01, 0.02),
                               Difference("f1", 0.5, 0.4, -0.2, 0.1, 0.5, 0.5)], 12, "later").splitlines()
    assert lines == [
        "A = A1, B = B1: 12 rows of the 'later' set, paired (bootstrap 95% interval of B - A; approximate "
        "randomisation p-value)",
        "metric                    A        B    B - A  95% interval              p   p adj  verdict",
        "f1 (primary)         0.5000   0.4000  -0.1000  [-0.2000, +0.1000]  0.5000  0.5000  no significant difference",
        "precision            0.5000   0.6000  +0.1000  [+0.0100, +0.2000]  0.0100  0.0200  B better",
        "The verdict reads f1 as it is and the 1 other metrics' p-values adjusted together (Holm), so testing them "
        "all does not multiply false findings."]


def test_reading_predictions_files(tmp_path):
    from peftpipe.tools.compare import Meaning, predictions_path, read_rows, rows_digest

    assert read_rows('{"gold": 1, "predicted": 1}\n\n{"gold": 2, "predicted": 1}\n', "f") == [
        {"gold": 1, "predicted": 1}, {"gold": 2, "predicted": 1}]
    with pytest.raises(InputError, match=r"^f: line 2: not valid JSON \(Expecting value\)$"):
        read_rows('{"gold": 1, "predicted": 1}\nnope\n', "f")
    with pytest.raises(InputError, match=r"^f: not a predictions file \(rows with 'gold' and 'predicted'\)$"):
        read_rows('{"gold": 1}\n', "f")
    with pytest.raises(InputError, match="not a predictions file"):
        read_rows("\n", "f")
    assert predictions_path() == "data/predictions/test.jsonl"
    assert predictions_path("later_2") == "data/predictions/later_2.jsonl"
    with pytest.raises(InputError, match=r"^--set '\.\./x': expected test or a name from eval\.extra$"):
        predictions_path("../x")
    assert Meaning.parse('{"task": "generation", "labels": ["a"]}', "m") == Meaning("generation", ("a",))
    with pytest.raises(InputError, match=r"^m: 'task' must be a name and 'labels' a list of class names$"):
        Meaning.parse('{"task": "generation", "labels": [1]}', "m")
    with pytest.raises(InputError, match=r"^m: not a predictions description"):
        Meaning.parse('{"task": "generation"}', "m")
    same = rows_digest([{"text": "a", "gold": "x", "predicted": "y"}])
    assert same == rows_digest([{"text": "a", "gold": "x", "predicted": "z"}])  # the predictions do not count
    assert same != rows_digest([{"text": "b", "gold": "x", "predicted": "y"}])
    assert same != rows_digest([{"text": "a", "gold": "w", "predicted": "y"}])


def test_predictions_are_read_from_a_file_the_workspace_or_a_commit(tmp_path, monkeypatch):
    """load_predictions: a file path with its task.json, the workspace, any git revision (read
    through DVC), each with a one-line error naming what is missing."""
    import json

    from peftpipe.evaluation import describe_predictions
    from peftpipe.tools.compare import load_predictions

    def save(predicted):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "test.jsonl").write_text("".join(json.dumps({"gold": g, "predicted": p}) + "\n"
                                                   for g, p in zip(["pos", "neg"], predicted)))

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data/predictions"
    run_cli(["git", "init", "-q"], tmp_path)
    run_cli(["dvc", "init", "-q"], tmp_path)
    save(["pos", "pos"])
    git_commit(tmp_path, "predictions without their meaning (before task.json existed)")
    describe_predictions(folder, "sequence_classification", ["neg", "pos"])
    git_commit(tmp_path, "scored")
    save(["neg", "neg"])  # the workspace moves on

    committed, here = load_predictions("HEAD"), load_predictions("workspace")
    assert [r["predicted"] for r in committed.rows] == ["pos", "pos"]
    assert [r["predicted"] for r in here.rows] == ["neg", "neg"] == \
        [r["predicted"] for r in load_predictions(str(folder / "test.jsonl")).rows]
    assert committed.meaning == here.meaning == Meaning("sequence_classification", ("neg", "pos"))
    with pytest.raises(InputError, match=r"^nope: cannot read its data/predictions/test\.jsonl .*give a commit"):
        load_predictions("nope")
    with pytest.raises(InputError, match=r"^HEAD~1: cannot read its data/predictions/task\.json .*`dvc exp run` again"):
        load_predictions("HEAD~1")
    (folder / "task.json").unlink()
    with pytest.raises(InputError, match=r"^data/predictions/test\.jsonl: no task\.json beside it"):
        load_predictions("workspace")
    (folder / "test.jsonl").unlink()
    with pytest.raises(InputError, match=r"^data/predictions/test\.jsonl: not in the workspace; run `dvc repro"):
        load_predictions(".")


def test_a_tie_with_the_observed_difference_counts_as_extreme_and_every_permutation_counts_once():
    # One row where only B is right: every swap gives a difference as large as the observed one,
    # so p is exactly 1, with a number of permutations that is not a multiple of the chunk.
    found = {d.metric: d for d in compare(classes(["pos"], ["neg"]), classes(["pos"], ["pos"]), resamples=50,
                                          permutations=1234)}
    assert found["accuracy"].p_value == 1.0


def test_the_p_value_is_seeded_and_kept_to_four_decimals():
    rng = random.Random(7)
    gold = [rng.choice(["neg", "pos"]) for _ in range(60)]
    a = classes(gold, [g if rng.random() > 0.35 else rng.choice(["neg", "pos"]) for g in gold])
    b = classes(gold, [g if rng.random() > 0.3 else rng.choice(["neg", "pos"]) for g in gold])
    first = {d.metric: d.p_value for d in compare(a, b, resamples=50, permutations=9998)}
    assert first == {d.metric: d.p_value for d in compare(a, b, seed=0, resamples=50, permutations=9998)}
    assert first != {d.metric: d.p_value for d in compare(a, b, seed=1, resamples=50, permutations=9998)}
    assert all(p == round(p, 4) for p in first.values()) and any(0.01 < p < 0.99 for p in first.values())


def test_label_mismatches_show_the_first_five_labels_of_each():
    many, other = [f"c{i}" for i in range(7)], [f"d{i}" for i in range(7)]
    with pytest.raises(InputError) as caught:
        check_paired(classes(["c0"], ["c0"], labels=many), classes(["c0"], ["c0"], labels=other))
    assert ("(A: sequence_classification, labels ['c0', 'c1', 'c2', 'c3', 'c4']; B: sequence_classification, labels "
            "['d0', 'd1', 'd2', 'd3', 'd4'])") in str(caught.value)
    gold = [f"x{i}" for i in range(7)]
    with pytest.raises(InputError) as caught:
        compare(classes(gold, gold, labels=many), classes(gold, gold, labels=many))
    assert str(caught.value) == ("gold labels ['x0', 'x1', 'x2', 'x3', 'x4'] are not in the predictions' labels "
                                 "['c0', 'c1', 'c2', 'c3', 'c4']")


def test_the_table_names_the_test_set_by_default_and_shows_p_for_an_unadjusted_primary():
    from peftpipe.tools.compare import table

    lines = table("A1", "B1", [Difference("f1", 0.5, 0.4, -0.2, 0.1, 0.5, None)], 3).splitlines()
    assert lines[0].startswith("A = A1, B = B1: 3 rows of the 'test' set")
    assert lines[2].endswith("0.5000  0.5000  no significant difference")


def test_a_description_needs_a_task_name_and_a_list_of_names():
    for text in ('{"task": 3, "labels": ["a"]}', '{"task": "x", "labels": "ab"}', '{"task": "x", "labels": [1]}'):
        with pytest.raises(InputError, match=r"^m: 'task' must be a name and 'labels' a list of class names$"):
            Meaning.parse(text, "m")


def test_the_digest_of_rows_does_not_depend_on_the_order_of_their_keys():
    from peftpipe.tools.compare import rows_digest

    assert rows_digest([{"text": "a", "gold": "x"}]) == rows_digest([{"gold": "x", "text": "a"}])


def test_unreadable_predictions_name_where_they_came_from(tmp_path, monkeypatch):
    """Each error names the file, or the revision and the path in it, that could not be read."""
    import json

    import dvc.api

    from peftpipe import experiments
    from peftpipe.evaluation import describe_predictions
    from peftpipe.tools.compare import load_predictions

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data/predictions"
    folder.mkdir(parents=True)
    loose = tmp_path / "elsewhere.jsonl"
    loose.write_text(json.dumps({"gold": "pos", "predicted": "pos"}) + "\n")
    with pytest.raises(InputError, match=rf"^{loose}: no task\.json beside it"):
        load_predictions(str(loose))
    loose.write_text("nope\n")
    with pytest.raises(InputError, match=rf"^{loose}: line 1: not valid JSON"):
        load_predictions(str(loose))

    run_cli(["git", "init", "-q"], tmp_path)
    run_cli(["dvc", "init", "-q"], tmp_path)
    (folder / "test.jsonl").write_text("nope\n")
    describe_predictions(folder, "sequence_classification", ["neg", "pos"])
    git_commit(tmp_path, "broken rows")
    with pytest.raises(InputError, match=r"^HEAD:data/predictions/test\.jsonl: line 1: not valid JSON"):
        load_predictions("HEAD")
    (folder / "test.jsonl").write_text(json.dumps({"gold": "pos", "predicted": "pos"}) + "\n")
    (folder / "task.json").write_text("[]")
    git_commit(tmp_path, "broken description")
    with pytest.raises(InputError, match=r"^HEAD:data/predictions/task\.json: not a predictions description"):
        load_predictions("HEAD")
    with pytest.raises(InputError, match=r"^data/predictions/task\.json: not a predictions description"):
        load_predictions("workspace")
    (folder / "test.jsonl").write_text("nope\n")
    with pytest.raises(InputError, match=r"^data/predictions/test\.jsonl: line 1: not valid JSON"):
        load_predictions("workspace")

    try:  # what DVC says of a revision that does not exist, as the message must quote it
        dvc.api.read("data/predictions/test.jsonl", rev=experiments.commit_of("nope"))
    except Exception as err:  # whichever DVC raises
        said = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    with pytest.raises(InputError) as caught:
        load_predictions("nope")
    assert str(caught.value) == (f"nope: cannot read its data/predictions/test.jsonl ({said}); give a commit, branch "
                                 "or experiment name")


def test_a_revision_without_the_description_says_to_rerun_and_a_long_error_is_cut(monkeypatch):
    import dvc.api

    from peftpipe import experiments
    from peftpipe.tools.compare import load_predictions

    monkeypatch.setattr(experiments, "commit_of", lambda rev: "abc123")

    def read(path, rev):
        if path.endswith("task.json"):
            raise FileNotFoundError(f"'{path}' does not exist at {rev}")
        return '{"gold": "pos", "predicted": "pos"}\n'

    monkeypatch.setattr(dvc.api, "read", read)
    with pytest.raises(InputError) as caught:
        load_predictions("old-run")
    assert str(caught.value) == (
        "old-run: cannot read its data/predictions/task.json (FileNotFoundError: 'data/predictions/task.json' does "
        "not exist at abc123); give a commit, branch or experiment name (runs evaluated before predictions described "
        "themselves need `dvc exp run` again)")

    def fail(path, rev):
        raise RuntimeError("x" * 150 + "   \n  " + "y" * 150)

    monkeypatch.setattr(dvc.api, "read", fail)
    with pytest.raises(InputError) as caught:
        load_predictions("odd")
    said = ("x" * 150 + " " + "y" * 150)[:200]
    assert str(caught.value) == (f"odd: cannot read its data/predictions/test.jsonl (RuntimeError: {said}); give a "
                                 "commit, branch or experiment name")
