"""dvc.yaml declares exactly what each stage reads, so `dvc repro` reruns what a change affects."""

import ast
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PIPELINE = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = YAML(typ="safe", pure=True).load((ROOT / "params.yaml").read_text())


def module_file(name: str) -> Path | None:
    path = SRC / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] == "peftpipe" and module_file(n)}


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


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_stage_deps_cover_the_code_it_runs(name):
    stage = PIPELINE[name]
    script = stage["cmd"].split()[1]
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


def test_lora_params_only_reach_training_and_after():
    readers = {name for name, stage in PIPELINE.items()
               if any(p in ("lora", "peft", "train") or p.startswith("lora.") for p in stage.get("params", []))}
    assert readers == {"train"}


def test_accelerate_configs_load_and_the_default_launcher_is_python():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((ROOT / "accelerate").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"cpu-2proc", "multi-gpu", "multi-node", "deepspeed-zero2", "fsdp"}
    for path in configs:
        config = load_config_from_file(str(path))
        assert config.num_processes >= 1 and config.num_machines >= 1, path.name
    train = PIPELINE["train"]
    assert train["cmd"] == "${train.launcher} stages/train.py" and "accelerate" in train["deps"]
    assert PARAMS["train"]["launcher"] == "python"
