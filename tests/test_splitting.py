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
