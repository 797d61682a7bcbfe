"""Each stage's `params:` in dvc.yaml is what the stage reads: no more, no less.

conftest.run_stage records the params leaves every stage run in the tests reads (the
schema's sections log attribute reads while peftpipe.params.reads is open) and fails one
that reads a leaf its entry does not list: DVC would keep its output after an edit to it.
Here the other direction: small pipelines run every stage in the configurations that reach
its conditional reads, and a listed leaf none of them read would rerun the stage for nothing
(an edit to a param a stage never reads must leave `dvc status` clean for it).
"""

import json
from pathlib import Path

import pytest
from conftest import (
    dvc_stage_of,
    run_stage,
    undeclared_reads,
    under,
    write_jsonl,
    write_tiny_classifier,
    write_tiny_recipe,
)

from peftpipe import params
from peftpipe.params import Params, only_checking, reads, write_params

# Listed, but read only in configurations the runs below cannot have here, and why.
READ_ELSEWHERE = {
    "download": {
        "data.config": "data.source hub only (no hub from the tests)",
        "data.revision": "data.source hub only",
    },
    "baseline": {
        "quantization.quant_type": "peft.method qlora: the base is scored in 4 bits as it will be trained "
                                   "(test_sequence_classification's qlora run reads it under run_stage's check)",
        "quantization.double_quant": "peft.method qlora (as above)",
        "quantization.compute_dtype": "peft.method qlora (as above)",
    },
    "export": {
        "export.min_quantized_agreement": "peft.method qlora: the merged model against the 4-bit one",
    },
    "train": {
        "tune.trial": "read by no code: set on peftpipe tune's trials, so a pruned trial is never reused by a "
                      "plain run",
    },
}


# Every params key, dotted, in the schema's order (sections opened, users' own mappings not).
SCHEMA_LEAVES = list(params.leaves(Params().model_dump()))


def leaves(key: str) -> list[str]:
    """A dvc.yaml params entry as the schema's leaves under it (`data.columns` -> its six)."""
    found = [leaf for leaf in SCHEMA_LEAVES if under(leaf, key)]
    assert found, f"dvc.yaml lists {key!r}, which is no key of the schema"
    return found


def declared(script: str) -> set[str]:
    return {leaf for entry in dvc_stage_of(script).get("params", []) for leaf in leaves(str(entry))}


def run_all(names: list[str], found: dict[str, set[str]]) -> None:
    for name in names:
        if name == "train":  # train runs the settings stage first (conftest.run_stage): record it too
            found.setdefault("settings", set()).update(run_stage("settings") or ())
        found.setdefault(name, set()).update(run_stage(name) or ())


@pytest.fixture(scope="module")
def stage_reads(tmp_path_factory, tiny_model_dir) -> dict[str, set[str]]:
    """What each stage read over three projects: tiny NER (test carved from train, an extra
    CoNLL test set, validation scored; then the settings of two more methods), a text
    classifier (sampled per class, an extra set of its own), and the packaged default's download."""
    import os

    found: dict[str, set[str]] = {}
    start = Path.cwd()
    try:
        ner = tmp_path_factory.mktemp("ner")
        write_tiny_recipe(ner, tiny_model_dir)
        os.chdir(ner)
        (ner / "inputs").mkdir()
        (ner / "inputs/more.conll").write_text("alice\tB-PER\nwent\tO\nhome\tO\n\nparis\tB-LOC\n")
        write_params(ner / "params.yaml", {"data": {"files": {"train": "corpus/train.jsonl"}},
                                            "train": {"max_steps": 4}, "eval": {"validation": True,
                                                                                "extra": {"more": "inputs/more.conll"}}})
        run_all(["download", "split", "tokenize_align", "baseline", "train", "evaluate", "export"], found)
        for method in ("p_tuning", "qlora"):  # the settings stage writes what each method reads
            write_params(ner / "params.yaml", {"peft": {"method": method}})
            run_all(["settings"], found)

        text = tmp_path_factory.mktemp("text")
        write_tiny_classifier(text, tiny_model_dir)
        os.chdir(text)
        write_jsonl(text / "inputs/more.jsonl", [{"text": "bob in paris", "label": "place"}])
        write_params(text / "params.yaml", {"split": {"per_class": {"train": 30}},  # more than a class has
                                            "train": {"max_steps": 2}, "eval": {"extra": {"more": "inputs/more.jsonl"}}})
        run_all(["download", "split", "tokenize_align", "baseline", "train", "evaluate"], found)

        packaged = tmp_path_factory.mktemp("packaged")
        os.chdir(packaged)
        write_params(packaged / "params.yaml", {})
        run_all(["download"], found)
    finally:
        os.chdir(start)
    return found


@pytest.mark.parametrize("script", ["download", "split", "tokenize_align", "baseline", "settings", "train",
                                    "evaluate", "export"])
def test_every_listed_param_is_read_by_its_stage(stage_reads, script):
    settings = {"peft", "lora", "prompt", "quantization"}  # train reads these through the settings file
    unread = declared(script) - stage_reads[script] - set(READ_ELSEWHERE.get(script, {}))
    assert not unread, f"dvc.yaml lists params stages/{script}.py never read (an edit reruns it for nothing): " \
                       f"{sorted(unread)}"
    if script == "train":
        assert not settings & {leaf.split(".")[0] for leaf in declared(script)}, "train reads them via its settings"


def test_the_record_names_each_leaf_read_and_nothing_else():
    params = Params()
    with reads(params) as found:
        assert params.data.columns.tokens == "tokens"
        params.lora.model_dump()
        with only_checking():
            assert params.eval.extra == {}
    assert found == {"data.columns.tokens", *(f"lora.{name}" for name in type(params.lora).model_fields)}


def test_a_read_the_entry_does_not_list_is_named():
    assert undeclared_reads("evaluate", ["eval.batch_size", "data.files", "model.max_length"]) == ["data.files"]
    assert undeclared_reads("train", ["lora.r"], settings={"peft": {}, "lora": {}}) == []
    assert undeclared_reads("train", ["prompt.num_virtual_tokens"], settings={"peft": {}, "lora": {}}) == \
        ["prompt.num_virtual_tokens"]


def test_leaves_expand_sections_from_the_schema():
    assert leaves("data.columns") == [f"data.columns.{name}" for name in
                                      ("tokens", "tags", "sentence", "text", "text_pair", "label")]
    assert leaves("seed") == ["seed"] and "train.epochs" in leaves("train")
    assert json.dumps(sorted(declared("settings")))  # every entry resolves in the schema
