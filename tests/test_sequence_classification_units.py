"""Sequence classification's parts one at a time, without training: reading a table's
labels (names, ids, true/false, mistakes named by row), the data report, tokenization
with its truncation count, predictions and their rows, the scores with the positive class,
and the served answer. tests/test_sequence_classification.py runs them through the stages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from peftpipe.errors import DataError
from peftpipe.params import ColumnsParams, DataParams, parse_params
from peftpipe.tasks import get_task
from peftpipe.tasks import sequence_classification as sc

LABELS = ["not_equivalent", "equivalent"]


def data(text="text", text_pair=None, label="label") -> DataParams:
    return DataParams(source="local", files={"train": "x"},
                      columns=ColumnsParams(text=text, text_pair=text_pair, label=label))


# --------------------------------------------------------------------------- reading labels


def test_canonical_joins_text_columns_keeps_groups_and_drops_empty_texts():
    frame = pd.DataFrame({"title": ["EU talks", " ", "Oil", None], "body": ["resume", " ", "rises ", "x"],
                          "y": ["World", "World", "Business", "Sports"], "group": [7, 7, 8, 9]})
    out, repaired = sc.canonical(frame, data(text=["title", "body"], label="y"), {}, "news.csv")
    assert repaired == 0
    assert list(out.columns) == ["text", "label", "group"]
    assert out.to_dict("list") == {"text": ["EU talks resume", "Oil rises", "x"], "label": ["World", "Business", "Sports"],
                                   "group": [7, 8, 9]}


def test_canonical_drops_a_pair_whose_second_text_is_empty():
    frame = pd.DataFrame({"a": ["x", "y"], "b": ["p", ""], "label": ["s", "t"]})
    out, _ = sc.canonical(frame, data(text="a", text_pair="b"), {}, "pairs.csv")
    assert out.to_dict("list") == {"text": ["x"], "text_pair": ["p"], "label": ["s"]}


def test_canonical_names_missing_columns_and_what_it_found():
    frame = pd.DataFrame({"sentence": ["a"], "class": ["b"]})
    with pytest.raises(DataError) as caught:
        sc.canonical(frame, data(text_pair="other"), {}, "f.csv")
    assert str(caught.value) == ("f.csv: missing column(s) text, label, other; found sentence, class (set "
                                 "data.columns.text / data.columns.text_pair / data.columns.label)")


def test_canonical_names_the_first_row_without_a_label():
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", None, None]})
    with pytest.raises(DataError) as caught:
        sc.canonical(frame, data(), {}, "f.csv")
    assert str(caught.value) == "f.csv: row 1 has no label (2 of 3 rows have none); give those rows a class or remove them"


def test_canonical_names_the_row_and_column_of_a_bad_text_or_label():
    frame = pd.DataFrame({"title": ["a", ["b"]], "y": ["World", "World"]})
    with pytest.raises(DataError) as caught:
        sc.canonical(frame, data(text="title", label="y"), {}, "f.csv")
    assert str(caught.value) == "f.csv: row 1: title is a list, expected a string"
    frame = pd.DataFrame({"title": ["a", "b"], "y": ["World", 2]})
    with pytest.raises(DataError, match=r"^f.csv: row 1: label 2 is an id, but other rows give names"):
        sc.canonical(frame, data(text="title", label="y"), {}, "f.csv")


@pytest.mark.parametrize("values, labels, names", [
    ([True, False, np.bool_(True)], {}, ["true", "false", "true"]),
    (["pos ", " neg"], {}, ["pos", "neg"]),
    ([1, 0, 2.0, np.int64(1)], {0: "a", 1: "b", 2: "c"}, ["b", "a", "c", "b"]),
    (["World", "Sports"], {}, ["World", "Sports"]),
    (["1", "2"], {}, ["1", "2"]),  # digits throughout are names (a CSV of class names that are numbers)
    (["World", "X1"], {}, ["World", "X1"]),  # a name with digits in it is a name
])
def test_labels_are_names_ids_or_true_false(values, labels, names):
    assert sc._label_names(values, labels, "f.csv") == names


@pytest.mark.parametrize("values, message", [
    (["World", 2], "f.csv: row 1: label 2 is an id, but other rows give names; use class names, or ids into "
                   "data.labels, throughout"),
    ([2, "World"], "f.csv: row 1: label 'World' is a name, but other rows give ids; use class names, or ids into "
                   "data.labels, throughout"),
    (["World", "Sports", "+1"], "f.csv: row 2: label '+1' is a number, but other rows give names ('World'); use "
                                "class names, or ids into data.labels, throughout"),
    (["+1", "-2", "X5", "World"], "f.csv: row 0: label '+1' is a number, but other rows give names ('X5'); use "
                                  "class names, or ids into data.labels, throughout"),
    (["World", 2.5], "f.csv: row 1: label 2.5 is not a class name or id (a fraction)"),
    (["World", [1]], "f.csv: row 1: label [1] is not a class name or id (a list)"),
    (["World", True], "f.csv: row 1: label True is not a class name or id (true/false)"),
    (["World", "  "], "f.csv: row 1 has no label (only spaces)"),
])
def test_a_bad_label_stops_naming_its_row(values, message):
    with pytest.raises(DataError) as caught:
        sc._label_names(values, {0: "World"}, "f.csv")
    assert str(caught.value) == message


def test_ids_without_data_labels_say_to_list_the_names():
    with pytest.raises(DataError, match=r"^f.csv: labels are integer ids; list the class names in id order"):
        sc._label_names([0, 1], {}, "f.csv")


def test_row_keys_default_labels_and_hub_names():
    single = pd.DataFrame({"text": ["a", "b"], "label": ["y", "x"]})
    pairs = pd.DataFrame({"text": ["a", "b"], "text_pair": ["c", "d"], "label": ["x", "z"]})
    assert sc.row_keys(single) == ["a", "b"] and sc.row_keys(pairs) == [("a", "c"), ("b", "d")]
    assert sc.label_values(pairs) == {"x", "z"}
    assert sc.default_labels({"train": single, "test": pairs}) == ["x", "y", "z"]
    features = {"label": SimpleNamespace(names=["neg", "pos"]), "text": object()}
    assert sc.hub_label_names(features, data()) == ["neg", "pos"]
    assert sc.hub_label_names(features, data(label="text")) == []  # a column without class names
    assert sc.hub_label_names({}, data()) == []


def test_data_report_counts_classes_repeats_and_classes_train_lacks():
    splits = {"train": pd.DataFrame({"text": ["a", "b", "c"], "label": ["y", "x", "y"]}),
              "test": pd.DataFrame({"text": ["a", "d", "a", "e"], "label": ["y", "z", "y", "w"]})}
    assert sc.data_report(splits) == {
        "train": {"rows": 3, "classes": {"x": 1, "y": 2}},
        "test": {"rows": 4, "classes": {"w": 1, "y": 2, "z": 1}, "rows_also_in_train": 2,
                 "classes_missing_from_train": ["w", "z"]}}
    assert sc.data_report({"test": splits["test"]})["test"]["rows_also_in_train"] == 0


# --------------------------------------------------------------------------- model inputs


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_tokenize_cuts_to_max_length_and_counts_what_was_cut(tokenizer, capsys, datasets_progress_bars):
    frame = pd.DataFrame({"text": ["alice visited paris", "bob " * 20, "carol"], "label": ["x", "y", "x"]},
                         index=[4, 9, 11])  # as a filter leaves it
    tokenizer.model_max_length = 12  # the length before the cut is counted past the tokenizer's own limit too
    dataset = sc.tokenize(frame, tokenizer, ["y", "x"], parse_params({"model": {"max_length": 8}}))
    assert set(dataset.column_names) == {"text", "label", "input_ids", "token_type_ids", "attention_mask", "labels",
                                         "full_length"}
    assert [len(ids) for ids in dataset["input_ids"]] == [5, 8, 3]
    assert dataset["full_length"] == [5, 22, 3] and dataset["labels"] == [1, 0, 1]
    assert sc.truncation(dataset) == {"rows": 3, "rows_cut": 1, "tokens_cut": 14}
    assert "tokenize: 100%" in capsys.readouterr().err
    assert sc.gold(dataset) == ["x", "y", "x"] and sc.train_label_ids(dataset) == [1, 0, 1]
    assert sc.model_inputs(dataset).column_names == ["input_ids", "attention_mask", "token_type_ids", "labels"]


def test_truncation_counts_a_row_one_token_over():
    dataset = {"full_length": [4, 5, 9], "input_ids": [[0] * 4, [0] * 4, [0] * 4]}
    assert sc.truncation(dataset) == {"rows": 3, "rows_cut": 2, "tokens_cut": 6}


def test_the_collator_pads_a_batch_and_the_model_gets_a_sequence_head(tokenizer, tiny_model_dir):
    batch = sc.collator(tokenizer)([{"input_ids": [2, 5, 3]}, {"input_ids": [2, 3]}])
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    model = sc.load_model(str(tiny_model_dir), LABELS)
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.id2label == dict(enumerate(LABELS))
    assert sc.peft_task_type(model) == "SEQ_CLS" and sc.head_modules(model) == ["classifier"]


def test_predict_logits_returns_one_row_of_class_logits_per_example(tokenizer, tiny_model_dir):
    frame = pd.DataFrame({"text": ["alice visited paris", "bob", "carol met bob at acme"], "label": LABELS + LABELS[:1]})
    dataset = sc.tokenize(frame, tokenizer, LABELS, parse_params({"model": {"max_length": 16}}))
    model = sc.load_model(str(tiny_model_dir), LABELS)
    logits = sc.predict_logits(model, dataset, 2, sc.collator(tokenizer), LABELS)
    assert [row.shape for row in logits] == [(2,)] * 3
    import torch

    with torch.inference_mode():
        alone = model(**sc.collator(tokenizer)([{"input_ids": dataset[2]["input_ids"]}])).logits[0].numpy()
    np.testing.assert_allclose(logits[2], alone, atol=1e-5)


# --------------------------------------------------------------------------- predictions


def test_decode_takes_each_rows_argmax_class():
    assert sc.decode([np.array([0.1, 0.9]), np.array([2.0, -1.0])], None, LABELS) == ["equivalent", "not_equivalent"]


def test_pipeline_input_is_the_text_or_the_pair():
    assert sc.pipeline_input({"text": "a", "text_pair": "b"}) == {"text": "a", "text_pair": "b"}
    assert sc.pipeline_input({"text": "a", "text_pair": ""}) == "a"
    assert sc.pipeline_input({"text": "a"}) == "a"


def test_prediction_rows_carry_the_texts_gold_and_predicted():
    import datasets

    pairs = datasets.Dataset.from_dict({"text": ["a", "b"], "text_pair": ["c", "d"], "label": ["x", "y"]})
    assert sc.prediction_rows(pairs, ["y", "y"]) == [
        {"text": "a", "text_pair": "c", "gold": "x", "predicted": "y"},
        {"text": "b", "text_pair": "d", "gold": "y", "predicted": "y"}]
    single = datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]})
    assert sc.prediction_rows(single, ["x"]) == [{"text": "a", "gold": "x", "predicted": "x"}]
    assert sc.confusion_rows(["x", "y"], ["y", "y"]) == [{"actual": "x", "predicted": "y"},
                                                        {"actual": "y", "predicted": "y"}]


def test_the_reference_predicts_the_train_majority_for_every_row():
    assert sc.reference_predictions(["a", "b", "b", "c"], ["x"] * 3) == ["b", "b", "b"]


# --------------------------------------------------------------------------- scores


def test_binary_scores_report_the_second_labels_f1_and_every_class():
    gold = ["equivalent", "equivalent", "not_equivalent", "not_equivalent", "equivalent"]
    predicted = ["equivalent", "not_equivalent", "not_equivalent", "equivalent", "equivalent"]
    metrics = sc.compute_metrics(gold, predicted, LABELS)
    # equivalent: precision 2/3, recall 2/3; not_equivalent: precision 1/2, recall 1/2
    assert metrics["overall"] == pytest.approx({
        "accuracy": 0.6, "balanced_accuracy": (2 / 3 + 1 / 2) / 2, "f1": 2 / 3, "macro_precision": (2 / 3 + 1 / 2) / 2,
        "macro_recall": (2 / 3 + 1 / 2) / 2, "macro_f1": (2 / 3 + 1 / 2) / 2})
    assert metrics["per_class"]["not_equivalent"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert metrics["per_class"]["equivalent"]["support"] == 3 and metrics["examples"] == 5


def test_three_classes_report_macro_f1_as_f1():
    metrics = sc.compute_metrics(["a", "b", "c", "c"], ["a", "b", "b", "c"], ["a", "b", "c"])["overall"]
    assert metrics["f1"] == metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_a_class_absent_from_a_split_scores_zero_and_counts_in_the_macro_average():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no undefined-metric warnings: an empty class is scored 0, quietly
        metrics = sc.compute_metrics(["a", "b", "b"], ["a", "a", "b"], ["a", "b", "c"])
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["overall"]["macro_precision"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert metrics["overall"]["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_scoring_an_empty_split_stops():
    with pytest.raises(DataError, match="^cannot score an empty split$"):
        sc.compute_metrics([], [], LABELS)


def test_validation_scores_during_training_come_from_the_logits():
    compute = sc.trainer_metrics(LABELS)
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    scores = compute((logits, np.array([1, 1, 1, 0])))
    assert scores == pytest.approx({"f1": 0.8, "accuracy": 0.75, "balanced_accuracy": (2 / 3 + 1) / 2})


def test_the_task_names_its_positive_class_and_serving_answer():
    task = get_task("sequence_classification", LABELS)
    assert task.positive_index(LABELS) == 1 and task.positive_index(["a", "b", "c"]) is None
    assert task.pipeline_options(None) == {"truncation": True, "top_k": None}
    assert task.answer("t", {"label": "x", "score": 0.123456}, tokens=16, limit=16) == {
        "label": "x", "score": 0.1235, "truncated": False}
    assert task.answer("t", {"label": "x", "score": 0.5}, tokens=17, limit=16) == {
        "label": "x", "score": 0.5, "truncated": True, "truncated_at_tokens": 16}
    ranked = [{"label": "b", "score": 0.71234}, {"label": "a", "score": 0.28766}]
    assert task.answer("t", ranked, tokens=3, limit=16) == {
        "label": "b", "score": 0.7123, "scores": {"b": 0.7123, "a": 0.2877}, "truncated": False}
