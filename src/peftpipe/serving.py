"""Serving an exported model: the transformers pipeline for classification, label writing
for generation; what `peftpipe predict` and the export stage's pipeline check use."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from peftpipe import quiet
from peftpipe.artifacts import (
    TRAINED_INFO_FILE,
    TrainedInfo,
    check_model_folder,
    check_vocabulary,
    load_trained,
    read_trained_info,
)
from peftpipe.errors import ModelError
from peftpipe.models import inspect_model_folder
from peftpipe.tasks import Task, get_task, task_for_architecture


def folder_info(folder: Path) -> TrainedInfo | None:
    """A model folder's peftpipe.json, read and checked against the folder once (None for a
    plain transformers folder given to `peftpipe predict --model`)."""
    if not (folder / TRAINED_INFO_FILE).exists():
        return None
    info = read_trained_info(folder)
    check_model_folder(folder, info)
    return info


def served_task(folder: Path, info: TrainedInfo | None) -> Task:
    """The task of a model folder: from its peftpipe.json (``info``, read by the caller), or
    from the model class in config.json (a plain transformers folder: ``info`` None)."""
    if info is not None:
        return get_task(info.task, info.labels)
    architectures = inspect_model_folder(folder).get("architectures") or [""]
    return task_for_architecture(architectures[0])


def chosen_backend(folder: Path, backend: str) -> str:
    """What ``backend`` "auto" runs: the export's float32 ONNX graph where the folder has one
    (the export stage writes it only after it agreed with the trained model on every test
    prediction, within export.logits_tolerance), else PyTorch. Served, ONNX Runtime answered
    12% more requests a second than PyTorch on the default's export (docs/performance.md)."""
    if backend != "auto":
        return backend
    from peftpipe import onnx_backend

    return "onnx" if (Path(folder) / onnx_backend.FOLDER / onnx_backend.FILES["onnx"]).is_file() else "torch"


def inference_pipeline(folder: Path, backend: str = "torch", adapter_name: str = "default", task: Task | None = None,
                       info: TrainedInfo | None = None):
    """The transformers pipeline for an exported classification model; a prompt-method
    adapter goes onto its base model first. ``backend`` onnx or int8: the exported ONNX
    graph runs the model, through ONNX Runtime. ``task``, ``info``: the folder's, when the
    caller has read them already."""
    from transformers import AutoTokenizer, pipeline

    folder = Path(folder)
    info = info if info is not None else folder_info(folder)
    task = task or served_task(folder, info)
    if task.writes_labels:
        raise ModelError(f"{folder}: a {task.kind} model has no classification pipeline; use Predictor")
    model, tokenizer = str(folder), None
    if backend != "torch":
        from peftpipe import onnx_backend

        model, tokenizer = onnx_backend.load(folder, backend, task), AutoTokenizer.from_pretrained(str(folder))
        check_vocabulary(folder, tokenizer, model.config.vocab_size)
        if info is not None:
            tokenizer.model_max_length = info.model.max_length
    elif info is not None:
        model, tokenizer, info = load_trained(folder, adapter_name=adapter_name, info=info)
        # Windows of the length the model was trained on, not the architecture's limit.
        tokenizer.model_max_length = info.model.max_length
    return pipeline(task.PIPELINE_TAG, model=model, tokenizer=tokenizer, device="cpu",
                    **task.pipeline_options(tokenizer))


def check_pipeline(folder: Path, task, example: dict):
    """The exported folder works in the transformers pipeline for its task. (Generation is
    checked by regenerating the whole test split with the reloaded model instead.)"""
    text = task.pipeline_input(example)
    return None if text is None else inference_pipeline(folder)(text)


# Texts served together: the pipeline's per-text Python work and the model's per-call
# overhead dominate one short text, so batching pays (bench/README.md); more than 16 rows
# gained nothing further.
BATCH_SIZE = 16


class Predictor:
    """An exported model loaded once, answering lists of texts: what `peftpipe predict` runs
    once and `peftpipe serve` keeps loaded. What differs by task is the task's (answer,
    pipeline options, input problems)."""

    def __init__(self, folder: Path, backend: str = "auto", adapter_name: str = "default",
                 info: TrainedInfo | None = None):
        folder = Path(folder)
        if not exported(folder):
            raise ModelError(f"{folder}: no exported model here; run `dvc repro` first (or pass --model)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        quiet.install()
        self.info = info if info is not None else folder_info(folder)  # ``info``: read and checked by the caller
        backend = chosen_backend(folder, backend)
        self.folder, self.backend, self.task = folder, backend, served_task(folder, self.info)
        problem = self.task.serving_input_problem([], backend)
        if problem:
            raise ModelError(f"{folder}: {problem}")
        self.adapter, self.shared = adapter_name, False
        if self.task.writes_labels:
            self.model, self.tokenizer, self.info = load_trained(folder, adapter_name=adapter_name, info=self.info)
        else:
            self.classify = inference_pipeline(folder, backend, adapter_name, self.task, self.info)
            self.model = self.classify.model

    @staticmethod
    def base_key(folder: Path, backend: str, info: TrainedInfo | None) -> tuple | None:
        """What a trained adapter folder needs of its base (model, revision, task, labels,
        4-bit or not): adapters with the same key can share one copy of the base. None for
        a plain (merged) model or an ONNX graph. ``info``: the folder's peftpipe.json (None
        where it has none)."""
        folder = Path(folder)
        if backend != "torch" or info is None or not (folder / "adapter_config.json").exists():
            return None
        # An adapter that trained biases (lora.bias all or lora_only) changed the base's own
        # bias vectors: peft keeps one such adapter per model, so it gets a base of its own.
        if json.loads((folder / "adapter_config.json").read_text()).get("bias", "none") != "none":
            return None
        return (info.task, info.model.source, info.model.name, info.model.revision, tuple(info.labels),
                info.method.quantized, info.method.name)

    def sharing(self, folder: Path, adapter_name: str, info: TrainedInfo | None = None) -> Predictor:
        """Another adapter of the same base, loaded onto this predictor's model under
        ``adapter_name``: one copy of the base in memory; each call selects its adapter."""
        self.model.load_adapter(str(folder), adapter_name=adapter_name)
        self.shared = True
        other = copy.copy(self)  # the same model, pipeline and task; its own folder and adapter
        other.folder, other.adapter = Path(folder), adapter_name
        other.info = info if info is not None else folder_info(Path(folder))  # its own card and scores
        return other

    @property
    def runs_in_parallel(self) -> bool:
        """Whether batches may run through this model at once: a classifier's forward keeps
        no state; generation and adapters sharing a base (set_adapter per call) do."""
        return not self.task.writes_labels and not self.shared

    def input_problem(self, texts: list) -> str | None:
        problem = self.task.serving_input_problem(texts, self.backend)
        if problem is None and self.info is not None and self.info.pairs is False and \
                any(isinstance(text, dict) for text in texts):
            problem = "this model was trained on single texts, not pairs; give texts (drop --pair)"
        return problem

    def __call__(self, texts: list[str | dict], batch_size: int = BATCH_SIZE) -> list:
        """Per text: entity spans (token classification, aggregation_strategy=first: whole words), the class
        with its score (sequence classification; a text may be a ``{"text", "text_pair"}`` dict
        for models trained on pairs), or the label a generation model writes, with its probability.

        An entity's ``word`` is cut from the input text by the offsets, so an uncased model
        still shows the text as written. Texts run ``batch_size`` at a time, of similar length
        (little padding); the answers come back in the input's order, as one at a time would
        give them (padding moves a score by float rounding at most).
        """
        problem = self.input_problem(texts)
        if problem:
            raise ModelError(f"{self.folder}: {problem}")
        if not texts:
            return []
        if self.shared and self.model.active_adapter != self.adapter:
            self.model.set_adapter(self.adapter)  # a base shared by several adapters: this call's
        if self.task.writes_labels:
            written = self.task.write_labels(self.model, self.tokenizer, texts, self.info.labels,
                                             self.info.model.max_length, batch_size)
            return [{"label": label, "score": round(p, 4)} for label, p in written]
        classify = self.classify
        batch_size = served_batch_size(self.backend, batch_size)
        if self.task.pipeline_outputs is not None and not any(isinstance(text, dict) for text in texts):
            # The task's own path tokenizes once and reads a long text in windows, whole:
            # there is no cut to report, so no second tokenizer pass to count tokens.
            outputs = self.task.pipeline_outputs(classify.model, classify.tokenizer, texts, batch_size,
                                                 **self.task.pipeline_options(classify.tokenizer))
            lengths = [None] * len(texts)
        else:
            # Pairs ({"text", "text_pair"}) batch like single texts: the pipeline reads each dict as one input.
            lengths = token_counts(classify.tokenizer, texts)
            outputs = in_length_order(classify, texts, lengths, batch_size)
        limit = classify.tokenizer.model_max_length
        return [self.task.answer(text, output, n, limit) for text, output, n in zip(texts, outputs, lengths)]

    def rows(self, texts: list[str | dict], answers: list) -> list[dict]:
        """`peftpipe predict --json`'s rows: each input with its answer."""
        return [self.task.answer_row(text, answer) for text, answer in zip(texts, answers)]


def token_counts(tokenizer, texts: list[str | dict]) -> list[int]:
    """Each input's token count: one tokenizer call for the single texts, a pair's two texts
    counted together."""
    singles = [text for text in texts if not isinstance(text, dict)]
    single_counts = iter([len(ids) for ids in tokenizer(singles)["input_ids"]] if singles else [])
    return [len(tokenizer(text["text"], text["text_pair"])["input_ids"]) if isinstance(text, dict)
            else next(single_counts) for text in texts]


def served_batch_size(backend: str, batch_size: int) -> int:
    """int8 serves one text at a time: ONNX Runtime quantizes a batch's activations with one
    scale, so a text's answer would depend on the texts batched with it."""
    return 1 if backend == "int8" else max(1, batch_size)


def in_length_order(classify, texts: list, lengths: list[int], batch_size: int) -> list:
    """The pipeline's outputs for ``texts``, run in batches of similar token length and
    returned in the input's order."""
    if batch_size == 1:
        return list(classify(texts))
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    outputs = [None] * len(texts)
    for i, output in zip(order, classify([texts[i] for i in order], batch_size=batch_size)):
        outputs[i] = output
    return outputs


def exported(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
