from pathlib import Path

import pytest

from peftpipe.errors import ParamsError
from peftpipe.params import Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_are_valid_and_match_the_schema_defaults():
    # params.yaml is the embedded default; the schema's defaults describe the same recipe.
    assert load_params(ROOT / "params.yaml") == Params()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lora": {"rank": 8}}, "unknown key 'lora.rank' (did you mean 'lora.r'?); valid keys in lora: r, alpha"),
        ({"lora": {"r": "eight"}}, "lora.r: expected an integer, got 'eight' (str)"),
        ({"lora": {"r": 0}}, "lora.r: got 0, expected an integer > 0"),
        ({"lora": {"r": 8.5}}, "lora.r: expected an integer, got 8.5"),
        ({"lora": {"dropout": 1.0}}, "lora.dropout: got 1.0, expected a number in [0, 1)"),
        ({"lora": {"bias": "some"}}, "lora.bias: expected one of 'none', 'all', 'lora_only', got 'some'"),
        ({"peft": {"method": "lorra"}}, "peft.method: expected one of 'none', 'lora', got 'lorra'"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate: got -1.0, expected a number > 0"),
        ({"train": {"batch_size": True}}, "train.batch_size: expected an integer, got True"),
        ({"split": {"validation": 0.6, "test": 0.5}}, "split.test: got 0.5, expected validation + test below 1"),
        ({"data": {"source": "local"}}, "data.files: got {}, expected a mapping with at least a 'train' file"),
        ({"data": {"source": "local", "files": {"train": "a", "dev": "b"}}}, "data.files.dev"),
        ({"model": {"max_length": "long"}}, "model.max_length: expected an integer, got 'long'"),
        ({"sed": 1}, "unknown key 'sed' (did you mean 'seed'?)"),
        ({"tokenize": {"label_all_tokens": "yes"}}, "tokenize.label_all_tokens: expected true or false"),
        ({"lora": ["r", 8]}, "lora: expected LoraParams, got ['r', 8]"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(data, message):
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("params.yaml: ")
    assert message in text


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
