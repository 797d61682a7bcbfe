import pandas as pd
import pytest

from peftpipe.errors import DataError
from peftpipe.params import SplitParams
from peftpipe.splitting import make_splits
from peftpipe.tasks.token_classification import data_report


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"tokens": [[f"w{i}"] for i in range(n)], "tags": [["B-X"] for _ in range(n)]})


def test_carves_missing_splits_seeded_and_disjoint():
    raw = {"train": frame(100)}
    first = make_splits(raw, SplitParams(seed=1, validation=0.1, test=0.2))
    again = make_splits(raw, SplitParams(seed=1, validation=0.1, test=0.2))
    other = make_splits(raw, SplitParams(seed=2, validation=0.1, test=0.2))
    assert {k: len(v) for k, v in first.items()} == {"train": 70, "validation": 10, "test": 20}
    for name in first:
        assert first[name].equals(again[name])
    assert not first["test"].equals(other["test"])
    words = [set(first[n]["tokens"].str[0]) for n in ("train", "validation", "test")]
    assert not (words[0] & words[1] or words[0] & words[2] or words[1] & words[2])
    assert set.union(*words) == {f"w{i}" for i in range(100)}


def test_keeps_the_splits_the_source_has():
    raw = {"train": frame(50), "test": frame(7)}
    splits = make_splits(raw, SplitParams(validation=0.2, test=0.1))
    assert len(splits["test"]) == 7
    assert len(splits["validation"]) == 10 and len(splits["train"]) == 40


def test_empty_split_is_an_error():
    with pytest.raises(DataError, match="split 'test' is empty"):
        make_splits({"train": frame(10), "test": frame(0)}, SplitParams())


def test_report_counts_entities_per_type():
    df = pd.DataFrame({"tokens": [["a", "b", "c"]], "tags": [["B-PER", "I-PER", "B-LOC"]]})
    assert data_report({"train": df}) == {"train": {"rows": 1, "tokens": 3, "entities": {"LOC": 1, "PER": 1}}}


def test_report_flags_leakage_and_types_unseen_in_train():
    train = pd.DataFrame({"tokens": [["a", "b"], ["c"]], "tags": [["B-PER", "O"], ["O"]]})
    test = pd.DataFrame({"tokens": [["a", "b"], ["d"]], "tags": [["B-PER", "O"], ["B-ORG"]]})
    report = data_report({"train": train, "test": test})["test"]
    assert report["rows_also_in_train"] == 1
    assert report["types_missing_from_train"] == ["ORG"]


def test_group_by_keeps_every_group_on_one_side(tmp_path):
    import random

    rng = random.Random(0)
    groups = [f"user{g}" for g in range(60) for _ in range(rng.randint(1, 9))]
    frame = pd.DataFrame({"tokens": [[f"w{i}"] for i in range(len(groups))], "tags": [["O"]] * len(groups),
                          "group": groups})
    splits = make_splits({"train": frame}, SplitParams(validation=0.1, test=0.2, group_by="group"))
    sides = {name: set(part["group"]) for name, part in splits.items()}
    assert not sides["train"] & sides["validation"] and not sides["train"] & sides["test"]
    assert not sides["validation"] & sides["test"]
    assert sum(len(part) for part in splits.values()) == len(frame)
    assert 0.2 * len(frame) <= len(splits["test"]) < 0.2 * len(frame) + 9  # whole groups: up to one more
    again = make_splits({"train": frame}, SplitParams(validation=0.1, test=0.2, group_by="group"))
    assert all(again[name].equals(splits[name]) for name in splits)  # seeded


def test_conll_documents_stay_whole_with_group_by_document(tmp_path):
    from peftpipe.params import DataParams
    from peftpipe.sources import load_raw

    lines = []
    for document in range(20):
        lines.append("-DOCSTART- -X- O O\n")
        for sentence in range(3):
            lines.append(f"d{document}s{sentence} B-PER\nsaid O\n\n")
    path = tmp_path / "train.conll"
    path.write_text("".join(lines))
    raw = load_raw(DataParams(source="local", name=None, files={"train": str(path)}), group_by="document")
    train = raw.splits["train"]
    assert len(train) == 60 and train["group"].nunique() == 20
    splits = make_splits(raw.splits, SplitParams(validation=0.1, test=0.1, group_by="document"))
    for name, part in splits.items():
        documents = {word[0].split("s")[0] for word in part["tokens"]}
        assert len(part) == 3 * len(documents), name  # every sentence of a document, or none
    assert len(splits["test"]) == 6 and len(splits["validation"]) == 6


def test_on_leakage_drop_removes_repeated_rows_and_fail_stops():
    from peftpipe.errors import DataError
    from peftpipe.splitting import handle_leakage, repeated_rows
    from peftpipe.tasks import token_classification as tc

    train = pd.DataFrame({"tokens": [["a"], ["b"], ["c"]], "tags": [["O"]] * 3})
    test = pd.DataFrame({"tokens": [["b"], ["d"], ["a"]], "tags": [["O"]] * 3})
    splits = {"train": train, "validation": test.iloc[1:2].reset_index(drop=True), "test": test}
    repeated = repeated_rows(splits, tc.row_keys)
    assert repeated == {"validation": [], "test": [0, 2]}
    assert handle_leakage(splits, repeated, "warn") is splits
    dropped = handle_leakage(splits, repeated, "drop")
    assert [list(t) for t in dropped["test"]["tokens"]] == [["d"]] and len(dropped["train"]) == 3
    assert list(dropped["test"].columns) == ["tokens", "tags"] and list(dropped["test"].index) == [0]
    with pytest.raises(DataError, match=r"split 'test': 2 of 3 rows repeat a train row \(first: row 0\)"):
        handle_leakage(splits, repeated, "fail")


def test_on_leakage_drop_that_empties_a_split_stops():
    from peftpipe.errors import DataError
    from peftpipe.splitting import handle_leakage, repeated_rows
    from peftpipe.tasks import token_classification as tc

    train = pd.DataFrame({"tokens": [["a"], ["b"]], "tags": [["O"]] * 2})
    splits = {"train": train, "validation": train.iloc[:1].copy(), "test": train.copy()}
    with pytest.raises(DataError, match="split 'validation': every row repeats a train row"):
        handle_leakage(splits, repeated_rows(splits, tc.row_keys), "drop")


def test_carved_classification_splits_keep_each_class_share_unless_told_not_to():
    import numpy as np

    labels = np.repeat(["a", "b", "c", "d"], [400, 400, 400, 100])
    train = pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))], "label": labels})
    stratified = make_splits({"train": train}, SplitParams())
    for name in ("validation", "test"):
        assert stratified[name]["label"].value_counts().to_dict() == {"a": 40, "b": 40, "c": 40, "d": 10}
    assert len(stratified["train"]) == 1040 and not set(stratified["test"]["text"]) & set(stratified["train"]["text"])
    again = make_splits({"train": train}, SplitParams())
    assert all(again[name].equals(stratified[name]) for name in stratified)  # seeded
    plain = make_splits({"train": train}, SplitParams(stratify=False))
    assert plain["test"]["label"].value_counts().to_dict() != {"a": 40, "b": 40, "c": 40, "d": 10}


def test_a_class_with_exactly_the_rows_asked_for_is_taken_whole_once_and_not_short():
    from peftpipe.splitting import balance_per_class

    train = pd.DataFrame({"text": [f"row {i}" for i in range(16)], "label": ["a", "b"] * 8})
    balanced, short = balance_per_class({"train": train}, SplitParams(per_class={"train": 8}))
    assert short == {}
    assert list(balanced["train"].columns) == ["text", "label"]  # no index column left behind
    assert balanced["train"]["text"].tolist() == train["text"].tolist()  # every row once, in source order


def test_groups_are_shuffled_whole_and_each_keeps_its_rows_in_order():
    import numpy as np

    from peftpipe.splitting import _group_order

    rows = pd.DataFrame({"group": ["d1", "d2", "d3", "d1", "d2", "d3", "d1"]})  # interleaved in the file
    order = _group_order(rows, np.random.default_rng(0)).tolist()
    assert sorted(order) == list(range(7))
    for name in ("d1", "d2", "d3"):
        positions = [i for i in order if rows["group"].iat[i] == name]
        assert positions == sorted(positions)
        first, last = order.index(positions[0]), order.index(positions[-1])
        assert last - first == len(positions) - 1  # together


def test_given_splits_come_back_renumbered_without_an_index_column():
    given = frame(5).set_axis([10, 11, 12, 13, 14])  # as a filter in download leaves a frame
    splits = make_splits({"train": frame(40), "test": given}, SplitParams(validation=0.1))
    for name, rows in (("test", 5), ("validation", 4), ("train", 36)):  # given, carved, what is left
        assert list(splits[name].columns) == ["tokens", "tags"] and list(splits[name].index) == list(range(rows))


def test_a_tiny_fraction_still_carves_one_row():
    splits = make_splits({"train": frame(10)}, SplitParams(validation=0.01, test=0.01))
    assert (len(splits["validation"]), len(splits["test"]), len(splits["train"])) == (1, 1, 8)


def test_a_carved_split_grows_to_the_end_of_the_group_it_cuts():
    train = frame(40).assign(group=[i // 4 for i in range(40)])  # ten groups of four
    splits = make_splits({"train": train}, SplitParams(validation=0.125, test=0.1))  # 5 rows -> 8; 4 rows -> 4
    assert (len(splits["validation"]), len(splits["test"]), len(splits["train"])) == (8, 4, 28)
    sides = [set(splits[name]["group"]) for name in ("train", "validation", "test")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


def test_a_group_split_that_takes_every_row_leaves_an_empty_split_and_says_so():
    train = frame(8).assign(group=[0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(DataError, match=r"^split '(train|test)' is empty \(8 train rows to carve from\)$"):
        make_splits({"train": train}, SplitParams(validation=0.75, test=0.1))
