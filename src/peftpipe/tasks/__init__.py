"""Task kinds. Each module knows how to tokenize-align, pick the model class, decode
predictions and compute its metrics; adding a task touches one module and this table."""

from __future__ import annotations

from types import ModuleType


def get_task(kind: str) -> ModuleType:
    from peftpipe.tasks import token_classification

    tasks = {"token_classification": token_classification}
    return tasks[kind]
