"""Reading and writing what stages hand to each other (data/tokenized, models/adapter)."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from peftpipe.errors import DataError, ModelError
from peftpipe.io import read_json, read_json_file, write_json
from peftpipe.methods import METHODS, Method, get_method
from peftpipe.models import inspect_model_folder, load_task_model, resolve_model
from peftpipe.params import ModelParams, Params, QuantizationParams, TaskKind
from peftpipe.tasks import get_task

TASKS = typing.get_args(TaskKind)

LABELS_FILE = "labels.json"
TRAINED_INFO_FILE = "peftpipe.json"


def save_tokenized(datasets: dict, labels: list[str], folder: Path) -> None:
    from datasets import DatasetDict

    DatasetDict(datasets).save_to_disk(str(folder))
    write_json(folder / LABELS_FILE, labels)


def load_tokenized(folder: str | Path):
    from datasets import load_from_disk

    folder = Path(folder)
    if not (folder / LABELS_FILE).exists():
        raise DataError(f"{folder}: no tokenized data; run `dvc repro tokenize` first")
    return load_from_disk(str(folder)), read_json(folder / LABELS_FILE)


class TrainedInfo(BaseModel):
    """peftpipe.json: what a trained or exported model folder is, for every stage and tool
    that loads one (how to rebuild the base, the labels the head predicts)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    task: TaskKind
    peft_method: str  # after export, "none" for a merged model (merged_from names the method)
    model: ModelParams
    # qlora: how the base was quantized, so evaluate scores the model as it was trained
    quantization: QuantizationParams | None = None
    labels: list[str]
    seed: int = 42
    merged_from: str | None = None
    # An export's test scores with their 95% intervals ({"f1": {"value", "low", "high"}}):
    # what `peftpipe serve`'s /v1/models shows beside the model.
    test: dict | None = None

    @property
    def method(self) -> Method:
        return get_method(self.peft_method)


def save_trained(model, tokenizer, labels: list[str], params: Params, folder: Path) -> None:
    """The adapter (or full model), tokenizer, label map and how to rebuild the base model."""
    get_method(params.peft.method).save(model, folder)
    tokenizer.save_pretrained(str(folder))
    quantized = get_method(params.peft.method).quantized
    write_info(folder, TrainedInfo(task=params.task.kind, peft_method=params.peft.method, model=params.model,
                                   quantization=params.quantization if quantized else None, labels=labels,
                                   seed=params.seed))


def write_info(folder: Path, info: TrainedInfo) -> None:
    write_json(folder / TRAINED_INFO_FILE, info.model_dump(exclude_none=False))


def read_trained_info(folder: Path) -> TrainedInfo:
    """peftpipe.json of a trained or exported model, checked: a hand-edited or damaged one
    stops here, naming the file and the key."""
    path = folder / TRAINED_INFO_FILE
    info = read_json_file(path, ModelError)
    if not isinstance(info, dict):
        raise ModelError(f"{path}: expected a JSON object")
    for key in ("task", "labels", "peft_method", "model"):
        if key not in info:
            raise ModelError(f"{path}: no {key!r}; export the model again (dvc repro export)")
    if info["task"] not in TASKS:
        raise ModelError(f"{path}: task {info['task']!r} is not one of {', '.join(TASKS)}")
    if not isinstance(info["labels"], list) or not info["labels"] or not all(isinstance(x, str) for x in info["labels"]):
        raise ModelError(f"{path}: labels: expected a non-empty list of names")
    if info["peft_method"] not in METHODS:
        raise ModelError(f"{path}: peft_method {info['peft_method']!r} is not one of {', '.join(METHODS)}")
    try:
        return TrainedInfo.model_validate(info)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"]))
        raise ModelError(f"{path}: {where}: {first['msg']}; export the model again (dvc repro export)") from None


def load_trained(folder: str | Path, quantized: bool = True, adapter_name: str = "default"):
    """(model, tokenizer, info) for an adapter folder written by ``save_trained``.

    A qlora adapter goes onto its 4-bit base, as trained; ``quantized=False`` puts it on a
    full-precision base instead (what export merges into). ``adapter_name``: the name peft
    keeps it under (serving puts several adapters on one base).
    """
    from transformers import AutoTokenizer


    folder = Path(folder)
    if not (folder / TRAINED_INFO_FILE).exists():
        raise DataError(f"{folder}: no trained model; run `dvc repro train` first")
    info = read_trained_info(folder)
    if not info.method.is_adapter or (folder / "config.json").exists():
        inspect_model_folder(folder)
    task = get_task(info.task)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if not info.method.is_adapter:
        model = load_task_model(task, str(folder), info.labels, tokenizer)
    else:
        from peft import PeftModel

        quantization = info.quantization if quantized else None
        base = load_task_model(task, resolve_model(info.model), info.labels, tokenizer, info.model.revision,
                               quantization)
        model = info.method.prepare(PeftModel.from_pretrained(base, str(folder), adapter_name=adapter_name), task)
    return model, tokenizer, info
