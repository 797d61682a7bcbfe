"""The task seam holds: outside src/peftpipe/tasks, no code compares a task kind's name or
guesses a task from a model's class name, and every registered task has the whole protocol."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from peftpipe.tasks import KINDS, get_task, task_for_architecture, task_named_by
from peftpipe.tasks.base import CONSTANTS, FUNCTIONS

ROOT = Path(__file__).resolve().parents[1]
# bench/ is left out on purpose: its peers are tutorial-style scripts written for one task.
OUTSIDE_TASKS = sorted(p for folder in ("src/peftpipe", "stages") for p in (ROOT / folder).rglob("*.py")
                       if "tasks" not in p.relative_to(ROOT).parts)
# A model head's class name, or its suffix (prose that mentions one is not code that reads it).
HEAD_NAME = re.compile(r"\w*For(TokenClassification|SequenceClassification|CausalLM|ConditionalGeneration|Seq2SeqLM)")


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for item in node.elts for s in _strings(item)]
    return []


def task_knowledge(source: str) -> list[tuple[int, str]]:
    """(line, what) for each comparison with a task kind's name, and each use of a model
    head's class name (which tells the task from a model's architecture)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            named = [s for side in (node.left, *node.comparators) for s in _strings(side) if s in KINDS]
            found += [(node.lineno, f"compares with {name!r}") for name in named]
        elif isinstance(node, ast.Match):
            named = [s for case in node.cases for sub in ast.walk(case.pattern)
                     if isinstance(sub, ast.MatchValue) for s in _strings(sub.value) if s in KINDS]
            found += [(node.lineno, f"matches {name!r}") for name in named]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and HEAD_NAME.fullmatch(node.value):
            found.append((node.lineno, f"names a model head ({node.value!r})"))
        elif isinstance(node, ast.Attribute) and node.attr == "__name__" and isinstance(node.value, ast.Name) \
                and node.value.id == "task":
            found.append((node.lineno, "reads a task module's name"))
    return found


@pytest.mark.parametrize("path", OUTSIDE_TASKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_task_knowledge_outside_the_tasks(path):
    found = task_knowledge(path.read_text())
    assert not found, f"{path.relative_to(ROOT)}: " + "; ".join(f"line {line}: {what}" for line, what in found)


def test_the_walker_sees_each_kind_of_leak():
    """The check itself can fail: each way the seam used to leak is caught."""
    leaks = '''
if kind == "generation": pass
if task != "token_classification": pass
x = "sequence_classification" if a in ("generation", "b") else None
if name.endswith("ForTokenClassification"): pass
kind = task.__name__
match kind:
    case "generation": pass
'''
    assert sorted(line for line, _ in task_knowledge(leaks)) == [2, 3, 4, 5, 6, 7]
    assert task_knowledge('kind = "generation"\nbuild(kind="token_classification")\n') == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_task_has_the_whole_protocol_and_scores_its_own_way(kind):
    task = get_task(kind, ["neg", "pos"])
    assert task.kind == kind and task.labels == ["neg", "pos"]
    for name in CONSTANTS + FUNCTIONS:
        assert getattr(task, name) is not None, name
    assert callable(task.scores(task.labels))


def test_positive_class_and_task_options_belong_to_the_task():
    labels = ["not_equivalent", "equivalent"]
    assert get_task("sequence_classification").positive_index(labels) == 1
    assert get_task("sequence_classification").positive_index(["a", "b", "c"]) is None
    assert get_task("generation").positive_index(labels) is None  # generation's f1 is macro
    assert get_task("token_classification").positive_index(labels) is None
    assert get_task("generation").onnx_unsupported() and get_task("sequence_classification").onnx_unsupported() is None
    assert get_task("generation").loops == ("trainer",) and not get_task("generation").class_weights


def test_generation_inherits_the_data_side_and_overrides_the_model_side():
    from peftpipe.tasks import generation, sequence_classification

    gen = get_task("generation")
    assert gen.canonical is sequence_classification.canonical and gen.gold is sequence_classification.gold
    assert gen.decode is generation.decode and gen.compute_metrics is generation.compute_metrics


def test_a_plain_model_folder_is_read_by_its_head():
    assert task_for_architecture("BertForTokenClassification").kind == "token_classification"
    assert task_for_architecture("RobertaForSequenceClassification").kind == "sequence_classification"
    assert task_for_architecture("LlamaForCausalLM").kind == "generation"


@pytest.mark.parametrize(("architecture", "kind"), [
    ("BertForTokenClassification", "token_classification"), ("RobertaForSequenceClassification", "sequence_classification"),
    ("LlamaForCausalLM", "generation"), ("GPT2LMHeadModel", "generation"), ("T5ForConditionalGeneration", "generation"),
    ("BertModel", None), ("LlamaModel", None)])
def test_a_head_names_its_task_and_a_bare_encoder_none(architecture, kind):
    named = task_named_by(architecture)
    assert (named.kind if named is not None else None) == kind


def test_an_unknown_task_is_one_line():
    from peftpipe.errors import InputError

    with pytest.raises(InputError, match="task 'ner': expected one of token_classification, sequence_classification"):
        get_task("ner")


TOY_MODULE = '''"""A toy task kind for the seam test: topic classification, sequence classification's
functions under a kind of its own."""

from peftpipe.tasks.sequence_classification import SequenceClassification


class TopicClassification(SequenceClassification, module=__name__):
    kind = "topic_classification"
'''


@pytest.mark.slow
def test_a_new_task_kind_is_one_module_and_one_registry_line(tmp_path, tiny_model_dir):
    """In a copy of the package, add tasks/topic.py and one REGISTRY line, change nothing
    else, and the stages train, evaluate and export a topic_classification model."""
    import filecmp
    import shutil
    import subprocess
    import sys

    from conftest import STAGES, stage_args, venv_env, write_tiny_classifier

    from peftpipe.params import write_params

    package = Path(shutil.copytree(ROOT / "src/peftpipe", tmp_path / "src/peftpipe",
                                   ignore=shutil.ignore_patterns("__pycache__")))
    (package / "tasks/topic.py").write_text(TOY_MODULE)
    registry = (package / "tasks/__init__.py").read_text()
    line = '    "generation": ("generation", "Generation"),\n'
    assert line in registry
    (package / "tasks/__init__.py").write_text(registry.replace(
        line, line + '    "topic_classification": ("topic", "TopicClassification"),\n'))
    changed = filecmp.dircmp(ROOT / "src/peftpipe/tasks", package / "tasks", ignore=["__pycache__"])
    assert changed.right_only == ["topic.py"] and changed.diff_files == ["__init__.py"]

    project = write_tiny_classifier(tmp_path / "project", tiny_model_dir)
    write_params(project / "params.yaml", {"export": {"onnx": False}})
    text = (project / "params.yaml").read_text()  # this process's schema does not know the new kind
    assert "kind: sequence_classification" in text
    (project / "params.yaml").write_text(text.replace("kind: sequence_classification", "kind: topic_classification"))
    env = {**venv_env(), "PYTHONPATH": str(tmp_path / "src")}
    for name in [*STAGES[:4], "settings", *STAGES[4:]]:
        done = subprocess.run([sys.executable, str(ROOT / f"stages/{name}.py"), *stage_args(name)], cwd=project,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
    import json

    assert json.loads((project / "models/export/peftpipe.json").read_text())["task"] == "topic_classification"
    assert json.loads((project / "metrics/eval.json").read_text())["overall"]["accuracy"] >= 0
