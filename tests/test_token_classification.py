import numpy as np
import pandas as pd
import pytest

from peftpipe.params import parse_params
from peftpipe.tasks import token_classification as tc

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_align_labels_first_subword_and_specials():
    # [CLS] jo ##hn lives in par ##is [SEP]
    word_ids = [None, 0, 0, 1, 2, 3, 3, None]
    word_labels = [1, 0, 0, 3]  # B-PER O O B-LOC
    cont = tc.continuation_labels(LABELS)
    assert tc.align_labels(word_ids, word_labels, False, cont) == [-100, 1, -100, 0, 0, 3, -100, -100]
    # course's align_labels_with_tokens: continuation of B-X is I-X
    assert tc.align_labels(word_ids, word_labels, True, cont) == [-100, 1, 2, 0, 0, 3, 4, -100]


def test_continuation_keeps_b_when_no_i_tag_exists():
    assert tc.continuation_labels(["O", "B-X", "B-Y", "I-Y"]) == [0, 1, 3, 3]


def test_seqeval_reproduces_the_course_example():
    # The NER chapter scores the first CoNLL sentence with one MISC tag dropped.
    gold = [["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]]
    pred = [["B-ORG", "O", "O", "O", "O", "O", "B-MISC", "O", "O"]]
    metrics = tc.compute_metrics(gold, pred)
    assert metrics["overall"]["precision"] == 1.0
    assert metrics["overall"]["f1"] == pytest.approx(0.8)
    assert metrics["overall"]["accuracy"] == pytest.approx(0.8889, abs=1e-4)
    assert metrics["per_type"]["MISC"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}


def test_decode_uses_first_subword_and_truncated_words_are_o():
    dataset = {"word_ids": [[-1, 0, 0, 1, -1]], "tags": [["B-PER", "O", "B-LOC"]]}
    logits = np.full((5, len(LABELS)), -1.0)
    logits[1, 1] = 5  # word 0 first sub-word: B-PER
    logits[2, 3] = 5  # continuation: ignored
    logits[3, 0] = 5  # word 1: O; word 2 was truncated
    assert tc.decode([logits], dataset, LABELS) == [["B-PER", "O", "O"]]


def test_tokenize_aligns_real_rows(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = pd.DataFrame({"tokens": [["alice", "visited", "paris"]], "tags": [["B-PER", "O", "B-LOC"]]})
    ds = tc.tokenize(frame, tokenizer, LABELS, parse_params({"model": {"max_length": 16}}))
    row = ds[0]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"]) == ["[CLS]", "alice", "visited", "paris", "[SEP]"]
    assert row["word_ids"] == [-1, 0, 1, 2, -1]
    assert row["labels"] == [-100, 1, 0, 3, -100]
    assert row["tags"] == ["B-PER", "O", "B-LOC"]


def test_a_model_without_a_token_head_is_refused(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from peftpipe.errors import ModelError

    config = CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                              num_attention_heads=2, image_size=8, patch_size=4)
    CLIPVisionModel(config).save_pretrained(tmp_path / "clip")
    with pytest.raises(ModelError, match=r"\(CLIPVisionConfig\) has no token-classification head"):
        tc.load_model(str(tmp_path / "clip"), LABELS)


def test_word_rows_become_sentences_in_file_order():
    """One word a row (Kaggle's ner_dataset.csv): a blank sentence cell continues the
    sentence above, a name seen again later starts a new sentence, `group` keeps its first value."""
    from peftpipe.errors import DataError
    from peftpipe.params import ColumnsParams

    frame = pd.DataFrame({"s": ["a", None, " ", "b", "a", ""], "w": list("uvwxyz"),
                          "t": ["O", "B-X", "I-X", "O", "O", "B-Y"], "group": ["g1", "g2", "g3", "g4", "g5", "g6"]})
    columns = ColumnsParams(tokens="w", tags="t", sentence="s")
    out = tc.sentences_from_word_rows(frame, columns, "f.csv")
    assert out["w"].tolist() == [["u", "v", "w"], ["x"], ["y", "z"]]
    assert out["t"].tolist() == [["O", "B-X", "I-X"], ["O"], ["O", "B-Y"]]
    assert out["group"].tolist() == ["g1", "g4", "g5"] and out.index.tolist() == [0, 1, 2]
    assert "group" not in tc.sentences_from_word_rows(frame.drop(columns="group"), columns, "f.csv")
    with pytest.raises(DataError, match=r"^f\.csv: row 0 names no sentence in 's', and no row above does$"):
        tc.sentences_from_word_rows(frame.assign(s=[None, "a", "a", "b", "b", "b"]), columns, "f.csv")
    with pytest.raises(DataError, match=r"^f\.csv: missing column\(s\) s, t; found w \(set data\.columns\.sentence / "
                                        r"data\.columns\.tokens / data\.columns\.tags\)$"):
        tc.sentences_from_word_rows(frame[["w"]], columns, "f.csv")


def test_truncation_counts_the_rows_and_words_a_max_length_cut():
    dataset = {"tokens": [["a", "b", "c"], ["a", "b", "c", "d", "e"], ["a", "b"]],
               "word_ids": [[0, 1, 2], [0, 0, 1, 2], [0, 1]]}  # the second lost its last two words
    assert tc.truncation(dataset) == {"rows": 3, "rows_cut": 1, "words_cut": 2}
    assert tc.truncation({"tokens": [["a", "b"]], "word_ids": [[0]]}) == {"rows": 1, "rows_cut": 1, "words_cut": 1}


def test_confusion_rows_are_word_level_entity_types():
    gold = [["B-PER", "I-PER", "O"], ["B-LOC"]]
    predicted = [["B-PER", "B-LOC", "O"], ["O"]]
    assert tc.confusion_rows(gold, predicted) == [
        {"actual": "PER", "predicted": "PER"}, {"actual": "PER", "predicted": "LOC"},
        {"actual": "O", "predicted": "O"}, {"actual": "LOC", "predicted": "O"}]
    assert tc.confusion_rows([["I-MISC", "b-x"]], [["B-MISC", "O"]]) == [
        {"actual": "MISC", "predicted": "MISC"}, {"actual": "b-x", "predicted": "O"}]  # only B-/I- are prefixes


def test_tokenize_cuts_at_max_length_and_labels_continuations_when_asked(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = pd.DataFrame({"tokens": [["alices", "visited", "paris"]], "tags": [["B-PER", "O", "B-LOC"]]})

    def row(**params):
        return tc.tokenize(frame, tokenizer, LABELS, parse_params(params))[0]

    every = row(model={"max_length": 16}, tokenize={"label_all_tokens": True})
    assert tokenizer.convert_ids_to_tokens(every["input_ids"]) == ["[CLS]", "alice", "##s", "visited", "paris", "[SEP]"]
    assert every["labels"] == [-100, 1, 2, 0, 3, -100]  # B-PER's continuation is I-PER
    assert row(model={"max_length": 16})["labels"] == [-100, 1, -100, 0, 3, -100]
    long = pd.DataFrame({"tokens": [["alices", "visited", "paris", "and", "london", "went", "to", "berlin"]],
                         "tags": [["B-PER", "O", "B-LOC", "O", "B-LOC", "O", "O", "B-LOC"]]})
    cut = tc.tokenize(long, tokenizer, LABELS, parse_params({"model": {"max_length": 8}}))
    assert cut[0]["word_ids"] == [-1, 0, 0, 1, 2, 3, 4, -1] and cut[0]["labels"] == [-100, 1, -100, 0, 3, 0, 3, -100]
    assert tc.truncation(cut) == {"rows": 1, "rows_cut": 1, "words_cut": 3}


def test_tag_schemes_become_iob2():
    from peftpipe.errors import DataError

    assert tc.to_iob2(["PER", "PER", "O", "LOC", "LOC", "ORG", "PER"], "io", "f") == \
        ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-ORG", "B-PER"]
    assert tc.to_iob2(["B-PER", "I-PER", "O", "I-LOC"], "io", "f") == ["B-PER", "I-PER", "O", "B-LOC"]
    assert tc.to_iob2(["PER", "B-PER", "LOC", "I-LOC"], "io", "f") == ["B-PER", "B-PER", "B-LOC", "I-LOC"]  # B- starts one
    assert tc.to_iob2(["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "U-ORG", "B-X", "L-X"], "bioes", "f") == \
        ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-ORG", "B-X", "I-X"]
    assert tc.to_iob2(["B-PER", "O"], "iob2", "f") == ["B-PER", "O"]
    with pytest.raises(DataError, match=r"^f: tag 'PER' at token 1 has no B-/I- prefix \(data\.tag_scheme is iob2\); "
                                        r"set data\.tag_scheme: io if the tags are bare entity types"):
        tc.to_iob2(["O", "PER"], "iob2", "f")


def test_entity_scores_name_every_type_and_refuse_an_empty_split():
    from peftpipe.errors import DataError

    scores = tc.compute_metrics([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])
    assert scores["overall"]["f1"] == pytest.approx(2 / 3) and scores["overall"]["macro_f1"] == pytest.approx(0.5)
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # 0, not a warning
    assert set(scores["per_type"]) == {"PER", "LOC"}
    with pytest.raises(DataError, match=r"^cannot score an empty split$"):
        tc.compute_metrics([], [])
