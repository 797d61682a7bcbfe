"""Serving NER without the pipeline's per-token Python work: token classification's
pipeline_outputs answers what the transformers pipeline answers (aggregation "first", texts
longer than a window read in overlapping windows), text by text, for any text and batch
size, with a WordPiece tokenizer and with one that marks no continuations."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftpipe.serving import in_length_order, token_counts
from peftpipe.tasks import get_task
from tests.conftest import WORDS, save_random_model, word_tokenizer

# A label outside B-/I- ("misc") and one with another dash ("X-ray"): the pipeline names
# their groups differently ("misc"; "ray").
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "misc", "X-ray"]
# Words of several sub-words ("persons": person ##s), unknown words, punctuation, case.
PIECES = [*WORDS, "persons", "saws", "acmeing", "Parised", "Acme.", "acme's", "Zürich", "unknownword", ",", "!",
          "BOB", "l0ndon"]


def tagger(folder, tokenizer, loudness: float = 40):
    """A token classifier of random weights whose tags change from token to token (its head
    scaled up by ``loudness``, so a random model still names entities), with a 12-token window."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, pipeline

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(LABELS),
                        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    save_random_model(folder, BertForTokenClassification, config, tokenizer)
    model = BertForTokenClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(loudness)
    tokenizer.model_max_length = 12
    task = get_task("token_classification", LABELS)
    return task, pipeline("token-classification", model=model, tokenizer=tokenizer, device="cpu",
                          **task.pipeline_options(tokenizer))


@pytest.fixture(scope="module")
def wordpiece_tagger(tiny_model_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    return tagger(tmp_path_factory.mktemp("wordpiece-tagger"), AutoTokenizer.from_pretrained(tiny_model_dir))


@pytest.fixture(scope="module")
def left_padding(wordpiece_tagger, tiny_model_dir):
    """The wordpiece tagger's tokenizer, saved to pad on the left (as some are)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    tokenizer.model_max_length = wordpiece_tagger[1].tokenizer.model_max_length
    return tokenizer


@pytest.fixture(scope="module")
def loud_tagger(tiny_model_dir, tmp_path_factory):
    """Logits in the thousands: exp() of them overflows unless each token's largest is taken off first."""
    from transformers import AutoTokenizer

    return tagger(tmp_path_factory.mktemp("loud-tagger"), AutoTokenizer.from_pretrained(tiny_model_dir), 20000)


@pytest.fixture(scope="module")
def word_level_tagger(tmp_path_factory):
    tokenizer, _ = word_tokenizer([], "<pad>", "</s>", template=False)
    return tagger(tmp_path_factory.mktemp("word-level-tagger"), tokenizer)


def same_as_pipeline(task, pipe, texts: list[str], batch_size: int) -> None:
    fast = task.pipeline_outputs(pipe.model, pipe.tokenizer, texts, batch_size, **task.pipeline_options(pipe.tokenizer))
    slow = in_length_order(pipe, texts, token_counts(pipe.tokenizer, texts), batch_size)
    assert len(fast) == len(texts)
    for text, ours, theirs in zip(texts, fast, slow):
        assert [(g["entity_group"], g["start"], g["end"]) for g in ours] == \
            [(g["entity_group"], g["start"], g["end"]) for g in theirs], text
        assert [float(g["score"]) for g in ours] == pytest.approx([float(g["score"]) for g in theirs], abs=1e-5), text


texts = st.lists(st.lists(st.sampled_from(PIECES), max_size=30).map(" ".join), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts, batch_size=st.sampled_from([1, 2, 32]))
def test_wordpiece_answers_are_the_pipelines(wordpiece_tagger, texts, batch_size):
    same_as_pipeline(*wordpiece_tagger, texts, batch_size)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts, batch_size=st.sampled_from([1, 3]))
def test_left_padding_changes_nothing_and_very_confident_answers_are_the_pipelines(wordpiece_tagger, left_padding,
                                                                                 loud_tagger, texts, batch_size):
    # Windows are padded on the right whatever the tokenizer says: on the left a BERT's
    # positions would shift, and a window's answer would depend on its batch.
    task, pipe = wordpiece_tagger
    options = task.pipeline_options(pipe.tokenizer)
    assert task.pipeline_outputs(pipe.model, left_padding, texts, batch_size, **options) == \
        task.pipeline_outputs(pipe.model, pipe.tokenizer, texts, batch_size, **options)
    same_as_pipeline(*loud_tagger, texts, batch_size)


def test_windows_go_to_the_model_batch_size_at_a_time_shortest_first(wordpiece_tagger, monkeypatch):
    """Windows of similar length share a model call (little padding), never more than
    batch_size of them, and each window runs once."""
    task, pipe = wordpiece_tagger
    calls = []
    forward = pipe.model.forward

    def counted(**batch):
        calls.append(tuple(batch["input_ids"].shape))
        return forward(**batch)

    monkeypatch.setattr(pipe.model, "forward", counted)
    texts = ["alice", " ".join(WORDS[:6]), "bob visited paris", "carol", " ".join(WORDS[:4]), "dave"]
    options = task.pipeline_options(pipe.tokenizer)
    for batch_size in (1, 2):
        calls.clear()
        task.pipeline_outputs(pipe.model, pipe.tokenizer, texts, batch_size, **options)
        windows = pipe.tokenizer(texts, truncation=True, return_overflowing_tokens=True, stride=options["stride"])
        assert sum(rows for rows, _ in calls) == len(windows["input_ids"])
        assert [rows for rows, _ in calls[:-1]] == [batch_size] * (len(calls) - 1)
        widths = [width for _, width in calls]
        assert widths == sorted(widths) and len(set(widths)) > 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts, batch_size=st.sampled_from([1, 32]))
def test_answers_without_continuation_marks_are_the_pipelines(word_level_tagger, texts, batch_size):
    task, pipe = word_level_tagger
    # This tokenizer adds no special tokens: an empty text is no window at all, which the
    # pipeline cannot run (a 0-token tensor); served, it has no entities.
    texts = [text for text in texts if text] or ["alice"]
    same_as_pipeline(task, pipe, texts, batch_size)
    options = task.pipeline_options(pipe.tokenizer)
    assert task.pipeline_outputs(pipe.model, pipe.tokenizer, ["", *texts], batch_size, **options)[0] == []


def test_the_cases_that_decide_groups_and_windows(wordpiece_tagger):
    task, pipe = wordpiece_tagger
    long = " ".join(WORDS * 3)  # many windows: overlapping groups resolved
    # Windows that start inside a word (on "##s", "##ing"): a window's first token starts a word.
    split_words = " ".join(["persons acmeing", "saws"] * 8)
    cases = [long, "", "   ", "alice persons", "Acme. acme's BOB", "x" * 80, "paris, berlin! london", split_words]
    same_as_pipeline(task, pipe, cases, 32)
    found = task.pipeline_outputs(pipe.model, pipe.tokenizer, cases, 32, **task.pipeline_options(pipe.tokenizer))
    assert found[1] == [] and found[2] == []
    names = {group["entity_group"] for groups in found for group in groups}
    assert names <= {"PER", "LOC", "misc", "ray"} and len(names) >= 3  # the random head names several kinds
    ends = [group["end"] for group in found[0]]
    assert ends[-1] > len(long) - 20  # the last window's groups are there: the tail is tagged


def test_only_first_aggregation_is_computed(wordpiece_tagger):
    task, pipe = wordpiece_tagger
    with pytest.raises(ValueError, match="only 'first'"):
        task.pipeline_outputs(pipe.model, pipe.tokenizer, ["alice"], 8, aggregation_strategy="max")
    assert task.pipeline_outputs(pipe.model, pipe.tokenizer, [], 8) == []


def test_a_window_that_starts_inside_a_word_tags_its_first_piece():
    """A later window may start on "##s": that piece starts the window's first word (the
    pipeline's rule), else its tag would be lost wherever the earlier window does not cover it."""
    import numpy as np

    from peftpipe.tasks import token_classification as tc

    scores = np.array([[0.1, 0.9, 0, 0, 0, 0, 0], [0.2, 0, 0.8, 0, 0, 0, 0]], dtype=np.float32)  # B-PER, I-PER
    every_piece_continues = lambda ids, starts, ends, text: np.ones(len(ids), dtype=bool)  # noqa: E731
    groups = tc._window_groups("sons", np.array([7, 8]), np.array([[0, 1], [1, 4]]), np.zeros(2, dtype=bool), scores,
                               every_piece_continues, 1, dict(enumerate(LABELS)))
    assert groups == [{"entity_group": "PER", "start": 0, "end": 4, "score": pytest.approx(0.9)}]


def test_a_group_is_named_by_its_label_after_the_first_dash():
    """As the pipeline names it: "B-geo-loc" makes a "geo-loc" group, not "loc"."""
    import numpy as np

    from peftpipe.tasks import token_classification as tc

    no_piece_continues = lambda ids, starts, ends, text: np.zeros(len(ids), dtype=bool)  # noqa: E731
    groups = tc._window_groups("paris", np.array([5]), np.array([[0, 5]]), np.zeros(1, dtype=bool),
                               np.array([[0.1, 0.9]], dtype=np.float32), no_piece_continues, 1, {0: "O", 1: "B-geo-loc"})
    assert [group["entity_group"] for group in groups] == ["geo-loc"]


def test_a_piece_continues_a_word_as_the_pipeline_decides(wordpiece_tagger):
    """With continuation marks, a piece continues a word when its token is longer than its
    text ("##s" for "s"), so "bob" right after "." starts a word of its own. Without marks,
    the pipeline's heuristic: a piece continues when no space is on either side of its start
    (the text's first never)."""
    import numpy as np

    from peftpipe.tasks import token_classification as tc

    tokenizer = wordpiece_tagger[1].tokenizer
    text = "bob.bob persons"  # the second "bob" follows "." with no space: a word of its own all the same
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = np.array(encoded["input_ids"]), np.array(encoded["offset_mapping"])
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["bob", "[UNK]", "bob", "person", "##s"]
    marked = tc._subword_rule(tokenizer)(ids, offsets[:, 0], offsets[:, 1], text)
    # "[UNK]" is longer than its "." (pipeline_outputs keeps unknown tokens as words apart).
    assert marked.tolist() == [False, True, False, False, True]

    heuristic = tc._subword_rule(object())  # a tokenizer with no continuation marks
    starts = np.array([0, 1, 3, 4, 5])  # in "ab c.d": a, b, c, ".", d
    assert heuristic(np.zeros(5, dtype=np.int64), starts, starts + 1, "ab c.d").tolist() == \
        [False, True, False, True, True]
