from pathlib import Path

import pytest

from peftpipe.errors import ParamsError
from peftpipe.params import Params, leaves, load_params, nest

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_are_valid_and_match_the_schema_defaults():
    # params.yaml is the embedded default; the schema's defaults describe the same recipe.
    assert load_params(ROOT / "params.yaml") == Params()


# The table of bad params (each naming its key) is in tests/test_faults.py.


def test_yaml_1_2_floats_as_dvc_writes_them(tmp_path):
    # `dvc exp run -S train.learning_rate=1e-3` writes 1e-3, a string in YAML 1.1.
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  learning_rate: 1e-3\nlora:\n  alpha: 32\n")
    params = load_params(path)
    assert params.train.learning_rate == pytest.approx(1e-3)
    assert params.lora.alpha == 32.0


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora: [r: 1\n")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_leaves_are_dotted_keys_down_to_the_schemas_sections_and_nest_undoes_them():
    tree = {"lora": {"r": 8, "target_modules": ["query"]}, "seed": 3,
            "data": {"files": {"train": "a.csv"}, "labels": {1: "World"}, "columns": {"label": "y"}},
            "unknown": {"k": 1}}
    flat = leaves(tree)
    assert flat == {"lora.r": 8, "lora.target_modules": ["query"], "seed": 3, "data.files": {"train": "a.csv"},
                    "data.labels": {1: "World"}, "data.columns.label": "y", "unknown": {"k": 1}}
    assert nest(flat) == tree
