"""dvc.yaml declares exactly what each stage reads, so `dvc repro` reruns what a change affects."""

import json
import runpy
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import imported_modules, module_file
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = YAML(typ="safe", pure=True).load((ROOT / "params.yaml").read_text())


def code_closure(script: Path) -> set[Path]:
    """Every peftpipe source file the script imports, directly or through other modules."""
    seen, todo = set(), [script]
    while todo:
        for name in imported_modules(todo.pop()):
            path = module_file(name)
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def script_of(stage: dict) -> str:
    return next(word for word in stage["cmd"].split() if word.startswith("stages/"))


def command_paths(stage: dict) -> dict[str, str]:
    """{option name: path} from a stage's command line."""
    words = shlex.split(stage["cmd"])
    words = words[words.index(script_of(stage)) + 1:]
    return {option[2:].replace("-", "_"): path for option, path in zip(words[::2], words[1::2])}


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_stage_paths_come_from_the_command_line_and_match_deps_and_outs(name):
    """dvc.yaml is the one place a stage's paths are written: each path option the script
    declares is on its command line, each path it reads is a dependency, each it writes an
    output (or a metrics file)."""
    stage = PIPELINE[name]
    command = runpy.run_path(str(ROOT / script_of(stage)), run_name="peftpipe_test")["main"]
    given = command_paths(stage)
    declared = command.paths
    assert set(given) == {*declared["reads"], *declared["writes"], *declared["scratch"]}, name
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]
    for option in declared["reads"]:
        assert given[option] in stage["deps"], f"{name}: reads {given[option]} (--{option}), not a dependency"
    for option in declared["writes"]:
        assert given[option] in outs, f"{name}: writes {given[option]} (--{option}), not an output"
    for option in declared["scratch"]:
        assert given[option] not in outs + stage["deps"], f"{name}: {given[option]} is scratch space, not tracked"


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_stage_deps_cover_the_code_it_runs(name):
    stage = PIPELINE[name]
    script = script_of(stage)
    deps = stage["deps"]
    assert script in deps
    for path in code_closure(ROOT / script):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "src/peftpipe/__init__.py":
            continue  # the version string only
        assert any(relative == d or relative.startswith(d + "/") for d in deps), f"{name}: {relative} not in deps"


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_stage_params_exist_in_params_yaml(name):
    for key in PIPELINE[name].get("params", []):
        node = PARAMS
        for part in key.split("."):
            assert part in node, f"{name}: params key {key} is not in params.yaml"
            node = node[part]


def test_training_params_reach_only_training_and_what_reads_its_outputs():
    """lora, prompt and train settings (whole sections or single keys) rerun train only;
    evaluate and export follow through models/adapter. peft.method and quantization also reach
    baseline: a qlora base is scored in 4 bits, as it will be trained."""
    def readers(*sections: str) -> set[str]:
        return {name for name, stage in PIPELINE.items()
                if any(p.split(".")[0] in sections for p in stage.get("params", []))}

    assert readers("lora", "prompt") == {"settings"}  # train follows through data/train_settings.json
    assert readers("train") == {"train"}
    assert readers("peft", "quantization") == {"settings", "baseline"}
    assert [p for p in PIPELINE["baseline"]["params"] if p.startswith("peft")] == ["peft.method"]
    assert "data/train_settings.json" in PIPELINE["train"]["deps"]
    for name in ("evaluate", "export"):
        assert "models/adapter" in PIPELINE[name]["deps"], name


def test_the_settings_file_holds_what_the_method_reads_so_other_edits_leave_training_alone(tmp_path, monkeypatch):
    """With peft.method lora, editing prompt.num_virtual_tokens rewrites the settings file
    byte for byte: DVC sees train's dependencies unchanged (dvc status stays clean for train)."""
    from conftest import run_stage

    from peftpipe.params import write_params

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    run_stage("settings")
    lora = (tmp_path / "data/train_settings.json").read_bytes()
    assert set(json.loads(lora)) == {"peft", "lora"}
    write_params(tmp_path / "params.yaml", {"prompt": {"num_virtual_tokens": 7}, "quantization": {"double_quant": False}})
    run_stage("settings")
    assert (tmp_path / "data/train_settings.json").read_bytes() == lora
    write_params(tmp_path / "params.yaml", {"lora": {"r": 8}})
    run_stage("settings")
    assert json.loads((tmp_path / "data/train_settings.json").read_bytes())["lora"]["r"] == 8
    write_params(tmp_path / "params.yaml", {"peft": {"method": "p_tuning"}})
    run_stage("settings")
    assert set(json.loads((tmp_path / "data/train_settings.json").read_bytes())) == {"peft", "prompt"}


def test_accelerate_configs_load_and_the_default_launcher_is_python():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((ROOT / "accelerate").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"cpu-2proc", "multi-gpu", "multi-node", "deepspeed-zero2", "fsdp"}
    for path in configs:
        config = load_config_from_file(str(path))
        assert config.num_processes >= 1 and config.num_machines >= 1, path.name
    train = PIPELINE["train"]
    assert train["cmd"].startswith("python stages/train.py ") and "accelerate" in train["deps"]
    assert PARAMS["train"]["launcher"] == "python"


def test_no_param_reaches_a_command_line():
    """Params are data: dvc.yaml interpolates none of them into a stage's command (DVC would
    run a params file's text through the shell at `dvc repro`, before any validation)."""
    assert "${" not in (ROOT / "dvc.yaml").read_text()
    for name, stage in PIPELINE.items():
        assert stage["cmd"].startswith("python stages/"), name


def test_the_accelerate_launcher_reruns_the_stage_as_an_argument_list(monkeypatch, tmp_path):
    """train.launcher accelerate: the stage reruns itself under `accelerate launch` with the
    project's config as one argument, through no shell; a launched process runs, not relaunches."""
    import subprocess
    import sys

    from peftpipe import stage, training
    from peftpipe.params import Params

    params = Params.model_validate({"train": {"launcher": "accelerate", "processes": 3}}, context={"root": str(ROOT)})
    command = training.launch_command(params.train)
    assert Path(command[0]).name == "accelerate" and command[1:] == [
        "launch", "--config_file", "accelerate/cpu-2proc.yaml", "--num_processes", "3"]
    assert training.launch_command(Params().train) is None
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda args, env: ran.append((args, env)) or
                        subprocess.CompletedProcess(args, 7))
    monkeypatch.setattr(sys, "argv", ["stages/train.py", "--adapter", "models/adapter; touch x"])
    assert stage.relaunch(command) == 7
    assert ran[0][0] == [*command, "stages/train.py", "--adapter", "models/adapter; touch x"]
    assert ran[0][1][stage.RELAUNCHED_ENV] == "1"
    for name in (stage.RELAUNCHED_ENV, "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(stage.RELAUNCHED_ENV, raising=False)
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        assert not stage.launched()
        monkeypatch.setenv(name, "1")
        assert stage.launched(), name


def test_the_exported_model_is_a_registered_dvc_artifact(monkeypatch):
    """DVC's model registry reads the export from dvc.yaml's artifacts: (dvc artifacts get,
    registry tools), and `peftpipe serve --model NAME=artifact:peftpipe-model` resolves it."""
    from dvc.repo import Repo

    from peftpipe.serve.app import parse_models

    monkeypatch.chdir(ROOT)
    with Repo(str(ROOT)) as repo:
        declared = {name: spec for found in repo.artifacts.read().values() for name, spec in found.items()}
    model = declared["peftpipe-model"]
    assert model.type == "model" and model.path == "models/export" and model.desc
    assert "models/export" in PIPELINE["export"]["outs"]
    assert parse_models(("ner=artifact:peftpipe-model",)) == {"ner": Path("models/export")}
