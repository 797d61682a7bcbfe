"""The task seam: one class per task kind, built once with its labels and handed to whoever
needs it. Everything that differs by task lives on it, so no module outside ``tasks/``
compares task names or guesses the task from the shape of its data.

A task is two layers:
- its module's functions (reading and checking fields, tokenize/align, head, collator,
  decoding, the one definition of every score), bound here by name: ``FUNCTIONS`` is the
  protocol, and a task class that lacks one fails at import;
- what the rest of the package used to work out for itself: which class ``f1`` is for
  (``positive_index``), per-example counts and the scores built from them (one bootstrap
  for intervals and for paired comparisons), how serving reads and answers, whether it
  exports to ONNX, which training options it admits.
"""

from __future__ import annotations

import sys
from typing import ClassVar

import numpy as np

from peftpipe import intervals as _intervals

CONSTANTS = ("PIPELINE_TAG", "REFERENCE_NAME", "PER_CLASS_KEY")
FUNCTIONS = (
    # data
    "canonical", "row_keys", "label_values", "default_labels", "hub_label_names", "data_report",
    # model
    "tokenize", "truncation", "load_model", "peft_task_type", "head_modules", "collator", "model_inputs",
    "gold", "train_label_ids", "predict_logits", "decode",
    # serving and scores
    "pipeline_input", "prediction_rows", "confusion_rows", "reference_predictions", "compute_metrics",
    "trainer_metrics",
)
OPTIONAL = ("preprocess_logits", "sentences_from_word_rows", "write_labels", "pipeline_outputs")


class Task:
    """A task kind with its labels (in data.labels order; empty where the task needs none)."""

    kind: ClassVar[str]
    # The transformers head class name ends with this (a plain model folder's task); None: no head.
    head_suffix: ClassVar[str | None] = None
    # One prediction per token (NER) rather than per text.
    per_token: ClassVar[bool] = False
    # Rows may be text pairs.
    reads_pairs: ClassVar[bool] = False
    # Serving writes the label as text (no classification pipeline, no ONNX graph).
    writes_labels: ClassVar[bool] = False
    # Training options it admits (the params schema checks them against these).
    samples_per_class: ClassVar[bool] = False
    loops: ClassVar[tuple[str, ...]] = ("trainer", "accelerate")
    class_weights: ClassVar[bool] = True
    preprocess_logits = None
    sentences_from_word_rows = None
    # Serving a model that writes its labels (writes_labels): (model, tokenizer, texts,
    # labels, max_length, batch_size) -> [(label, probability)].
    write_labels = None
    # Serving: (model, tokenizer, texts, batch_size, **pipeline_options) -> what the
    # transformers pipeline outputs for each text, computed faster; None: the pipeline runs.
    pipeline_outputs = None

    def __init_subclass__(cls, module: str | None = None, **kwargs):
        """Bind the protocol from ``module``: what the module defines itself overrides what
        the parent class has (generation keeps sequence classification's data side)."""
        super().__init_subclass__(**kwargs)
        if module is None:
            return
        found = vars(sys.modules[module])
        for name in CONSTANTS + FUNCTIONS + OPTIONAL:
            value = found.get(name)
            if value is None or (getattr(value, "__module__", module) != module and hasattr(cls, name)):
                continue  # absent, or another module's function where the parent task has one
            setattr(cls, name, staticmethod(value) if callable(value) else value)
        missing = [name for name in CONSTANTS + FUNCTIONS if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"task {cls.__name__} ({module}) lacks {', '.join(missing)}")

    def __init__(self, labels=()):
        self.labels = list(labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(labels={self.labels[:5]}{'...' if len(self.labels) > 5 else ''})"

    # ----------------------------------------------------------------------- scores

    def f1_meaning(self, labels: list[str]) -> str:
        """What ``f1`` is in this task's scores, for the files and tables that show it (a
        two-class classifier's f1 is its positive class's; otherwise macro over the classes)."""
        index = self.positive_index(labels)
        return f"F1 of the positive class {labels[index]!r}" if index is not None else \
            f"macro F1 over {len(labels)} classes"

    def positive_index(self, labels: list[str]) -> int | None:
        """Which class ``f1`` is for; None where f1 is not one class's."""
        return None

    def labels_in(self, gold) -> set[str]:
        """The labels one example's gold value holds."""
        return {str(gold)}

    def counts(self, gold: list, predicted: list, labels: list[str]) -> dict[str, np.ndarray]:
        """Per-example counts whose sums give every headline score (rows = examples)."""
        raise NotImplementedError

    def scores(self, labels: list[str]):
        """A function from summed counts (any leading resample axes) to {metric: values}."""
        raise NotImplementedError

    def intervals(self, gold: list, predicted: list, labels: list[str], seed: int = 0) -> dict[str, list[float]]:
        """{metric: [low, high]}: seeded bootstrap 95% intervals of the headline scores."""
        return _intervals.bootstrap(self.counts(gold, predicted, labels), self.scores(labels), seed)

    # ----------------------------------------------------------------------- serving

    def onnx_unsupported(self) -> str | None:
        """Why this task's models do not export to ONNX, or None."""
        return None

    def serving_input_problem(self, texts: list, backend: str) -> str | None:
        """Why these inputs cannot be served by this task's model, or None."""
        if texts and isinstance(texts[0], dict) and not self.reads_pairs:
            return f"a {self.kind.replace('_', ' ')} model reads one text, not pairs; drop --pair"
        return None

    def pipeline_options(self, tokenizer) -> dict:
        """Keyword arguments of the transformers pipeline that serves this task."""
        return {}

    def answer(self, text, output, tokens: int | None, limit: int):
        """One served answer from the pipeline's output for ``text`` (``tokens`` long; None
        where the task's ``pipeline_outputs`` answered, which reads a text whole in windows)."""
        raise NotImplementedError

    def answer_row(self, given, answer) -> dict:
        """The input with its answer, as `peftpipe predict --json` prints it and the server
        returns it: the text (or pair) and the class with its score."""
        return {**(given if isinstance(given, dict) else {"text": given}), **answer}


class ClassCounts(Task):
    """Scores from per-row one-hot class counts: the classification tasks."""

    def counts(self, gold, predicted, labels):
        return _intervals.class_counts(gold, predicted, labels)

    def scores(self, labels):
        positive = self.positive_index(labels)
        return lambda sums: _intervals.class_scores(sums, positive)


def register(*classes: type[Task]) -> dict[str, type[Task]]:
    return {cls.kind: cls for cls in classes}
