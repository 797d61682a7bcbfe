"""The fault suite: bad params and bad data, each stopped early with the exact error class
and a one-line message that names the key or file (and what would be valid)."""

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_jsonl

from peftpipe.errors import DataError, ModelError, ParamsError
from peftpipe.methods import get_method
from peftpipe.models import resolve_model
from peftpipe.params import ColumnsParams, DataParams, ModelParams, SplitParams, parse_params
from peftpipe.sources import load_raw
from peftpipe.splitting import make_splits
from peftpipe.tasks import get_task

PARAMS_FAULTS = [
    ({"lora": {"rank": 8}}, "unknown key 'lora.rank' (did you mean 'lora.r'?); valid keys in lora: r, alpha"),
    ({"sed": 1}, "unknown key 'sed' (did you mean 'seed'?)"),
    ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
    ({"lora": {"r": "eight"}}, "lora.r: expected an integer, got 'eight' (str)"),
    ({"lora": {"r": 8.5}}, "lora.r: expected an integer, got 8.5"),
    ({"lora": {"r": 0}}, "lora.r: got 0, expected an integer > 0"),
    ({"lora": {"alpha": 0}}, "lora.alpha: got 0.0, expected a number > 0"),
    ({"lora": {"dropout": 1.0}}, "lora.dropout: got 1.0, expected a number in [0, 1)"),
    ({"lora": {"dropout": -0.1}}, "lora.dropout: got -0.1, expected a number in [0, 1)"),
    ({"lora": {"bias": "some"}}, "lora.bias: expected one of 'none', 'all', 'lora_only', got 'some'"),
    ({"lora": {"target_modules": "query"}}, "lora.target_modules: expected a list of strings"),
    ({"lora": ["r", 8]}, "lora: expected a mapping of its keys (or nothing: its defaults), got ['r', 8]"),
    ({"peft": {"method": "lorra"}}, "peft.method: expected one of 'none', 'lora', 'qlora', 'dora', 'rslora', 'pissa', 'olora', "
                                    "'lora_plus', 'adalora', 'ia3', 'loha', 'lokr', 'vera', 'p_tuning', 'prompt_tuning', 'prefix_tuning', got 'lorra'"),
    ({"peft": {"method": "none", "modules_to_save": ["pooler"]}},
     "peft.modules_to_save: got ['pooler'], expected [] for peft.method none"),
    ({"peft": {"modules_to_save": "pooler"}}, "peft.modules_to_save: expected a list of strings"),
    ({"task": {"kind": "ner"}}, "task.kind: expected one of 'token_classification', 'sequence_classification', 'generation', got 'ner'"),
    ({"train": {"learning_rate": 0}}, "train.learning_rate: got 0.0, expected a number > 0"),
    ({"train": {"epochs": "many"}}, "train.epochs: expected a number, got 'many'"),
    ({"train": {"batch_size": True}}, "train.batch_size: expected an integer, got True"),
    ({"train": {"max_steps": 0}}, "train.max_steps: got 0, expected -1 (use epochs) or an integer > 0"),
    ({"train": {"checkpoint_steps": -5}}, "train.checkpoint_steps: got -5, expected an integer >= 0"),
    ({"train": {"launcher": "mpirun -n 2"}}, "train.launcher: expected one of 'python', 'accelerate', got 'mpirun -n 2'"),
    ({"train": {"launcher": "python -c 'import os'"}}, "train.launcher: expected one of 'python', 'accelerate'"),
    ({"train": {"launcher": "accelerate launch --config_file accelerate/cpu-2proc.yaml"}},
     "train.launcher: got 'accelerate launch --config_file accelerate/cpu-2proc.yaml', expected 'python' or "
     "'accelerate', with the config in train.accelerate_config"),
    ({"train": {"launcher": "accelerate", "accelerate_config": "accelerate/nope.yaml"}},
     "train.accelerate_config: got 'accelerate/nope.yaml', expected a config that exists, e.g. accelerate/cpu-2proc.yaml"),
    ({"train": {"accelerate_config": "../outside.yaml"}},
     "train.accelerate_config: got '../outside.yaml', expected a .yaml file in the project's accelerate/ folder"),
    ({"train": {"accelerate_config": "/etc/accelerate.yaml"}}, "expected a .yaml file in the project's accelerate/"),
    ({"train": {"processes": 0}}, "train.processes: got 0, expected a number > 0"),
    ({"train": {"mixed_precision": "fp8"}}, "train.mixed_precision: expected one of 'no', 'bf16', 'fp16', got 'fp8'"),
    ({"split": {"validation": 0.6, "test": 0.5}}, "split.test: got 0.5, expected validation + test below 1"),
    ({"split": {"validation": 0}}, "split.validation: got 0.0, expected a fraction in (0, 1)"),
    ({"model": {"max_length": 4}}, "model.max_length: got 4, expected an integer >= 8"),
    ({"model": {"source": "web"}}, "model.source: expected one of 'packaged', 'local', 'hub', got 'web'"),
    ({"data": {"source": "local"}}, "data.files: got {}, expected a mapping with at least a 'train' file"),
    # Files with the source left at packaged would train on the packaged data, silently.
    ({"data": {"files": {"train": "inputs/mine.jsonl"}}}, "data.files: got {'train': 'inputs/mine.jsonl'}, expected "
                                                          "no files with data.source packaged (set data.source: local"),
    ({"data": {"source": "local", "files": {"train": "a", "dev": "b"}}}, "data.files.dev: got 'b', expected splits train"),
    ({"data": {"source": "hub", "name": None}}, "data.name: got None, expected a dataset name (data.source is hub)"),
    ({"data": {"format": "xml"}}, "data.format: expected one of 'auto', 'jsonl'"),
    ({"data": {"on_invalid_bio": "maybe"}}, "data.on_invalid_bio: expected one of 'fix', 'reject'"),
    ({"data": {"columns": {"words": "w"}}}, "unknown key 'data.columns.words'; valid keys in data.columns: tokens, tags"),
    ({"eval": {"batch_size": 0}}, "eval.batch_size: got 0, expected an integer > 0"),
    ({"export": {"logits_tolerance": 0}}, "export.logits_tolerance: got 0.0, expected a number > 0"),
    ({"tokenize": {"label_all_tokens": "yes"}}, "tokenize.label_all_tokens: expected true or false"),
    # Rules that tie two sections together.
    ({"task": {"kind": "generation"}, "train": {"loop": "accelerate"}},
     "train.loop: got 'accelerate', expected trainer for task.kind generation"),
    ({"task": {"kind": "generation"}, "train": {"class_weights": "auto"}},
     "train.class_weights: got 'auto', expected none for task.kind generation"),
    ({"split": {"per_class": {"train": 10}}},
     "split.per_class: got {'train': 10}, expected {} unless task.kind is sequence_classification"),
    # Ranges the first suite left out.
    ({"task": {"kind": "sequence_classification"}, "split": {"per_class": {"train": 0}}},
     "split.per_class.train: got 0, expected an integer > 0"),
    ({"task": {"kind": "sequence_classification"}, "split": {"per_class": {"dev": 5}}},
     "split.per_class.dev: got 5, expected splits train, validation, test"),
    ({"prompt": {"encoder_hidden_size": 0}}, "prompt.encoder_hidden_size: got 0, expected an integer > 0"),
    ({"export": {"min_quantized_agreement": 1.5}}, "export.min_quantized_agreement: got 1.5, expected a fraction in [0, 1]"),
    ({"data": {"labels": ["O", "B-X", "O"]}}, "data.labels: got ['O', 'B-X', 'O'], expected each name once (O given twice)"),
    ({"data": {"columns": {"text": []}}}, "data.columns.text: got [], expected a column, or a non-empty list of columns"),
    ({"data": {"labels": {"one": "World"}}}, "data.labels: expected a list of strings or a mapping of integers to strings"),
    ({"train": {"warmup_steps": -1}}, "train.warmup_steps: got -1.0, expected a number >= 0"),
]


@pytest.mark.parametrize(("data", "message"), PARAMS_FAULTS, ids=[m.split(":")[0][:40] for _, m in PARAMS_FAULTS])
def test_bad_params(data, message):
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("params.yaml: ")
    assert message in text


def local(tmp_path: Path, rows=None, raw: bytes | None = None, name="train.jsonl", **kw) -> DataParams:
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    elif rows is not None:
        write_jsonl(path, rows)
    return DataParams(source="local", name=None, files={"train": str(path)}, **kw)


def _hub_folder(tmp_path: Path, *splits: str) -> DataParams:
    """A folder laid out like a hub dataset repository, with only ``splits``."""
    folder = tmp_path / "hub-like" / "data"
    folder.mkdir(parents=True)
    for split in splits:
        pd.DataFrame({"tokens": [["ann", "ran"]] * 3, "tags": [["B-PER", "O"]] * 3}).to_parquet(
            folder / f"{split}-00000-of-00001.parquet")
    return DataParams(source="hub", name=str(tmp_path / "hub-like"))


DATA_FAULTS = {
    "file missing": (lambda t: local(t, name="nope.jsonl"), DataError, "nope.jsonl: file not found"),
    "unknown suffix": (lambda t: local(t, raw=b"x", name="train.xml"), DataError,
                       "train.xml: cannot tell the format from '.xml'; set data.format to one of"),
    "not json": (lambda t: local(t, raw=b'{"tokens": [\n'), DataError, "train.jsonl: line 1: not valid JSON"),
    "not utf-8": (lambda t: local(t, raw=b'{"tokens": ["\xff"], "tags": ["O"]}\n'), DataError,
                  "train.jsonl: line 1 is not valid utf-8 (byte 0xff); set data.encoding"),
    "missing columns": (lambda t: local(t, [{"words": ["a"], "ner": ["O"]}]), DataError,
                        "split 'train': missing column(s) tokens, tags; found words, ner"),
    "renamed column absent": (lambda t: local(t, [{"tokens": ["a"], "tags": ["O"]}],
                                              columns=ColumnsParams(tags="ner_tags")), DataError,
                              "missing column(s) ner_tags; found tokens, tags"),
    "length mismatch": (lambda t: local(t, [{"tokens": ["a", "b"], "tags": ["O"]}]), DataError,
                        "split 'train': row 0: 2 tokens but 1 tags"),
    "blank token": (lambda t: local(t, [{"tokens": ["a", "\t"], "tags": ["O", "O"]}]), DataError,
                    "row 0: token 1 is empty or whitespace"),
    "tag outside label set": (lambda t: local(t, [{"tokens": ["a"], "tags": ["B-DRUG"]}], labels=["O", "B-PER"]),
                              DataError, "split 'train': label(s) B-DRUG not in the label set (O, B-PER)"),
    "I- without B- rejected": (lambda t: local(t, [{"tokens": ["a", "b"], "tags": ["O", "I-PER"]}],
                                               on_invalid_bio="reject"), DataError,
                               "row 0: tag I-PER at token 1 does not continue an entity"),
    "only empty rows": (lambda t: local(t, [{"tokens": [], "tags": []}]), DataError, "split 'train': no non-empty rows"),
    "train file in a missing folder": (lambda t: DataParams(source="local", name=None,
                                                            files={"train": str(t / "gone" / "x.jsonl")}),
                                       DataError, "x.jsonl: file not found"),
    "no train split": (lambda t: _hub_folder(t, "validation", "test"), DataError,
                       "hub data: no 'train' split (found validation, test)"),
    "conll line without a tag": (lambda t: local(t, raw=b"EU B-ORG\nrejects\n", name="train.conll"), DataError,
                                 "train.conll: line 2: expected 'token ... tag' columns"),
    "unknown packaged dataset": (lambda t: DataParams(name="wnut17"), DataError,
                                 "data.name: unknown packaged dataset 'wnut17'; known: wnut16"),
}


@pytest.mark.parametrize("case", sorted(DATA_FAULTS))
def test_bad_data(tmp_path, case):
    make, error, message = DATA_FAULTS[case]
    with pytest.raises(error) as err:
        load_raw(make(tmp_path))
    assert type(err.value) is error and "\n" not in str(err.value)
    assert message in str(err.value)


def test_empty_source_split():
    frame = pd.DataFrame({"tokens": [["a"]] * 5, "tags": [["O"]] * 5})
    with pytest.raises(DataError, match="split 'validation' is empty"):
        make_splits({"train": frame, "validation": frame.iloc[:0]}, SplitParams())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (ModelParams(name="bert-tiny"), "model.name: unknown packaged model 'bert-tiny'; known: all-MiniLM-L6-v2"),
        (ModelParams(source="local", name="/nonexistent/model"), "'/nonexistent/model' is not a folder with a config.json"),
    ],
)
def test_bad_model_reference(model, message):
    with pytest.raises(ModelError) as err:
        resolve_model(model)
    assert message in str(err.value)


def test_modules_to_save_must_name_modules_of_the_model(tiny_model_dir):
    from transformers import AutoModelForTokenClassification

    from peftpipe import adapters

    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=3)
    params = parse_params({"peft": {"modules_to_save": ["pooler"]}}, "params.yaml")
    # A token-classification BERT has no pooler: say so, and list what it has.
    with pytest.raises(ModelError, match=r"peft.modules_to_save: \['pooler'\] not in BertForTokenClassification "
                                         r"\(its modules: bert, dropout, classifier"):
        adapters.wrap(model, get_method(params.peft.method), get_task(params.task.kind), params)


def test_launcher_config_is_found_from_the_params_files_folder(tmp_path, monkeypatch):
    """`peftpipe check` gives the same answer wherever it runs: train.accelerate_config is
    relative to the project (the params file's folder), not to the working directory."""
    from peftpipe.params import load_params

    (tmp_path / "accelerate").mkdir()
    (tmp_path / "accelerate/two.yaml").write_text("num_processes: 2\n")
    (tmp_path / "params.yaml").write_text("train:\n  launcher: accelerate\n  accelerate_config: accelerate/two.yaml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_params(tmp_path / "params.yaml").train.accelerate_config == "accelerate/two.yaml"
    (tmp_path / "accelerate/two.yaml").unlink()
    with pytest.raises(ParamsError, match="a config that exists"):
        load_params(tmp_path / "params.yaml")
