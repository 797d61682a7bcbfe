"""Token classification's parts that tests/test_token_classification.py leaves loose, one at
a time: one-word-a-row files, the label order, the data report, tokenization's columns, the
model's head, predictions' rows, the all-O reference and the scores' keys."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from peftpipe.errors import DataError
from peftpipe.params import ColumnsParams, parse_params
from peftpipe.tasks import token_classification as tc

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_word_rows_become_sentences_with_only_the_token_and_tag_columns():
    frame = pd.DataFrame({"Sentence #": ["Sentence: 1", None, "Sentence: 2"], "Word": ["EU", "rejects", "Peter"],
                          "Tag": ["B-ORG", "O", "B-PER"]})
    columns = ColumnsParams(sentence="Sentence #", tokens="Word", tags="Tag")
    out = tc.sentences_from_word_rows(frame, columns, "ner.csv")
    assert list(out.columns) == ["Word", "Tag"] and list(out.index) == [0, 1]
    assert out.to_dict("list") == {"Word": [["EU", "rejects"], ["Peter"]], "Tag": [["B-ORG", "O"], ["B-PER"]]}
    with pytest.raises(DataError) as caught:
        tc.sentences_from_word_rows(frame.drop(columns="Tag"), columns, "ner.csv")
    assert str(caught.value) == ("ner.csv: missing column(s) Tag; found Sentence #, Word (set data.columns.sentence / "
                                 "data.columns.tokens / data.columns.tags)")


def test_labels_are_o_then_each_type_with_b_before_i():
    splits = {"train": pd.DataFrame({"tags": [["B-PER", "I-PER", "O"], ["B-LOC"]]}),
              "test": pd.DataFrame({"tags": [["I-LOC", "B-MISC"]]})}
    assert tc.default_labels(splits) == ["O", "B-LOC", "I-LOC", "B-MISC", "B-PER", "I-PER"]


def test_hub_tag_names_come_from_a_sequence_of_class_labels_only():
    data = SimpleNamespace(columns=SimpleNamespace(tags="ner_tags"))
    tagged = {"ner_tags": SimpleNamespace(feature=SimpleNamespace(names=["O", "B-PER"]))}
    assert tc.hub_label_names(tagged, data) == ["O", "B-PER"]
    assert tc.hub_label_names({"ner_tags": SimpleNamespace()}, data) == []  # a column of plain values
    assert tc.hub_label_names({}, data) == []


def test_data_report_counts_entities_repeats_and_types_train_lacks():
    train = pd.DataFrame({"tokens": [["EU", "rejects"], ["Peter"]], "tags": [["B-ORG", "O"], ["B-PER"]]})
    test = pd.DataFrame({"tokens": [["EU", "rejects"], ["Paris"], ["Peter"]], "tags": [["B-ORG", "O"], ["B-LOC"],
                                                                                      ["B-PER"]]})
    report = tc.data_report({"train": train, "test": test})
    assert report["train"] == {"rows": 2, "tokens": 3, "entities": {"ORG": 1, "PER": 1}}
    assert report["test"] == {"rows": 3, "tokens": 4, "entities": {"LOC": 1, "ORG": 1, "PER": 1},
                              "rows_also_in_train": 2, "types_missing_from_train": ["LOC"]}
    alone = tc.data_report({"test": test})["test"]  # no train split: nothing repeats, every type is missing
    assert alone["rows_also_in_train"] == 0 and alone["types_missing_from_train"] == ["LOC", "ORG", "PER"]


def test_tokenize_keeps_no_index_column_and_names_its_progress(tiny_model_dir, capsys, datasets_progress_bars):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = pd.DataFrame({"tokens": [["alice", "visited", "paris"]], "tags": [["B-PER", "O", "B-LOC"]]}, index=[7])
    dataset = tc.tokenize(frame, tokenizer, LABELS, parse_params({"model": {"max_length": 16}}))
    assert set(dataset.column_names) == {"tokens", "tags", "input_ids", "token_type_ids", "attention_mask", "labels",
                                         "word_ids"}
    assert "tokenize: 100%" in capsys.readouterr().err


def test_prediction_rows_the_pipelines_input_and_the_all_o_reference():
    dataset = {"tokens": [["EU", "rejects"]], "tags": [["B-ORG", "O"]]}
    assert tc.prediction_rows(dataset, [["O", "O"]]) == [
        {"tokens": ["EU", "rejects"], "gold": ["B-ORG", "O"], "predicted": ["O", "O"]}]
    assert tc.pipeline_input({"tokens": ["EU", "rejects", "it"]}) == "EU rejects it"
    assert tc.reference_predictions([], [["B-ORG", "O"], ["B-PER"]]) == [["O", "O"], ["O"]]


def test_a_type_never_predicted_scores_zero_quietly_and_the_examples_are_counted():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seqeval's undefined-metric warning would reach the stage's output
        metrics = tc.compute_metrics([["B-PER", "O"], ["B-LOC"]], [["B-PER", "O"], ["O"]])
    assert metrics["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["examples"] == 2


def test_validation_scores_during_training_are_entity_scores_of_the_labelled_sub_words():
    compute = tc.trainer_metrics(LABELS)
    logits = np.zeros((1, 4, len(LABELS)))
    logits[0, [0, 1, 2, 3], [0, 3, 4, 1]] = 1  # predicted: O B-PER I-PER B-LOC
    label_ids = np.array([[-100, 3, -100, 3]])  # gold: B-PER at 1, B-PER at 3; 0 and 2 are not scored
    assert compute((logits, label_ids)) == {"f1": 0.5, "precision": 0.5, "recall": 0.5}


def ner_data(**data):
    from peftpipe.params import DataParams

    return DataParams(source="local", files={"train": "x"}, **data)


@pytest.mark.parametrize("tokens, tags, message", [
    ("EU rejects", ["O", "O"], "f.jsonl: row 1: tokens is a string, expected a list (a whitespace split here would "
                               "hide mistakes: write the list in the file)"),
    (["EU", ["rejects"]], ["O", "O"], "f.jsonl: row 1: token 1 is a list, expected a word"),
    (["EU", "rejects"], None, "f.jsonl: row 1: tags is null"),
    (["EU", "rejects"], ["O", {"t": 1}], "f.jsonl: row 1: tag 1 is an object, expected a tag"),
    (["EU", "rejects"], [0, "B-PER"], "f.jsonl: row 1: tag 1 ('B-PER') is a name, but tag 0 is an id; use tag names, "
                                      "or ids into data.labels"),
    (["EU", "rejects", "it"], ["O", "O", 3], "f.jsonl: row 1: tag 2 (3) is an id, but tag 0 is a name; use tag names, "
                                             "or ids into data.labels"),
    (["EU", "rejects"], [0, 9], "f.jsonl: row 1: tag id 9 is outside data.labels (ids 0-1)"),
    (["EU", "rejects"], ["ORG", "O"], "f.jsonl: row 1: tag 'ORG' at token 0 has no B-/I- prefix (data.tag_scheme is "
                                      "iob2); set data.tag_scheme: io if the tags are bare entity types, bioes for "
                                      "S-/E- (or U-/L-) tags"),
])
def test_a_bad_row_stops_naming_the_row_the_field_and_what_is_wrong(tokens, tags, message):
    frame = pd.DataFrame({"tokens": [["Peter"], tokens], "tags": [[0], tags]})
    with pytest.raises(DataError) as caught:
        tc.canonical(frame, ner_data(labels=["O", "B-PER"]), {0: "O", 1: "B-PER"}, "f.jsonl")
    assert str(caught.value) == message


def test_one_column_for_words_and_tags_is_refused_naming_the_columns():
    frame = pd.DataFrame({"words": [["EU"]], "ner": [["O"]]})
    with pytest.raises(DataError) as caught:
        tc.canonical(frame, ner_data(columns={"tokens": "ner", "tags": "ner"}), {}, "f.jsonl")
    assert str(caught.value) == ("f.jsonl: data.columns.tokens and data.columns.tags both name 'ner'; found words, ner: "
                                 "which holds the words, which the tags?")


def test_class_weights_count_the_labelled_sub_words_only():
    assert tc.train_label_ids({"labels": [[-100, 1, 2, -100], [0, -100]]}) == [1, 2, 0]


def test_lower_case_prefixes_are_read_and_the_rows_counted():
    frame = pd.DataFrame({"tokens": [["EU", "rejects"], ["Peter"], ["Paris"]],
                          "tags": [["b-org", "o"], ["B-PER"], [" B-LOC "]]})
    out, repaired = tc.canonical(frame, ner_data(), {}, "f.jsonl")
    assert out["tags"].tolist() == [["B-org", "O"], ["B-PER"], ["B-LOC"]] and repaired == 0
    assert out.attrs["recased_tag_rows"] == 1  # download says so; trimmed spaces are not a rewrite


@pytest.mark.parametrize("tag, normal", [("b-per", "B-per"), ("o", "O"), ("O", "O"), ("per", "per"), ("i-LOC", "I-LOC"),
                                         (" s-x ", "S-x"), ("Per", "Per")])
def test_only_a_scheme_prefix_is_upper_cased(tag, normal):
    assert tc.normal_tag(tag) == normal
