"""Any input a user brings either works or stops with one clear line.

Each case writes a malformed input (a params file, a data file in each supported format, a
model folder, an export, predict's stdin), runs the real command in this process (a stage
script, or the `peftpipe` CLI) and asserts: exit code 2, exactly one `error:` line on stderr
that names the file or key (and the line/row where it applies), no traceback, and no output
left behind that the next stage would take as valid. The "silently wrong" inputs either
convert as documented (checked on the written data) or stop.
"""

from __future__ import annotations

import json
import runpy
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROOT, make_sentences, stage_args

from peftpipe.cli import main as cli

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
NER_ROWS = make_sentences(40, seed=3)
TOPIC_ROWS = [{"text": f"{w} news item {i}", "label": ["World", "Sports"][i % 2]}
              for i, w in enumerate(["alice", "bob", "paris", "acme"] * 10)]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv(rows) -> str:
    return pd.DataFrame(rows).to_csv(index=False)


def parquet(tmp: Path, rows) -> bytes:
    pd.DataFrame(rows).to_parquet(tmp / "x.parquet", index=False)
    data = (tmp / "x.parquet").read_bytes()
    (tmp / "x.parquet").unlink()
    return data


@dataclass
class Case:
    """files: path -> content (str, bytes, a callable of the folder, or None for a folder).
    data: overrides of the data section (the rest: local files, token classification)."""

    expect: str | list[str]
    files: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    command: str = "download"  # a stage, or check / predict
    args: list = field(default_factory=list)
    stdin: bytes | None = None
    before: tuple = ()  # stages that must succeed first


def ner(name="train.jsonl", **data) -> dict:
    return {"files": {"train": name}, **data}


def topic(name="train.csv", **data) -> dict:
    return {"files": {"train": name}, **data}


TOPIC = {"task": {"kind": "sequence_classification"}}

DATA_CASES = {
    # ---- files that are not what their name says
    "train file is a folder": Case("train.jsonl: is a folder, not a file", {"train.jsonl/part-0.jsonl": jsonl(NER_ROWS)}, ner()),
    "empty csv": Case("train.csv: the file is empty", {"train.csv": ""}, topic(), TOPIC),
    "empty parquet": Case("train.parquet: the file is empty", {"train.parquet": b""}, topic("train.parquet"), TOPIC),
    "empty jsonl": Case("train.jsonl: the file is empty", {"train.jsonl": ""}, ner()),
    "whitespace-only jsonl": Case("train.jsonl: no rows", {"train.jsonl": "\n\n  \n"}, ner()),
    "header-only csv": Case("train.csv: no rows", {"train.csv": "text,label\n"}, topic(), TOPIC),
    "empty conll": Case("train.conll: no rows", {"train.conll": "\n\n"}, ner("train.conll")),
    "conll of DOCSTART only": Case("train.conll: no rows", {"train.conll": "-DOCSTART- O\n\n"}, ner("train.conll")),
    "LFS pointer parquet": Case("train.parquet: is a Git LFS pointer", {"train.parquet": LFS_POINTER},
                                topic("train.parquet"), TOPIC),
    "LFS pointer csv": Case("train.csv: is a Git LFS pointer", {"train.csv": LFS_POINTER}, topic(), TOPIC),
    "LFS pointer jsonl": Case("train.jsonl: is a Git LFS pointer", {"train.jsonl": LFS_POINTER}, ner()),
    "garbage parquet": Case("train.parquet: not a parquet file", {"train.parquet": b"PAR1 garbage bytes here"},
                            topic("train.parquet"), TOPIC),
    "truncated parquet": Case("train.parquet: not a parquet file",
                              {"train.parquet": lambda t: parquet(t, TOPIC_ROWS)[:300]}, topic("train.parquet"), TOPIC),
    "jsonl read as parquet": Case("train.jsonl: not a parquet file", {"train.jsonl": jsonl(NER_ROWS)},
                                  ner(format="parquet")),
    "parquet read as csv": Case("train.parquet: line 1 is not valid utf-8",
                                {"train.parquet": lambda t: parquet(t, TOPIC_ROWS)}, topic("train.parquet", format="csv"),
                                TOPIC),
    "csv read as jsonl": Case("train.csv: line 1: not valid JSON", {"train.csv": csv(TOPIC_ROWS)},
                              topic(format="jsonl"), TOPIC),
    "binary file": Case("train.jsonl: line 2 is not valid utf-8", {"train.jsonl": bytes(range(256))}, ner()),
    # ---- csv/tsv structure
    "ragged csv row": Case(["train.csv: line 3", "expected 2 fields, saw 3"],
                           {"train.csv": "text,label\nhello,World\nhi,there,Sports\n"}, topic(), TOPIC),
    "unclosed quote in csv": Case("train.csv:", {"train.csv": 'text,label\n"hello,World\nhi,Sports\n'}, topic(), TOPIC),
    "tsv without tabs": Case("missing column(s) text, label", {"train.tsv": "text label\nhello World\n"},
                             topic("train.tsv"), TOPIC),
    # ---- json/jsonl structure
    "json array in jsonl": Case("train.jsonl: line 1 holds a JSON array",
                                {"train.jsonl": json.dumps(NER_ROWS) + "\n"}, ner()),
    "pretty-printed json array in jsonl": Case("train.jsonl: line 1", {"train.jsonl": json.dumps(NER_ROWS, indent=2)},
                                               ner()),
    "scalar line in jsonl": Case("train.jsonl: line 2: expected a JSON object, got a number",
                                 {"train.jsonl": jsonl(NER_ROWS[:1]) + "42\n"}, ner()),
    "broken line in jsonl": Case("train.jsonl: line 3: not valid JSON",
                                 {"train.jsonl": jsonl(NER_ROWS[:2]) + '{"tokens": ["a"\n'}, ner()),
    "json object of scalars": Case("train.json: expected a list of row objects",
                                   {"train.json": '{"tokens": "a", "tags": "O"}'}, ner("train.json")),
    "json null": Case("train.json: expected a list of row objects", {"train.json": "null"}, ner("train.json")),
    "json rows that are lists": Case("train.json: row 0: expected an object",
                                     {"train.json": "[[1, 2], [3, 4]]"}, ner("train.json")),
    # ---- fields of the wrong type (would be split into characters or scored as nonsense)
    "null tokens": Case("split 'train': row 1: tokens is null", {"train.jsonl": jsonl(
        [NER_ROWS[0], {"tokens": None, "tags": ["O"]}])}, ner()),
    "null tag in a list": Case("split 'train': row 0: tag 1 is null", {"train.jsonl": jsonl(
        [{"tokens": ["a", "b"], "tags": ["O", None]}])}, ner()),
    "tokens as a string": Case("split 'train': row 0: tokens is a string, expected a list", {"train.jsonl": jsonl(
        [{"tokens": "EU rejects German call", "tags": ["B-ORG", "O", "B-MISC", "O"]}])}, ner()),
    "tags as a string": Case("split 'train': row 0: tags is a string, expected a list", {"train.jsonl": jsonl(
        [{"tokens": ["EU", "rejects"], "tags": "B-ORG O"}])}, ner()),
    "tokens as a number": Case("split 'train': row 0: tokens is a number, expected a list", {"train.jsonl": jsonl(
        [{"tokens": 3, "tags": ["O"]}])}, ner()),
    "numbers as tokens": Case("split 'train': row 0: token 1 is a number (1.5), expected a word: write it as a "
                              "string in the file", {"train.jsonl": jsonl(
        [{"tokens": ["price", 1.50], "tags": ["O", "O"]}])}, ner()),
    "nested token lists": Case("split 'train': row 0: token 0 is a list, expected a word", {"train.jsonl": jsonl(
        [{"tokens": [["EU"], "rejects"], "tags": ["B-ORG", "O"]}])}, ner()),
    "tag ids mixed with names": Case("split 'train': row 0: tag 1 (1) is an id, but tag 0 is a name", {"train.jsonl": jsonl(
        [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", 1]}])}, ner()),
    "tag as an object": Case("split 'train': row 0: tag 0 is an object, expected a tag", {"train.jsonl": jsonl(
        [{"tokens": ["EU"], "tags": [{"t": "B-ORG"}]}])}, ner()),
    "tags without a B-/I- prefix": Case(["split 'train': row 0: tag 'ORG' at token 0 has no B-/I- prefix",
                                         "data.tag_scheme"], {"train.jsonl": jsonl(
        [{"tokens": ["EU", "rejects"], "tags": ["ORG", "O"]}])}, ner()),
    "BIOES tags read as IOB2": Case("tag 'S-ORG' at token 0 has no B-/I- prefix", {"train.jsonl": jsonl(
        [{"tokens": ["EU", "rejects"], "tags": ["S-ORG", "O"]}])}, ner()),
    "boolean labels mixed with names": Case("split 'train': row 1: label True is not a class name or id",
                                            {"train.jsonl": jsonl([{"text": "a", "label": "World"},
                                                                   {"text": "b", "label": True}])},
                                            topic("train.jsonl"), TOPIC),
    "label ids mixed with names": Case("split 'train': row 1: label 3 is an id, but other rows give names",
                                       {"train.jsonl": jsonl([{"text": "a", "label": "World"}, {"text": "b", "label": 3}])},
                                       topic("train.jsonl"), TOPIC),
    "fractional labels": Case("split 'train': row 0: label 0.5 is not a class name or id",
                              {"train.jsonl": jsonl([{"text": "a", "label": 0.5}])}, topic("train.jsonl"), TOPIC),
    "list as text": Case("split 'train': row 0: text is a list, expected a string",
                         {"train.jsonl": jsonl([{"text": ["a", "b"], "label": "World"}])}, topic("train.jsonl"), TOPIC),
    "label outside data.labels ids": Case("label id 7 is outside data.labels", {"train.csv": "text,label\na,7\n"},
                                          topic(labels=["World", "Sports"]), TOPIC),
    "missing label": Case("split 'train': row 1 has no label", {"train.csv": "text,label\na,World\nb,\n"}, topic(), TOPIC),
}

PARAMS_CASES = {
    "NaN dropout": Case("params.yaml: lora.dropout: got nan, expected a finite number", params={"lora": {"dropout": ".nan"}}),
    "infinite learning rate": Case("params.yaml: train.learning_rate: got inf, expected a finite number",
                                   params={"train": {"learning_rate": ".inf"}}),
    "minus infinity alpha": Case("params.yaml: lora.alpha: got -inf, expected a finite number",
                                 params={"lora": {"alpha": "-.inf"}}),
    "overflowing epochs": Case("params.yaml: train.epochs: got inf, expected a finite number",
                               params={"train": {"epochs": "1e400"}}),
    "NaN split fraction": Case("params.yaml: split.validation: got nan, expected a finite number",
                               params={"split": {"validation": ".nan"}}),
    "NaN agreement": Case("params.yaml: export.min_quantized_agreement: got nan", params={"export": {"min_quantized_agreement": ".nan"}}),
    "seed too large": Case("params.yaml: seed: got 1099511627776, expected an integer in [0, 4294967295]",
                           params={"seed": 2 ** 40}),
    "negative seed": Case("params.yaml: seed: got -1, expected an integer in [0, 4294967295]", params={"seed": -1}),
    "split seed too large": Case("params.yaml: split.seed: got 8589934592, expected an integer in [0, 4294967295]",
                                 params={"split": {"seed": 2 ** 33}}),
    "unknown encoding": Case("params.yaml: data.encoding: got 'utf-99', expected an encoding Python knows",
                             params={"data": {"encoding": "utf-99"}}),
    "absurd batch size": Case("params.yaml: train.batch_size: got 1000000000, expected an integer in [1, 65536]",
                              params={"train": {"batch_size": 10 ** 9}}),
    "absurd eval batch size": Case("params.yaml: eval.batch_size: got 10000000, expected an integer in [1, 65536]",
                                   params={"eval": {"batch_size": 10 ** 7}}),
    "absurd max length": Case("params.yaml: model.max_length: got 100000000, expected an integer in [8, 1048576]",
                              params={"model": {"max_length": 10 ** 8}}),
    "absurd lora rank": Case("params.yaml: lora.r: got 10000000, expected an integer in [1, 65536]",
                             params={"lora": {"r": 10 ** 7}}),
    "absurd epochs": Case("params.yaml: train.epochs: got 1000000.0, expected a number in (0, 10000]",
                          params={"train": {"epochs": 10 ** 6}}),
    "max length above the model's positions": Case(
        "params.yaml: model.max_length: got 4096, expected at most 512 (all-MiniLM-L6-v2 has 512 positions)",
        params={"model": {"max_length": 4096}}),
    "unknown packaged model in check": Case("params.yaml: model.name: unknown packaged model 'MiniLM'",
                                            params={"model": {"name": "MiniLM"}}),
    "unknown packaged data in check": Case("params.yaml: data.name: unknown packaged dataset 'wnut17'",
                                           params={"data": {"name": "wnut17"}}),
    "local model folder missing in check": Case("params.yaml: model.name: 'no/such/folder' is not a folder with a config.json",
                                                params={"model": {"source": "local", "name": "no/such/folder"}}),
    "absurd virtual tokens": Case("params.yaml: prompt.num_virtual_tokens: got 100000000, expected an integer in [1, 4096]",
                                  params={"prompt": {"num_virtual_tokens": 10 ** 8}}),
    "absurd max steps": Case("params.yaml: train.max_steps: got 99999999999999, expected at most 100,000,000 steps",
                             params={"train": {"max_steps": 99999999999999}}),
    "blank target module": Case("params.yaml: lora.target_modules: got [''], expected non-empty names",
                                params={"lora": {"target_modules": [""]}}),
    "blank text column": Case("params.yaml: data.columns.text: got '', expected non-empty names",
                              params={"data": {"columns": {"text": ""}}}),
    "empty params file": Case("params.yaml: the file is empty", files={"params.yaml": ""}),
    "comments-only params file": Case("params.yaml: the file is empty", files={"params.yaml": "# nothing yet\n"}),
    "params file not utf-8": Case("params.yaml: line 1 is not valid utf-8", files={"params.yaml": b"seed: \xff\n"}),
    "params file is a folder": Case("'params.yaml' is a directory", files={"params.yaml/x": ""}),
    "YAML syntax error": Case(["params.yaml: not valid YAML", "line 4, column 8"],
                              files={"params.yaml": "seed: 1\nlora:\n  r: [8\n  alpha: 16\n"}),
    "duplicate key": Case(["params.yaml: not valid YAML", 'duplicate key "r"', "line 4"],
                          files={"params.yaml": "seed: 1\nlora:\n  r: 8\n  r: 16\n"}),
    "tab indentation": Case(["params.yaml: not valid YAML", "line 3"], files={"params.yaml": "seed: 1\nlora:\n\tr: 8\n"}),
    "top-level list": Case("params.yaml: expected a mapping of sections at the top level", files={"params.yaml": "- 1\n- 2\n"}),
    "top-level scalar": Case("params.yaml: expected a mapping of sections at the top level", files={"params.yaml": "hello\n"}),
    "non-mapping section": Case("params.yaml: lora: expected a mapping of its keys (or nothing: its defaults), got 5", params={"lora": 5}),
}

for _case in PARAMS_CASES.values():
    _case.command, _case.args = "check", ["params.yaml"]


def corrupt(name: str, content):
    """A copy of the tiny BERT (folder 'model') with one file replaced (None: removed)."""
    return {"model": "tiny-model", f"model/{name}": content}


MODEL = {"model": {"source": "local", "name": "model", "max_length": 32}}
MODEL_CASES = {
    "config.json truncated": Case("model/config.json: not valid JSON", corrupt("config.json", '{"model_type": "be'), params=MODEL),
    "config.json a list": Case("model/config.json: expected a JSON object", corrupt("config.json", "[1, 2]"), params=MODEL),
    "config.json without model_type": Case("model/config.json: no 'model_type'", corrupt("config.json", '{"hidden_size": 8}'),
                                           params=MODEL),
    "config.json with an unknown model_type": Case("model/config.json: model_type 'bertx' is not one transformers",
                                                   corrupt("config.json", '{"model_type": "bertx"}'), params=MODEL),
    "weights are a Git LFS pointer": Case("model/model.safetensors: is a Git LFS pointer",
                                          corrupt("model.safetensors", LFS_POINTER), params=MODEL),
    "weights truncated": Case("model/model.safetensors: not a safetensors file",
                              corrupt("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\""), params=MODEL),
    "weights empty": Case("model/model.safetensors: the file is empty", corrupt("model.safetensors", b""), params=MODEL),
    "tokenizer.json truncated": Case("model/tokenizer.json: not valid JSON", corrupt("tokenizer.json", '{"version": "1.0", "trunc'),
                                     params=MODEL),
    "tokenizer.json an LFS pointer": Case("model/tokenizer.json: is a Git LFS pointer", corrupt("tokenizer.json", LFS_POINTER),
                                          params=MODEL),
    "unknown lora target module": Case(["params.yaml: lora.target_modules: ['q_proj'] not in BertForTokenClassification",
                                        "its linear layers: classifier, dense, key, query, value"],
                                       {"model": "tiny-model"}, params={**MODEL, "lora": {"target_modules": ["q_proj"]}}),
    "model folder is a file": Case("model.name: 'model' is not a folder with a config.json", {"model": "x"}, params=MODEL),
    "model folder empty": Case("model.name: 'model' is not a folder with a config.json", {"model/.keep": ""}, params=MODEL),
}
for _case in MODEL_CASES.values():
    _case.data, _case.command, _case.before = ner(), "tokenize_align", ("download", "split")
    _case.files = {"train.jsonl": jsonl(NER_ROWS), **_case.files}
MODEL_CASES["unknown lora target module"].command = "train"
MODEL_CASES["unknown lora target module"].before = ("download", "split", "tokenize_align", "settings")


def export(name: str, content):
    """The tiny BERT exported as a token classifier (folder 'export'), one file replaced."""
    return {"export": "tiny-export", f"export/{name}": content}


def info(**changes) -> str:
    return json.dumps({"task": "token_classification", "peft_method": "none", "labels": ["O", "B-PER", "B-LOC"],
                       "model": {"source": "local", "name": "x", "revision": None, "max_length": 32},
                       "quantization": None, "seed": 1, **changes})


PREDICT = ["--model", "export"]
PREDICT_CASES = {
    "no export folder": Case("export: no exported model here", {}, args=[*PREDICT, "alice"]),
    "export config truncated": Case("export/config.json: not valid JSON", export("config.json", '{"archi'),
                                    args=[*PREDICT, "alice"]),
    "export weights an LFS pointer": Case("export/model.safetensors: is a Git LFS pointer",
                                          export("model.safetensors", LFS_POINTER), args=[*PREDICT, "alice"]),
    "peftpipe.json truncated": Case("export/peftpipe.json: not valid JSON", export("peftpipe.json", '{"task": '),
                                    args=[*PREDICT, "alice"]),
    "peftpipe.json with an unknown task": Case(
        "export/peftpipe.json: task 'ner' is not one of token_classification, sequence_classification, generation",
        export("peftpipe.json", info(task="ner")), args=[*PREDICT, "alice"]),
    "peftpipe.json without labels": Case("export/peftpipe.json: no 'labels'",
                                         export("peftpipe.json", json.dumps({"task": "token_classification"})),
                                         args=[*PREDICT, "alice"]),
    "stdin not utf-8": Case("stdin: line 2 is not valid utf-8", export("peftpipe.json", info()), args=PREDICT,
                            stdin=b"alice visited paris\nbob \xff\xfe\n"),
    "stdin empty": Case("give text as arguments or on stdin", export("peftpipe.json", info()), args=PREDICT, stdin=b""),
    "pair without a tab": Case("--pair expects two texts separated by a tab", export("peftpipe.json", info()),
                               args=[*PREDICT, "--pair", "no tab here"]),
    "empty text argument": Case("text 2 is empty", export("peftpipe.json", info()), args=[*PREDICT, "alice", " "]),
    "text not UTF-8": Case("text 2: byte 0xe9 at character 3 is not UTF-8; convert the text first",
                           export("peftpipe.json", info()), args=[*PREDICT, "alice", "caf\udce9"]),
    "pair on a token classifier": Case("a token classification model reads one text, not pairs; drop --pair",
                                       export("peftpipe.json", info()), args=[*PREDICT, "--pair", "a\tb"]),
}
for _case in PREDICT_CASES.values():
    _case.command = "predict"

CASES = {**{f"data: {k}": v for k, v in DATA_CASES.items()}, **{f"params: {k}": v for k, v in PARAMS_CASES.items()},
         **{f"model: {k}": v for k, v in MODEL_CASES.items()}, **{f"predict: {k}": v for k, v in PREDICT_CASES.items()}}

# --------------------------------------------------------------------------- the runner

SPECIAL_FLOATS = (".nan", ".inf", "-.inf", "1e400")


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(base.get(key) or {}, value) if isinstance(value, dict) and key != "files" else value
    return out


def write_params(folder: Path, case: Case) -> None:
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((ROOT / "params.yaml").read_text())
    local = {"source": "local", "name": None, **case.data} if case.data else {}
    params = merged(params, {"data": local, **case.params} if local else case.params)
    text = io.StringIO()
    yaml.dump(params, text)
    text = text.getvalue()
    for value in SPECIAL_FLOATS:  # written bare, as a user would type them
        text = text.replace(f"'{value}'", value)
    (folder / "params.yaml").write_text(text)


def lay_out(folder: Path, case: Case, fixtures: dict) -> None:
    if "params.yaml" not in str(list(case.files)):
        write_params(folder, case)
    for name, content in case.files.items():
        path = folder / name
        if content in fixtures:
            shutil.copytree(fixtures[content], path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        content = content(folder) if callable(content) else content
        if content is None:
            path.unlink()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def invoke(command: str, args: list, stdin: bytes | None = None):
    if command in ("check", "predict", "recipe", "init"):
        return CliRunner().invoke(cli, [command, *args], input=stdin)
    stage = runpy.run_path(str(ROOT / "stages" / f"{command}.py"), run_name="peftpipe_test")["main"]
    return CliRunner().invoke(stage, [*stage_args(command), *args], input=stdin)


STAGE_OUTPUTS = {"download": ["data/raw"], "split": ["data/split", "metrics/data.json"], "train": ["models/adapter"],
                 "tokenize_align": ["data/tokenized"]}


@pytest.fixture(scope="module")
def fixtures(tiny_model_dir, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("export")
    export_dir = folder / "export"
    shutil.copytree(tiny_model_dir, export_dir)
    (export_dir / "peftpipe.json").write_text(info())
    return {"tiny-model": tiny_model_dir, "tiny-export": export_dir}


def assert_one_clear_line(result, expect: list[str]) -> str:
    stderr = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in stderr.splitlines() if line.startswith("error:") or line.startswith("Error:")]
    assert len(errors) == 1, stderr
    for needle in expect:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_stops_with_one_clear_line(name, tmp_path, monkeypatch, fixtures):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)
    lay_out(tmp_path, case, fixtures)
    for stage in case.before:
        result = invoke(stage, [])
        assert result.exit_code == 0, (stage, result.output, result.exception)
    result = invoke(case.command, case.args, case.stdin)
    assert_one_clear_line(result, [case.expect] if isinstance(case.expect, str) else case.expect)
    for output in STAGE_OUTPUTS.get(case.command, []):
        assert not (tmp_path / output).exists(), f"{output} left behind"
    assert not list(tmp_path.rglob(".*.tmp-*")), "temporary output left behind"


def test_the_traceback_is_kept_with_debug(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lay_out(tmp_path, DATA_CASES["empty csv"], {})
    result = invoke("download", ["--debug"])
    assert result.exit_code != 0 and result.exception is not None and not isinstance(result.exception, SystemExit)


def test_every_kind_of_input_has_cases_and_its_first_stops_in_one_line(tmp_path, monkeypatch, fixtures):
    """At least 60 cases over data, params, model folders and predict's input; and the count
    is not the test: the first case of each kind runs here, so a stop that became a
    traceback fails this test too."""
    kinds: dict[str, str] = {}
    for name in CASES:
        kinds.setdefault(name.split(":")[0], name)
    assert len(CASES) >= 60 and set(kinds) == {"data", "params", "model", "predict"}
    for kind, name in kinds.items():
        folder = tmp_path / kind
        folder.mkdir()
        test_bad_input_stops_with_one_clear_line(name, folder, monkeypatch, fixtures)


# --------------------------------------------------------------------------- documented conversions


def download(tmp_path: Path, files: dict, **data) -> pd.DataFrame:
    lay_out(tmp_path, Case("", files, ner(next(iter(files)), **data)), {})
    result = invoke("download", [])
    assert result.exit_code == 0, result.output
    return pd.read_parquet(tmp_path / "data/raw/train.parquet")


def test_a_utf8_byte_order_mark_is_dropped_not_glued_to_the_first_token(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conll = "\ufeffEU B-ORG\nrejects O\n\nPeter B-PER\n"
    frame = download(tmp_path, {"train.conll": conll.encode("utf-8")})
    assert list(frame["tokens"][0]) == ["EU", "rejects"]


@pytest.mark.parametrize("name, content", [("train.csv", "\ufeff" + csv(TOPIC_ROWS)),
                                           ("train.jsonl", "\ufeff" + jsonl(TOPIC_ROWS))])
def test_a_byte_order_mark_before_the_first_row_keeps_the_column_name(tmp_path, monkeypatch, name, content):
    """Excel and Notepad write a UTF-8 byte-order mark. pandas drops it before a CSV header
    itself; a JSON line starting with one is not JSON until io.decode drops it."""
    monkeypatch.chdir(tmp_path)
    lay_out(tmp_path, Case("", {name: content}, topic(name), TOPIC), {})
    result = invoke("download", [])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "data/raw/train.parquet")
    assert list(frame["text"]) == [row["text"] for row in TOPIC_ROWS if row["text"].strip()]


def test_io_tags_are_converted_to_iob2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"tokens": ["Peter", "Blackburn", "in", "Paris", "Berlin"], "tags": ["PER", "PER", "O", "LOC", "LOC"]}]
    frame = download(tmp_path, {"train.jsonl": jsonl(rows)}, tag_scheme="io")
    # Two LOC words in a row are one entity in IO: the scheme cannot tell them apart.
    assert list(frame["tags"][0]) == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    meta = json.loads((tmp_path / "data/raw/meta.json").read_text())
    assert meta["bio_repaired_rows"]["train"] == 1


def test_bioes_tags_are_converted_to_iob2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"tokens": ["EU", "Peter", "van", "Dam", "x"], "tags": ["S-ORG", "B-PER", "I-PER", "E-PER", "O"]}]
    frame = download(tmp_path, {"train.jsonl": jsonl(rows)}, tag_scheme="bioes")
    assert list(frame["tags"][0]) == ["B-ORG", "B-PER", "I-PER", "I-PER", "O"]


# --------------------------------------------------------------------------- file modes


def test_written_files_keep_the_umask_modes_and_recipe_keeps_params_mode(tmp_path, monkeypatch):
    import os
    import stat

    monkeypatch.chdir(tmp_path)
    lay_out(tmp_path, Case("", {"train.jsonl": jsonl(NER_ROWS)}, ner()), {})
    old = os.umask(0o022)
    try:
        assert invoke("download", []).exit_code == 0
        assert stat.S_IMODE((tmp_path / "data/raw").stat().st_mode) == 0o755
        assert stat.S_IMODE((tmp_path / "data/raw/meta.json").stat().st_mode) == 0o644
        (tmp_path / "recipes").mkdir()
        mine = (tmp_path / "params.yaml").read_text().replace("recipe: default", "recipe: mine")
        (tmp_path / "recipes/mine.yaml").write_text(mine)
        (tmp_path / "params.yaml").chmod(0o664)
        (tmp_path / "params.yaml").write_text(mine + "# my note (a comment is no edit to the recipe)\n")
        result = invoke("recipe", ["mine"])
        assert result.exit_code == 0 and "params.yaml.bak <- your previous params.yaml" in result.output
        assert stat.S_IMODE((tmp_path / "params.yaml").stat().st_mode) == 0o664
        assert (tmp_path / "params.yaml.bak").read_text().endswith("# my note (a comment is no edit to the recipe)\n")
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- generated inputs

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["O", "B-PER", "I-PER", "PER", "I-LOC", " ", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                                          max_size=2), max_leaves=8)
rows = st.lists(st.fixed_dictionaries({"tokens": values, "tags": values}), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_generated_ner_rows_load_cleanly_or_stop_with_a_data_error(tmp_path, rows):
    """Whatever the JSON values, a row either becomes words with IOB2 tags of the same
    length, or the load stops with a DataError naming the file or split and row."""
    from peftpipe.errors import DataError
    from peftpipe.params import DataParams
    from peftpipe.sources import load_raw

    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(rows))
    try:
        raw = load_raw(DataParams(source="local", name=None, files={"train": str(path)}, labels=[]))
    except DataError as err:
        assert "\n" not in str(err) and ("train.jsonl" in str(err) or "split 'train'" in str(err)), str(err)
        return
    for tokens, tags in zip(raw.splits["train"]["tokens"], raw.splits["train"]["tags"]):
        assert len(tokens) == len(tags) > 0
        assert all(isinstance(t, str) and t.strip() for t in tokens)
        assert all(t == "O" or t[:2] in ("B-", "I-") for t in tags)


# --------------------------------------------------------------------------- bring your own data


def news_csv(path: Path, rows_per_class: int, seed: int) -> Path:
    """A classic news-topic CSV: no header row, class ids 1..4, a title and a description."""
    import random

    words = {1: ["paris", "london", "berlin"], 2: ["alice", "bob", "carol"], 3: ["acme", "globex", "initech"],
             4: ["city", "company", "person"]}
    rng = random.Random(seed)
    lines = []
    for label, vocab in words.items():
        for _ in range(rows_per_class):
            title = " ".join(rng.choice(vocab + ["the"]) for _ in range(3))
            description = " ".join(rng.choice(vocab + ["a", "and", "to"]) for _ in range(rng.randint(4, 9)))
            lines.append(f'{label},"{title.title()}","{description}, said the wire."')
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_init_asks_whether_two_text_columns_are_a_pair_or_one_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    news_csv(tmp_path / "news.csv", 10, seed=1)
    result = invoke("init", ["news.csv"])
    assert_one_clear_line(result, ["2 text columns ('1', '2')", "--join", "--pair"])
    assert not (tmp_path / "params.yaml").exists()


def test_init_then_the_pipeline_trains_a_classifier_on_a_headerless_csv(tmp_path, monkeypatch, tiny_model_dir):
    from ruamel.yaml import YAML

    monkeypatch.chdir(tmp_path)
    news_csv(tmp_path / "news.csv", 40, seed=1)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    result = CliRunner().invoke(cli, ["init", "news.csv", "--join"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "no header row" in out and "class column: '0'" in out and "4 classes: 1 (40), 2 (40), 3 (40), 4 (40)" in out
    assert "columns '1', '2' joined into one text" in out and "kept as params.yaml.bak" in out
    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((tmp_path / "params.yaml").read_text())
    assert params["task"]["kind"] == "sequence_classification"
    assert params["data"]["header"] is False and params["data"]["columns"]["text"] == ["1", "2"]
    assert params["data"]["labels"] == {1: "1", 2: "2", 3: "3", 4: "4"}
    # Name the classes, and use the tiny model for speed: what a user edits after init.
    params["data"]["labels"] = {1: "World", 2: "Sports", 3: "Business", 4: "SciTech"}
    params["model"].update(source="local", name=str(tiny_model_dir), max_length=32)
    params["peft"]["method"] = "none"  # the tiny model's random pooler needs training too
    params["train"].update(epochs=12, batch_size=16, learning_rate=1e-2, logging_steps=5, checkpoint_steps=0)
    with open(tmp_path / "params.yaml", "w") as fh:
        yaml.dump(params, fh)
    assert CliRunner().invoke(cli, ["check", "params.yaml"]).exit_code == 0
    for name in ("download", "split", "tokenize_align", "baseline", "settings", "train", "evaluate"):
        result = invoke(name, [])
        assert result.exit_code == 0, (name, result.output)
    raw = pd.read_parquet(tmp_path / "data/raw/train.parquet")
    assert set(raw["label"]) == {"World", "Sports", "Business", "SciTech"}
    assert raw["text"][0].count(",") >= 1 and len(raw["text"][0].split()) >= 7  # title and description joined
    evaluated = json.loads((tmp_path / "metrics/eval.json").read_text())["overall"]
    assert evaluated["accuracy"] > 0.6  # chance is 0.25: the words give the class away


def test_an_unreachable_hub_fails_fast_with_one_line(tmp_path, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "PEFTPIPE_HUB_UNREACHABLE"):
        monkeypatch.setenv(name, "")  # restored after the test, which the stage sets again
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    lay_out(tmp_path, Case("", data={"source": "hub", "name": "someone/tweets-ner"}), {})
    started = time.perf_counter()
    result = invoke("download", [])
    assert time.perf_counter() - started < 20
    assert_one_clear_line(result, ["data.name 'someone/tweets-ner': cannot load from the hub",
                                   "the hub (127.0.0.1) cannot be reached", "use source: local"])
    assert not (tmp_path / "data/raw").exists()


def test_truncation_is_counted_and_said(tmp_path, monkeypatch, fixtures):
    """A sentence longer than model.max_length is cut at tokenize: its tail would be scored
    as O without a word. Now each split's cut rows and lost words are printed and recorded."""
    monkeypatch.chdir(tmp_path)
    long = {"tokens": ["alice", "visited", "paris"] * 12, "tags": ["B-PER", "O", "B-LOC"] * 12}
    rows = NER_ROWS[:20] + [long] * 30  # enough long rows that every carved split has some
    lay_out(tmp_path, Case("", {"train.jsonl": jsonl(rows), "model": "tiny-model"}, ner(),
                           params={"model": {"source": "local", "name": "model", "max_length": 16}}), fixtures)
    for stage in ("download", "split"):
        assert invoke(stage, []).exit_code == 0
    result = invoke("tokenize_align", [])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "metrics/tokenize.json").read_text())
    for name in ("train", "validation", "test"):
        counts = report[name]
        assert 0 < counts["rows_cut"] <= counts["rows"] and counts["words_cut"] >= 22 * counts["rows_cut"]
        assert f"tokenize: warning: {name}: {counts['rows_cut']} of {counts['rows']} rows are longer than " \
               f"model.max_length 16 and were cut ({counts['words_cut']} words lost; lost words count as O)" in result.output


def test_predict_reads_a_long_text_in_windows(tmp_path, fixtures):
    """The export was trained at max length 32: a text ten times longer is tagged to its end
    (overlapping windows), not cut after the first 32 tokens."""
    from peftpipe.serving import inference_pipeline

    classify = inference_pipeline(fixtures["tiny-export"])
    assert classify.tokenizer.model_max_length == 32
    text = " ".join(["alice visited paris and met bob"] * 20)
    spans = classify(text)
    assert spans and max(s["end"] for s in spans) > len(text) - 40  # tags reach the last words
