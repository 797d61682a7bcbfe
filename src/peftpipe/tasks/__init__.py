"""Task kinds: a registry of Task classes (tasks/base.py), as methods.py is for PEFT methods.

Adding a task is one module with its functions and a Task subclass, and one line in
REGISTRY (tests/test_task_seam.py adds a toy kind that way and runs it through the stages).
Nothing outside this package compares task names or guesses a task from its data:
tests/test_task_seam.py walks the source and fails on either.
"""

from __future__ import annotations

from functools import cache

from peftpipe.errors import InputError
from peftpipe.tasks.base import Task

# kind: (module in this package, its Task class). The first is the default.
REGISTRY = {
    "token_classification": ("token_classification", "TokenClassification"),
    "sequence_classification": ("sequence_classification", "SequenceClassification"),
    "generation": ("generation", "Generation"),
}
KINDS = tuple(REGISTRY)


@cache
def _classes() -> dict[str, type[Task]]:
    """The Task classes, imported when first asked for (their modules import heavy libraries)."""
    import importlib

    found = {kind: getattr(importlib.import_module(f"{__name__}.{module}"), name)
             for kind, (module, name) in REGISTRY.items()}
    assert all(cls.kind == kind for kind, cls in found.items()), "each registered class names its own kind"
    return found


def get_task(kind: str, labels=()) -> Task:
    """The task ``kind`` (task.kind in params.yaml, or a trained model's), with its labels."""
    try:
        cls = _classes()[kind]
    except KeyError:
        raise InputError(f"task {kind!r}: expected one of {', '.join(KINDS)}") from None
    return cls(labels)


def task_for_architecture(architecture: str, labels=()) -> Task:
    """The task of a plain transformers model folder, from its head class (config.json's
    architectures): a classification head names its task; a language model writes labels."""
    for cls in _classes().values():
        if cls.head_suffix and architecture.endswith(cls.head_suffix):
            return cls(labels)
    return next(cls for cls in _classes().values() if cls.head_suffix is None)(labels)


# Heads of language models, which write labels (generation); a bare encoder names no task.
LANGUAGE_MODEL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def head_fits(task: Task, architecture: str) -> bool:
    """Whether a model class (config.json's architectures) has ``task``'s head."""
    return architecture.endswith(task.head_suffix or LANGUAGE_MODEL_SUFFIXES)


def task_named_by(architecture: str) -> Task | None:
    """The task a model class's head names (config.json's architectures), or None for a
    class with no head (BertModel), which names no task."""
    heads = tuple(cls.head_suffix for cls in _classes().values() if cls.head_suffix) + LANGUAGE_MODEL_SUFFIXES
    return task_for_architecture(architecture) if architecture.endswith(heads) else None
