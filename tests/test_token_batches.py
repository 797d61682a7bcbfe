"""train.batch_tokens: batches of a fixed number of padded tokens (fairseq's max_tokens)."""

import itertools
import re

import pytest
from conftest import run_stage
from hypothesis import given, settings
from hypothesis import strategies as st

from peftpipe import training
from peftpipe.artifacts import load_tokenized
from peftpipe.errors import ParamsError
from peftpipe.io import read_json
from peftpipe.params import load_params, parse_params

lengths_and_budget = st.integers(1, 64).flatmap(lambda longest: st.tuples(
    st.lists(st.integers(1, longest), min_size=1, max_size=300), st.integers(longest, 40 * longest)))


@settings(max_examples=200, deadline=None)
@given(lengths_and_budget, st.integers(0, 2**31))
def test_every_row_once_and_no_batch_over_budget(case, seed):
    lengths, budget = case
    batches = training.token_budget_batches(lengths, budget, seed)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= budget
    # Cut greedily over rows sorted by length: each batch had no room for the next one's shortest row.
    ordered = sorted(batches, key=lambda b: (min(lengths[i] for i in b), max(lengths[i] for i in b), -len(b)))
    for batch, following in itertools.pairwise(ordered):
        assert (len(batch) + 1) * min(lengths[i] for i in following) > budget
    # The number of steps depends on the lengths, not on the seed (total_steps relies on it).
    assert len(training.token_budget_batches(lengths, budget, seed + 1)) == len(batches)
    assert training.token_budget_batches(lengths, budget, seed) == batches


def test_short_rows_make_large_batches_and_long_rows_small_ones():
    lengths = [8] * 64 + [64] * 8
    batches = training.token_budget_batches(lengths, 128, seed=0)
    sizes = sorted(len(b) for b in batches)
    assert sizes == [2] * 4 + [16] * 4  # 16 x 8 tokens, 2 x 64 tokens: 128 each, no padding


def test_sampler_epochs_differ_and_repeat():
    lengths = [3, 5, 5, 7, 7, 7, 9, 12] * 10
    sampler = training.token_batch_sampler(lengths, 40, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second and len(first) == len(second) == len(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first  # a run resumed in epoch 0 sees epoch 0's batches


def test_steps_count_token_batches():
    params = parse_params({"model": {"max_length": 16}, "train": {"batch_tokens": 32, "epochs": 2}})
    lengths = [4] * 16 + [16] * 4  # 8 rows of 4 tokens per batch, 2 of 16: 2 + 2 batches an epoch
    assert training.batches_per_epoch(params.train, params.seed, lengths) == 4
    assert training.total_steps(params.train, 4) == 8
    assert training.total_steps(params.train, 4, processes=2) == 4
    assert training.batches_per_epoch(params.train.model_copy(update={"batch_tokens": None, "batch_size": 5}),
                                      params.seed, lengths) == 4


@pytest.mark.parametrize(("train", "expected"), [
    ({"batch_tokens": 100}, "train.batch_tokens: got 100, expected null or at least model.max_length (128)"),
    ({"batch_tokens": 512, "group_by_length": False}, "train.batch_tokens: got 512, expected null with "
                                                       "train.group_by_length false"),
    ({"batch_tokens": 0}, "train.batch_tokens"),
])
def test_bad_batch_tokens_are_named(train, expected):
    with pytest.raises(ParamsError, match=re.escape(expected)):
        parse_params({"model": {"max_length": 128}, "train": train})


@pytest.mark.slow  # two training runs of the tiny project
def test_both_loops_train_on_token_batches(tiny_project, monkeypatch):
    """The tiny NER project with batch_tokens: both loops take the steps total_steps counts,
    draw each epoch's own batches, and still learn the task."""
    drawn = []
    plain = training.token_budget_batches
    monkeypatch.setattr(training, "token_budget_batches", lambda *args: drawn.append(args[2]) or plain(*args))
    for name in ("download", "split", "tokenize_align"):
        run_stage(name)
    lengths = [len(ids) for ids in load_tokenized(tiny_project / "data/tokenized")[0]["train"]["input_ids"]]
    expected = 10 * len(training.token_budget_batches(lengths, 64, 0))
    for loop in ("trainer", "accelerate"):
        drawn.clear()
        text = (tiny_project / "params.yaml").read_text()
        text = re.sub(r"loop: \w+", f"loop: {loop}", text)
        (tiny_project / "params.yaml").write_text(re.sub(r"batch_tokens: \w+", "batch_tokens: 64", text))
        run_stage("train")
        run_stage("evaluate")
        report = read_json(tiny_project / "metrics/train.json")
        assert report["steps"] == expected and report["effective_batch_tokens"] == 64, loop
        assert report["mean_batch_rows"] == round(len(lengths) * 10 / expected, 2), loop
        seed = load_params(tiny_project / "params.yaml").seed
        assert set(range(seed, seed + 10)) <= set(drawn), (loop, drawn)  # seed + epoch, epochs 0-9
        assert read_json(tiny_project / "metrics/eval.json")["overall"]["f1"] > 0.8, loop
