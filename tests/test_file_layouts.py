"""Files as users bring them: other separators, encodings, trailing separators, spaces
around class names, CoNLL laid out in a .tsv, tag columns named anything, BIOES/BILOU tags.
`peftpipe init` must infer params that read them right, and the download path must then
give the classes and rows the file holds: never a silent shift, split or merge of classes.
No model is needed: this is reading only."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftpipe.errors import DataError
from peftpipe.params import load_params, parse_params
from peftpipe.sources import load_raw
from peftpipe.tools.infer import infer

ROOT = Path(__file__).resolve().parents[1]


def read_back(path: Path, **init_options):
    """init's inference, then the download stage's reading with the params it wrote."""
    inferred = infer([path], **init_options)
    params = load_params(ROOT / "params.yaml").model_dump()
    params["task"]["kind"] = inferred.task
    params["data"].update(inferred.data)
    data = parse_params(params).data
    return inferred, load_raw(data, inferred.task)


def classes_and_rows(raw) -> tuple[list[str], int]:
    frame = raw.splits["train"]
    return sorted(frame["label"].unique()), len(frame)


# ---------------------------------------------------------------------- generated tables

names = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu")), min_size=2, max_size=6)


@st.composite
def classification_files(draw):
    """A labelled table written the ways spreadsheets and scripts write them."""
    classes = draw(st.lists(names, min_size=2, max_size=4, unique_by=str.casefold))
    rows = draw(st.lists(st.tuples(st.sampled_from(classes), st.lists(names, min_size=1, max_size=5)),
                         min_size=8, max_size=30))
    for label in classes:  # every class appears
        rows.append((label, ["extra", "words"]))
    separator = draw(st.sampled_from([",", ";", "|", "\t"]))
    suffix = ".tsv" if separator == "\t" and draw(st.booleans()) else ".csv"
    trailing = draw(st.booleans())  # a separator after the last field of every line
    spaced = draw(st.booleans())  # "pos " as some tools write the class
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text_first = draw(st.booleans())
    lines = [separator.join(["text", "label"] if text_first else ["label", "text"]) + (separator if trailing else "")]
    for label, words in rows:
        fields = [" ".join(words), f"{label} " if spaced else label]
        lines.append(separator.join(fields if text_first else fields[::-1]) + (separator if trailing else ""))
    content = newline.join(lines) + newline
    return suffix, content.encode(encoding), sorted(classes), len(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(classification_files())
def test_a_labelled_table_reads_back_with_its_classes_and_rows_however_it_is_written(tmp_path_factory, drawn):
    suffix, content, classes, rows = drawn
    path = tmp_path_factory.mktemp("layout") / f"train{suffix}"
    path.write_bytes(content)
    inferred, raw = read_back(path)
    assert inferred.task == "sequence_classification"
    assert classes_and_rows(raw) == (classes, rows), inferred.said


# ---------------------------------------------------------------------- named layouts


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_a_trailing_separator_does_not_shift_the_columns(tmp_path):
    """pandas takes one field more than the header to mean an index column: every value
    moved one column left, and the class column read empty."""
    path = write(tmp_path, "train.csv", "text,label\n" + "good day,pos,\nbad day,neg,\n" * 10)
    _, raw = read_back(path)
    assert classes_and_rows(raw) == (["neg", "pos"], 20)
    assert set(raw.splits["train"]["text"]) == {"good day", "bad day"}


def test_a_semicolon_csv_with_commas_in_its_texts(tmp_path):
    path = write(tmp_path, "train.csv", "text;label\n" + "good, fine day;pos\nbad day;neg\n" * 10)
    inferred, raw = read_back(path)
    assert inferred.data["separator"] == ";" and "fields separated by ';'" in inferred.said[0]
    assert set(raw.splits["train"]["text"]) == {"good, fine day", "bad day"}


def test_a_utf16_file_is_read_by_its_byte_order_mark(tmp_path):
    path = write(tmp_path, "train.csv", ("text,label\n" + "café au lait,pos\nnaïve,neg\n" * 10).encode("utf-16"))
    _, raw = read_back(path)
    assert "café au lait" in set(raw.splits["train"]["text"])


def test_true_false_labels_are_two_classes(tmp_path):
    path = write(tmp_path, "train.csv", "text,spam\n" + "win money,true\nhello mum,false\n" * 10)
    _, raw = read_back(path)
    assert classes_and_rows(raw) == (["false", "true"], 20)


def test_a_tsv_laid_out_as_conll_is_read_as_token_lists(tmp_path):
    """Read as a table, every word became a row classified by its tag."""
    path = write(tmp_path, "train.tsv", "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\n\n" * 5 + "Peter\tB-PER\nBlackburn\tI-PER\n")
    inferred, raw = read_back(path)
    assert inferred.task == "token_classification" and inferred.data["format"] == "conll"
    assert len(raw.splits["train"]) == 6 and raw.splits["train"]["tokens"][0] == ["EU", "rejects", "German"]


@pytest.mark.parametrize("columns", [("tokens", "ner_tags"), ("words", "labels"), ("a", "b")])
def test_the_tag_column_is_found_whatever_it_is_called(tmp_path, columns):
    """Two list columns with as many distinct values each: the tags were taken for the words."""
    words, tags = columns
    rows = [{words: ["EU", "rejects"], tags: ["B-ORG", "O"]}, {words: ["Bonn", "said"], tags: ["B-LOC", "O"]}] * 5
    path = write(tmp_path, "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    inferred, raw = read_back(path)
    assert inferred.data["columns"] == {"tokens": words, "tags": tags}
    assert raw.labels == ["O", "B-LOC", "B-ORG"] or sorted(raw.labels) == ["B-LOC", "B-ORG", "O"]


@pytest.mark.parametrize("scheme", ["bioes", "bilou"])
def test_bioes_and_bilou_tags_are_recognised_and_converted(tmp_path, scheme):
    single, end = ("S-", "E-") if scheme == "bioes" else ("U-", "L-")
    path = write(tmp_path, "train.conll", f"EU {single}ORG\nvisits O\nNew B-LOC\nYork {end}LOC\n\n" * 6)
    inferred, raw = read_back(path)
    assert inferred.data["tag_scheme"] == "bioes" and "2 entity types: LOC, ORG" in inferred.said
    assert raw.splits["train"]["tags"][0] == ["B-ORG", "O", "B-LOC", "I-LOC"]


@pytest.mark.parametrize("content, expect", [
    ("text,label\n", "no rows (only a header row)"),
    ("text,label\n" + "hello,pos\n" * 12, "one class only ('pos', every row)"),
])
def test_init_stops_on_a_file_with_nothing_to_learn(tmp_path, content, expect):
    with pytest.raises(DataError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        infer([write(tmp_path, "train.csv", content)])


def test_the_same_column_for_words_and_tags_is_one_clear_error(tmp_path):
    path = write(tmp_path, "train.jsonl", json.dumps({"tokens": ["EU"], "tags": ["B-ORG"]}) + "\n")
    params = load_params(ROOT / "params.yaml").model_dump()
    params["data"].update(source="local", name=None, files={"train": str(path)},
                          columns={"tokens": "tokens", "tags": "tokens"})
    with pytest.raises(DataError, match="both name 'tokens'"):
        load_raw(parse_params(params).data, "token_classification")


def test_class_names_that_differ_only_in_case_are_flagged():
    from peftpipe.sources import look_alikes

    assert look_alikes(["Pos", "neg", "pos", "NEG", "neutral"]) == [["Pos", "pos"], ["neg", "NEG"]]
    assert look_alikes(["B-ORG", "I-ORG", "O"]) == []
    # Invisible characters and inner whitespace: one class to a reader, two to the model.
    assert look_alikes(["PER", "PER\u200b", "LOC"]) == [["PER", "PER\u200b"]]
    assert look_alikes(["New York", "New  York", "new\tyork", "\ufeffYork", "York"]) == [
        ["New York", "New  York", "new\tyork"], ["\ufeffYork", "York"]]


def test_a_separator_param_must_be_one_plain_character():
    params = load_params(ROOT / "params.yaml").model_dump()
    for bad in (";;", "a", "\n"):
        params["data"]["separator"] = bad
        with pytest.raises(Exception, match="data.separator"):
            parse_params(params)
    assert codecs.lookup("utf-16")  # the encodings the generated files use exist


def test_lower_case_tag_prefixes_are_read_as_tags(tmp_path):
    """seqeval reads only B-/I-: b-org was scored as an entity type named 'b-org'."""
    path = write(tmp_path, "train.conll", "EU b-org\nrejects o\nthe o\nUnited i-org\n\n" * 6)
    _, raw = read_back(path)
    assert raw.splits["train"]["tags"][0] == ["B-org", "O", "O", "B-org"]


def test_words_that_pandas_would_read_as_missing_stay_words(tmp_path):
    """"null", "NA", "None" and "nan" are texts (and class names) like any other."""
    path = write(tmp_path, "train.csv", "text,label\n" + "null,NA\nNone,nan\nhello,NA\n" * 8)
    _, raw = read_back(path)
    assert classes_and_rows(raw) == (["NA", "nan"], 24)
    assert {"null", "None"} <= set(raw.splits["train"]["text"])


def test_a_line_with_a_field_too_many_stops_naming_it(tmp_path):
    """An empty trailing field is dropped; a real extra value must not be, silently."""
    path = write(tmp_path, "train.tsv", "text\tlabel\n" + "a day\tpos\n" * 5 + "a\tb\tneg\n" + "c\tneg\n" * 5)
    with pytest.raises(DataError, match="line 7: expected 2 fields, saw 3"):
        read_back(path)


def test_rows_under_one_key_of_a_json_object_are_the_rows(tmp_path):
    rows = [{"text": f"text {i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    path = write(tmp_path, "train.json", json.dumps({"data": rows}))
    _, raw = read_back(path)
    assert classes_and_rows(raw) == (["neg", "pos"], 20)


def test_a_multi_label_column_is_named_as_such(tmp_path):
    path = write(tmp_path, "train.jsonl", "".join(json.dumps({"text": f"t {i}", "label": ["a", "b"][: 1 + i % 2]}) + "\n"
                                                  for i in range(20)))
    with pytest.raises(DataError, match="multi-label classification is not supported"):
        infer([path])


def test_conllu_comment_lines_are_not_tokens(tmp_path):
    path = write(tmp_path, "train.conll", "# sent_id = 1\n# text = EU rejects\nEU B-ORG\nrejects O\n\n" * 5
                 + "# O\nis O\n\n")  # a hashtag token stays a token
    _, raw = read_back(path)
    assert raw.splits["train"]["tokens"][0] == ["EU", "rejects"] and raw.splits["train"]["tokens"][5] == ["#", "is"]


def test_a_headerless_file_whose_first_label_is_y_keeps_its_first_row(tmp_path):
    path = write(tmp_path, "train.csv", "a great film,y\n" + "dull and long,n\nloved it,y\n" * 10)
    inferred, raw = read_back(path)
    assert "no header row" in inferred.said[0] and classes_and_rows(raw) == (["n", "y"], 21)


def test_bytes_that_only_look_like_a_utf16_mark_say_why_they_were_read_so(tmp_path):
    path = write(tmp_path, "train.csv", b"\xff\xfetext,label\n")  # odd length: not UTF-16 after all
    with pytest.raises(DataError, match="read as utf-16: it starts with that byte-order mark"):
        infer([path])


def test_init_counts_classes_as_the_download_reads_them(tmp_path):
    """"pos " and "pos" are one class to the download stage: init says 2 classes, not 4."""
    path = write(tmp_path, "train.csv", "text,label\n" + "".join(f"text {i},{'pos' if i % 2 else 'neg'}"
                                                                 f"{' ' if i % 3 == 0 else ''}\n" for i in range(30)))
    inferred, raw = read_back(path)
    assert "2 classes: neg (15), pos (15)" in inferred.said and classes_and_rows(raw) == (["neg", "pos"], 30)


@pytest.mark.parametrize("labels, expect", [
    ([1, "0"] * 10, r"mixes ids and names \(row 0: 1, row 1: '0'\)"),
    (["pos", None, "neg", None] * 5, r"empty in 10 of 20 rows \(first: row 1\)"),
])
def test_init_asks_about_a_class_column_the_download_would_refuse(tmp_path, labels, expect):
    """Ids mixed with names, rows without a class: init stops with the question, not a
    TypeError from sorting ints with strings, nor params that fail in the download stage."""
    rows = [{"text": f"text {i}", "label": label} for i, label in enumerate(labels)]
    path = write(tmp_path, "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=expect):
        infer([path])


def test_objects_and_constant_columns_are_not_texts(tmp_path):
    """A nested `meta` field and a column with one value throughout are not a second text."""
    rows = [{"text": f"text {i}", "label": "pos" if i % 2 else "neg", "meta": {"source": "web", "ids": [i]},
             "batch": "2024-01"} for i in range(20)]
    inferred, raw = read_back(write(tmp_path, "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows)))
    assert inferred.data["columns"]["text"] == "text" and classes_and_rows(raw) == (["neg", "pos"], 20)


def test_a_header_naming_a_column_twice_stops_naming_it(tmp_path):
    """pandas would call the second one text.1 and init would ask about two text columns."""
    path = write(tmp_path, "train.csv", "text,text,label\n" + "a,b,pos\nc,d,neg\n" * 10)
    with pytest.raises(DataError, match="names column 'text' twice \\(fields 1 and 2\\)"):
        read_back(path)


@pytest.mark.parametrize("name, compress", [
    ("train.jsonl.gz", "gzip"), ("train.csv.bz2", "bz2"), ("train.tsv.xz", "lzma"), ("train.conll.gz", "gzip"),
    ("train.parquet.gz", "gzip"),
])
def test_a_compressed_file_is_read_as_what_it_holds(tmp_path, name, compress):
    import importlib

    rows = [(f"text number {i}", "pos" if i % 2 else "neg") for i in range(20)]
    inner = name.rsplit(".", 1)[0].split(".", 1)[1]
    content = {"jsonl": "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows),
               "csv": "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows),
               "tsv": "text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows),
               "conll": "EU B-ORG\nrejects O\n\n" * 10, "parquet": ""}[inner].encode()
    if inner == "parquet":
        import io

        import pandas as pd

        buffer = io.BytesIO()
        pd.DataFrame(rows, columns=["text", "label"]).to_parquet(buffer)
        content = buffer.getvalue()
    inferred, raw = read_back(write(tmp_path, name, importlib.import_module(compress).compress(content)))
    if inner == "conll":
        assert raw.splits["train"]["tokens"][0] == ["EU", "rejects"] and len(raw.splits["train"]) == 10
    else:
        assert inferred.task == "sequence_classification" and classes_and_rows(raw) == (["neg", "pos"], 20)


def test_a_file_not_compressed_as_its_name_says_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl.gz: not a valid gz file .*is it compressed as its name says"):
        infer([write(tmp_path, "train.jsonl.gz", '{"text": "a", "label": "b"}\n')])


def test_ner_written_as_strings_is_named_as_such(tmp_path):
    """Words and tags as space-separated strings: not a classification with no class column."""
    rows = [{"tokens": "EU rejects German call", "tags": "B-ORG O B-MISC O"}] * 12
    with pytest.raises(DataError, match="'tokens' and 'tags' look like NER data written as strings"):
        infer([write(tmp_path, "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows))])


def test_a_conll_file_written_tag_first_is_not_read_as_words_for_tags(tmp_path):
    """Read as the io scheme, every word would have become an entity type, silently."""
    path = write(tmp_path, "train.conll", "B-ORG EU\nO rejects\nB-MISC German\nO call\n\n" * 10)
    with pytest.raises(DataError, match="the last column should hold the NER tags.*the first column reads as tags"):
        infer([path])


def test_a_tag_with_a_prefix_and_no_type_stops(tmp_path):
    path = write(tmp_path, "train.jsonl", json.dumps({"tokens": ["EU", "rejects"], "tags": ["B-", "O"]}) + "\n")
    params = load_params(ROOT / "params.yaml").model_dump()
    params["data"].update(source="local", name=None, files={"train": str(path)})
    with pytest.raises(DataError, match=r"row 0: tag 0 \('B-'\) has no entity type after its prefix"):
        load_raw(parse_params(params).data, "token_classification")
    with pytest.raises(DataError, match=r"tag 'B-' has no entity type after its prefix"):
        infer([path])


HEADER = "Sentence #,Word,POS,Tag\n"
SENTENCES = "Sentence: {0},EU,NNP,B-org\n,rejects,VBZ,O\n,German,JJ,B-gpe\nSentence: {1},Peter,NNP,B-per\n,Blackburn,NNP,I-per\n"
KAGGLE = HEADER + "".join(SENTENCES.format(2 * i, 2 * i + 1) for i in range(6))


def test_one_word_per_row_is_grouped_into_sentences(tmp_path):
    """Kaggle's ner_dataset.csv layout: the sentence named on its first word only."""
    inferred, raw = read_back(write(tmp_path, "train.csv", KAGGLE))
    assert inferred.task == "token_classification"
    assert inferred.data["columns"] == {"tokens": "Word", "tags": "Tag", "sentence": "Sentence #"}
    train = raw.splits["train"]
    assert len(train) == 12 and raw.meta["dropped_empty_rows"]["train"] == 0
    assert list(train["tokens"][0]) == ["EU", "rejects", "German"] and list(train["tags"][1]) == ["B-per", "I-per"]


def test_a_text_per_row_named_sentence_stays_a_classification(tmp_path):
    """GLUE's SST-2 writes `sentence,label`: one text and one class per row, not words."""
    path = write(tmp_path, "train.csv", "sentence,label\n" + "".join(f"a film {i} I liked,{i % 2}\n" for i in range(30)))
    inferred, _ = read_back(path)
    assert inferred.task == "sequence_classification" and inferred.data["columns"]["text"] == "sentence"


def test_a_first_word_row_without_its_sentence_stops(tmp_path):
    path = write(tmp_path, "train.csv", HEADER + ",EU,NNP,B-org\n" + KAGGLE[len(HEADER):])
    params = load_params(ROOT / "params.yaml").model_dump()
    params["data"].update(source="local", name=None, files={"train": str(path)},
                          columns={"tokens": "Word", "tags": "Tag", "sentence": "Sentence #"})
    with pytest.raises(DataError, match="row 0 names no sentence in 'Sentence #', and no row above does"):
        load_raw(parse_params(params).data, "token_classification")


@pytest.mark.parametrize("layout", ["columns", "index", "split", "records", "json lines"])
def test_json_as_pandas_and_datasets_write_it(tmp_path, layout):
    """DataFrame.to_json's orients (columns is its default) and datasets' to_json, which
    writes one object per line into a .json file."""
    import pandas as pd

    frame = pd.DataFrame({"text": [f"text number {i}" for i in range(20)], "label": ["pos", "neg"] * 10})
    text = frame.to_json(orient="records", lines=True) if layout == "json lines" else frame.to_json(orient=layout)
    _, raw = read_back(write(tmp_path, "train.json", text))
    assert classes_and_rows(raw) == (["neg", "pos"], 20)
    assert list(raw.splits["train"]["text"][:2]) == ["text number 0", "text number 1"]


def test_a_json_line_ending_in_a_comma_says_so(tmp_path):
    path = write(tmp_path, "train.jsonl", "".join(json.dumps({"text": f"t {i}", "label": "a"}) + ",\n" for i in range(5)))
    with pytest.raises(DataError, match="line 1: not valid JSON .*a comma after the object"):
        infer([path])


def test_a_class_column_with_a_value_per_row_is_questioned(tmp_path):
    path = write(tmp_path, "train.csv", "text,label\n" + "".join(f"text {i},L{i}\n" for i in range(30)))
    with pytest.raises(DataError, match="'label' has 30 different values in 30 rows"):
        infer([path])
