"""The pieces the tasks share (tasks/fields.py, tasks/heads.py), each on its own: the
messages a bad field stops with, the head a model is loaded with, and the batching of
predictions (length order in, dataset order out, each example's logits cut to its length)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import recorder

from peftpipe.errors import DataError, ModelError
from peftpipe.tasks import fields, heads

WHERE = "train.jsonl: row 4"


# --------------------------------------------------------------------------- fields


@pytest.mark.parametrize("value, words", [
    (None, "null"), (float("nan"), "null"), (np.float32("nan"), "null"), (True, "true/false"),
    (np.bool_(False), "true/false"), ("a", "a string"), ({"a": 1}, "an object"), ([1], "a list"),
    ((1,), "a list"), (np.array([1]), "a list"), (3, "a number"), (2.5, "a number"),
    (np.int64(3), "a number"), (b"x", "a bytes"),
])
def test_describe_names_a_value_as_json_would(value, words):
    assert fields.describe(value) == words


@pytest.mark.parametrize("value, message", [
    (None, f"{WHERE}: tokens is null"),
    ("EU rejects German call", f"{WHERE}: tokens is a string, expected a list (a whitespace split here would hide "
                               f"mistakes: write the list in the file)"),
    (7, f"{WHERE}: tokens is a number, expected a list"),
    ({"EU": 1}, f"{WHERE}: tokens is an object, expected a list"),
    (["EU", None], f"{WHERE}: token 1 is null"),
    (["EU", "rejects", ["German"]], f"{WHERE}: token 2 is a list, expected a word"),
    (["EU", {"w": 1}], f"{WHERE}: token 1 is an object, expected a word"),
])
def test_word_list_stops_naming_the_row_the_field_and_what_it_holds(value, message):
    with pytest.raises(DataError) as caught:
        fields.word_list(value, "tokens", "token", "a word", WHERE)
    assert str(caught.value) == message


def test_words_refuse_a_number_whose_text_is_lost_naming_it_and_the_fix():
    with pytest.raises(DataError) as caught:
        fields.words(["EU", 1.5], "tokens", WHERE)
    assert str(caught.value) == (f"{WHERE}: token 1 is a number (1.5), expected a word: write it as a string in "
                                 f"the file (\"1.5\") so its text is kept as written")
    assert fields.words(["EU", "1.50"], "tokens", WHERE) == ["EU", "1.50"]


def test_word_list_stops_on_a_nul_byte_naming_the_word():
    with pytest.raises(DataError, match=rf"^{WHERE}: token 1 holds a NUL byte \(\\x00\) at character 2"):
        fields.word_list(["EU", "re\x00jects"], "tokens", "token", "a word", WHERE)


def test_a_nul_byte_is_placed_at_its_first_occurrence():
    with pytest.raises(DataError, match=r"at character 1: is the file binary, or was it cut\? Remove the NUL bytes"):
        fields.no_nul("a\x00b\x00", "sentence1", WHERE)


def test_word_list_returns_a_python_list_of_the_values():
    values = fields.word_list(np.array(["EU", "rejects"]), "tokens", "token", "a word", WHERE)
    assert type(values) is list and values == ["EU", "rejects"]
    assert fields.word_list((0, 3), "tags", "tag", "a tag", WHERE) == [0, 3]


@pytest.mark.parametrize("value, expected", [(None, ""), (float("nan"), ""), ("a b", "a b"), (3, "3"), (2.5, "2.5")])
def test_text_is_a_string_and_null_is_empty(value, expected):
    assert fields.text(value, "sentence1", WHERE) == expected


@pytest.mark.parametrize("value, words", [(["a"], "a list"), ({"a": 1}, "an object")])
def test_text_stops_on_a_container(value, words):
    with pytest.raises(DataError) as caught:
        fields.text(value, "sentence1", WHERE)
    assert str(caught.value) == f"{WHERE}: sentence1 is {words}, expected a string"


def test_text_stops_on_a_nul_byte_naming_the_field():
    with pytest.raises(DataError, match=rf"^{WHERE}: sentence1 holds a NUL byte \(\\x00\) at character 0: "):
        fields.text("\x00abc", "sentence1", WHERE)


def test_names_from_ids_looks_ids_up_in_data_labels():
    assert fields.names_from_ids([1, 0, 1], {0: "neg", 1: "pos"}, "label", "class names", WHERE) == ["pos", "neg", "pos"]
    assert fields.names_from_ids([np.int64(2)], {1: "World", 2: "Sports"}, "label", "class names", WHERE) == ["Sports"]


def test_names_from_ids_without_labels_says_to_list_them():
    with pytest.raises(DataError) as caught:
        fields.names_from_ids([0, 1], {}, "tag", "tag names", WHERE)
    assert str(caught.value) == (f"{WHERE}: tags are integer ids; list the tag names in id order in data.labels "
                                 "(or map each id to its name: {1: World, 2: Sports})")


@pytest.mark.parametrize("labels, known", [
    ({0: "a", 1: "b", 2: "c"}, "0-2"),
    ({1: "World", 2: "Sports", 3: "Business"}, "1-3"),  # a range that does not start at 0
    ({1: "World", 2: "Sports", 4: "Sci/Tech"}, "1, 2, 4"),
])
def test_names_from_ids_names_the_first_unknown_id_and_the_known_ones(labels, known):
    with pytest.raises(DataError) as caught:
        fields.names_from_ids([1, 7, 9], labels, "label", "class names", WHERE)
    assert str(caught.value) == f"{WHERE}: label id 7 is outside data.labels (ids {known})"


# --------------------------------------------------------------------------- heads


def test_load_with_head_sizes_the_head_for_the_labels_in_their_order(tiny_model_dir):
    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    model = heads.load_with_head("AutoModelForTokenClassification", str(tiny_model_dir), labels, None, {}, "")
    assert model.config.num_labels == 4
    assert model.config.id2label == {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}
    assert model.config.label2id == {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3}
    assert model.classifier.out_features == 4
    assert heads.head_modules(model) == ["classifier"]


def test_load_with_head_passes_the_revision_and_options(monkeypatch):
    import transformers

    auto_class, calls = recorder()
    monkeypatch.setattr(transformers, "AutoModelForSequenceClassification", auto_class)
    got = heads.load_with_head("AutoModelForSequenceClassification", "org/model", ["no", "yes"], "abc123",
                               {"torch_dtype": "bfloat16"}, "")
    assert got == "model"
    assert calls == [("org/model", {
        "revision": "abc123", "num_labels": 2, "id2label": {0: "no", 1: "yes"}, "label2id": {"no": 0, "yes": 1},
        "torch_dtype": "bfloat16"})]


def test_a_model_without_the_head_stops_naming_its_kind(monkeypatch):
    import transformers

    class NoHead:
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            raise ValueError("Unrecognized configuration class <class 'T5Config'> for this kind of AutoModel")

    config, calls = recorder(result=type("T5Config", (), {})())
    monkeypatch.setattr(transformers, "AutoModelForTokenClassification", NoHead)
    monkeypatch.setattr(transformers, "AutoConfig", config)
    with pytest.raises(ModelError) as caught:
        heads.load_with_head("AutoModelForTokenClassification", "t5-small", ["O"], "v1", {}, "has no token head")
    assert str(caught.value) == "model 't5-small' (T5Config) has no token head"
    assert calls == [("t5-small", {"revision": "v1"})]


def test_other_value_errors_from_loading_are_not_reworded(monkeypatch):
    import transformers

    class Broken:
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            raise ValueError("something else")

    monkeypatch.setattr(transformers, "AutoModelForTokenClassification", Broken)
    with pytest.raises(ValueError, match="^something else$"):
        heads.load_with_head("AutoModelForTokenClassification", "m", ["O"], None, {}, "")


@pytest.mark.parametrize("kind, auto_class, advice", [
    ("sequence_classification", "AutoModelForSequenceClassification",
     "has no sequence-classification head; use an encoder (BERT, RoBERTa) or a decoder LLM (Llama, Mistral) for "
     "task.kind sequence_classification"),
    ("token_classification", "AutoModelForTokenClassification",
     "has no token-classification head; use an encoder such as BERT, RoBERTa or DeBERTa for task.kind "
     "token_classification"),
])
def test_each_classifier_asks_for_its_head_at_the_pinned_revision_with_its_advice(monkeypatch, kind, auto_class,
                                                                                   advice):
    import importlib

    module = importlib.import_module(f"peftpipe.tasks.{kind}")
    asked = []
    monkeypatch.setattr(heads, "load_with_head", lambda *args: asked.append(args) or "model")
    assert module.load_model("org/model", ["a", "b"], "abc123", dtype="bfloat16") == "model"
    assert asked == [(auto_class, "org/model", ["a", "b"], "abc123", {"dtype": "bfloat16"}, advice)]


@pytest.mark.parametrize("names", [["classifier"], ["score"], ["classifier", "score"], []])
def test_head_modules_are_the_heads_the_model_has(names):
    model = type("Model", (), dict.fromkeys(names, object()))()
    assert heads.head_modules(model) == names


def test_length_sorted_batches_keep_the_dataset_order_among_equal_lengths():
    lengths = np.random.default_rng(0).integers(1, 4, size=300)
    batches = list(heads.length_sorted_batches(lengths, 64, "test"))
    assert [len(b) for b in batches] == [64, 64, 64, 64, 44]
    order = np.concatenate(batches)
    assert order.tolist() == sorted(range(300), key=lambda i: (lengths[i], i))


class _EchoModel:
    """A model whose logits say which example and position they belong to: per position
    (token classification) logits[.., t, :] = the t-th input id; per example, the sum of its
    ids and its length (padding is id 0, so it changes neither)."""

    def __init__(self, per_position: bool, num_labels: int, device: str = "cpu"):
        import torch

        self.per_position, self.num_labels, self.device = per_position, num_labels, torch.device(device)
        self.seen: list = []

    def eval(self):
        self.seen.append("eval")

    def __call__(self, input_ids, attention_mask):
        import torch

        self.seen.append((input_ids.device.type, tuple(input_ids.shape)))
        if input_ids.device.type == "meta":
            return type("Out", (), {"logits": torch.zeros(input_ids.shape[0], self.num_labels)})()
        ids = input_ids.float()
        if self.per_position:
            logits = ids[:, :, None].repeat(1, 1, self.num_labels)
        else:
            logits = torch.stack([ids.sum(1), attention_mask.sum(1).float()], 1)
            logits = torch.cat([logits, torch.zeros(len(ids), self.num_labels - 2)], 1)
        return type("Out", (), {"logits": logits})()


def _features(rows: list[list[int]]):
    import datasets

    return datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})


def _pad(batch):
    import torch

    width = max(len(f["input_ids"]) for f in batch)
    return {key: torch.tensor([f[key] + [0] * (width - len(f[key])) for f in batch])
            for key in ("input_ids", "attention_mask")}


ROWS = [[5, 6, 7], [9], [3, 4], [8, 8, 8, 8], [2]]


def test_per_position_logits_come_back_in_dataset_order_cut_to_each_length(capsys):
    model = _EchoModel(per_position=True, num_labels=2)
    out = heads.predict_in_length_order(model, _features(ROWS), 2, _pad)
    assert [o.shape for o in out] == [(3, 2), (1, 2), (2, 2), (4, 2), (1, 2)]
    assert [o[:, 0].tolist() for o in out] == ROWS
    assert model.seen[0] == "eval"
    # Shortest first, two a batch: [9] [2] | [3, 4] [5, 6, 7] | [8, 8, 8, 8]
    assert model.seen[1:] == [("cpu", (2, 1)), ("cpu", (2, 3)), ("cpu", (1, 4))]
    assert "predict (batches): 3/3" in capsys.readouterr().err


def test_per_example_logits_come_back_whole_in_dataset_order():
    out = heads.predict_in_length_order(_EchoModel(per_position=False, num_labels=5), _features(ROWS), 2, _pad)
    assert [o.tolist() for o in out] == [[sum(r), len(r), 0, 0, 0] for r in ROWS]


def test_batches_go_to_the_device_the_model_is_on():
    model = _EchoModel(per_position=False, num_labels=3, device="meta")
    heads.predict_in_length_order(model, _features(ROWS), 8, _pad)
    assert model.seen[1:] == [("meta", (5, 4))]


# --------------------------------------------------------------------------- token classification's answers


def test_entities_are_served_as_written_with_their_offsets_and_scores():
    from peftpipe.tasks import get_task

    task = get_task("token_classification", ["O", "B-PER", "I-PER"])
    text = "Alice Smith visited Paris"
    output = [{"entity_group": "PER", "score": np.float32(0.987654), "start": 0, "end": 11, "word": "alice smith"},
              {"entity_group": "LOC", "score": 0.5, "start": np.int64(20), "end": np.int64(25), "word": "paris"}]
    answer = task.answer(text, output, tokens=6, limit=4)  # a long text is read in windows: no truncation note
    assert answer == [{"word": "Alice Smith", "type": "PER", "score": 0.9877, "start": 0, "end": 11},
                      {"word": "Paris", "type": "LOC", "score": 0.5, "start": 20, "end": 25}]
    assert all(type(v) in (str, int, float) for span in answer for v in span.values())  # JSON-ready
    assert task.answer_row(text, answer) == {"text": text, "entities": answer}


@pytest.mark.parametrize("max_length, options", [
    (512, {"aggregation_strategy": "first", "stride": 128}),
    (2, {"aggregation_strategy": "first"}),  # a quarter of 2 is no overlap
])
def test_token_classification_reads_long_texts_in_overlapping_windows(max_length, options):
    from peftpipe.tasks import get_task

    task = get_task("token_classification", ["O"])
    assert task.pipeline_options(type("Tokenizer", (), {"model_max_length": max_length})()) == options
    assert task.pipeline_options(None) == {"aggregation_strategy": "first"}


# --------------------------------------------------------------------------- the Task class binding its module


def _protocol_module(monkeypatch, name: str, skip=()):
    """A module with the whole task protocol: each function returns (module, name, args)."""
    import sys
    import types

    from peftpipe.tasks import base

    module = types.ModuleType(name)
    for constant in base.CONSTANTS:
        setattr(module, constant, f"{constant} of {name}")
    for function in (f for f in base.FUNCTIONS + base.OPTIONAL if f not in skip):
        def bound(*args, _function=function):
            return name, _function, args
        bound.__module__ = name
        setattr(module, function, bound)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_a_task_class_binds_its_modules_constants_and_functions(monkeypatch):
    from peftpipe.tasks import base

    _protocol_module(monkeypatch, "fake_task")

    class Fake(base.Task, module="fake_task"):
        kind = "fake"

    task = Fake(["a"])
    assert task.tokenize(1, 2) == ("fake_task", "tokenize", (1, 2))  # a plain function: no self
    assert task.preprocess_logits(3) == ("fake_task", "preprocess_logits", (3,))
    assert Fake.PIPELINE_TAG == "PIPELINE_TAG of fake_task" and task.labels == ["a"]


def test_a_task_module_lacking_part_of_the_protocol_stops_at_import(monkeypatch):
    from peftpipe.tasks import base

    _protocol_module(monkeypatch, "broken_task", skip=("decode", "gold", "sentences_from_word_rows"))
    with pytest.raises(TypeError) as caught:
        class Broken(base.Task, module="broken_task"):
            kind = "broken"
    assert str(caught.value) == "task Broken (broken_task) lacks gold, decode"  # the optional one is not asked for

    class Bare(base.Task):  # no module: nothing bound, nothing checked (an abstract layer)
        kind = "bare"
    assert not hasattr(Bare, "decode")


def test_a_task_keeps_its_parents_functions_unless_its_module_defines_its_own(monkeypatch):
    from peftpipe.tasks import base

    parent = _protocol_module(monkeypatch, "parent_task")

    class Parent(base.Task, module="parent_task"):
        kind = "parent"

    child = _protocol_module(monkeypatch, "child_task", skip=("canonical",))
    child.gold = parent.gold  # imported from the parent's module: not the child's own
    helper = _protocol_module(monkeypatch, "helper_task")
    child.row_keys = helper.row_keys  # imported from elsewhere: the parent's own still serves

    class Child(Parent, module="child_task"):
        kind = "child"

    task = Child([])
    assert task.canonical(1) == ("parent_task", "canonical", (1,))  # the child module lacks it
    assert task.gold(1) == ("parent_task", "gold", (1,))
    assert task.row_keys(1) == ("parent_task", "row_keys", (1,))
    assert task.decode(1) == ("child_task", "decode", (1,))  # its own overrides the parent's
    assert Child.REFERENCE_NAME == "REFERENCE_NAME of child_task"


def test_a_task_shows_its_kind_and_first_labels():
    from peftpipe.tasks import get_task

    assert repr(get_task("sequence_classification", ["neg", "pos"])) == "SequenceClassification(labels=['neg', 'pos'])"
    assert repr(get_task("token_classification", list("OABCDEF"))) == (
        "TokenClassification(labels=['O', 'A', 'B', 'C', 'D']...)")
    assert repr(get_task("generation", list("abcde"))) == "Generation(labels=['a', 'b', 'c', 'd', 'e'])"
    assert repr(get_task("generation", list("abcdef"))) == "Generation(labels=['a', 'b', 'c', 'd', 'e']...)"


def test_a_classifiers_served_row_is_the_input_with_its_answer_and_pairs_only_where_read():
    from peftpipe.tasks import get_task

    task = get_task("sequence_classification", ["neg", "pos"])
    assert task.answer_row("good", {"label": "pos"}) == {"text": "good", "label": "pos"}
    pair = {"text": "a", "text_pair": "b"}
    assert task.answer_row(pair, {"label": "pos"}) == {"text": "a", "text_pair": "b", "label": "pos"}
    assert task.serving_input_problem([pair], "torch") is None
    assert get_task("token_classification").serving_input_problem([pair], "onnx") == (
        "a token classification model reads one text, not pairs; drop --pair")


def test_a_tasks_intervals_are_seeded_with_0_unless_asked():
    from peftpipe.tasks import get_task

    rng = np.random.default_rng(0)
    gold = list(rng.choice(["neg", "pos"], size=80))
    predicted = [g if rng.random() < 0.7 else ("neg" if g == "pos" else "pos") for g in gold]
    task = get_task("sequence_classification", ["neg", "pos"])
    found = task.intervals(gold, predicted, ["neg", "pos"])
    assert found == task.intervals(gold, predicted, ["neg", "pos"], seed=0)
    assert found != task.intervals(gold, predicted, ["neg", "pos"], seed=1)
