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
from peftpipe.tasks import get_task, head_fits, task_named_by

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
    # Whether it was trained on text pairs (data.columns.text_pair): serving refuses the other
    # kind of input. None: an older folder that did not say.
    pairs: bool | None = None
    # What made it: the training run's fingerprint (checkpoints.fingerprint: seed, task, model
    # and train params, the method's settings, the data's own fingerprints). /v1/models shows
    # it, so two served models from different runs can be told apart. None: an older folder.
    fingerprint: str | None = None

    @property
    def method(self) -> Method:
        return get_method(self.peft_method)


def trained_info(params: Params, method: Method, labels: list[str], pairs: bool, fingerprint: str) -> TrainedInfo:
    """What a model trained with ``params`` is (peftpipe.json): read from params once, here.
    ``pairs``: its training rows were text pairs; ``fingerprint``: the run's (checkpoints.fingerprint)."""
    return TrainedInfo(task=params.task.kind, peft_method=method.name, model=params.model,
                       quantization=params.quantization if method.quantized else None, labels=labels,
                       seed=params.seed, pairs=pairs, fingerprint=fingerprint)


def save_trained(model, tokenizer, method: Method, info: TrainedInfo, folder: Path) -> None:
    """The adapter (or full model), tokenizer, label map and how to rebuild the base model."""
    method.save(model, folder)
    tokenizer.save_pretrained(str(folder))
    write_info(folder, info)


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


# A tokenizer is its vocabulary: without one of these files transformers builds a tokenizer
# of the special tokens alone, and every word becomes [UNK] without an error.
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model")


def check_model_folder(folder: Path, info: TrainedInfo) -> None:
    """A trained or exported folder is what its peftpipe.json says, checked when it is
    opened (predict, serve, export's reload, the ONNX backend): its vocabulary file is
    there, and where it has a config.json, that config's head is the task's and its
    id2label the labels, in order. Each mismatch one ModelError naming the file and both
    values."""
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise ModelError(f"{folder}: no tokenizer vocabulary (none of {', '.join(VOCABULARY_FILES)}); "
                         f"export the model again (dvc repro export)")
    path = folder / "config.json"
    if not path.is_file():
        return  # an adapter folder: its base is checked as it loads
    config = inspect_model_folder(folder, already_read=(TRAINED_INFO_FILE,))
    task = get_task(info.task, info.labels)
    architecture = (config.get("architectures") or [""])[0]
    named = task_named_by(architecture)
    if named is not None and not head_fits(task, architecture):
        raise ModelError(f"{path}: architecture {architecture} is a {named.kind} model, but "
                         f"{TRAINED_INFO_FILE} says task {info.task}; export the model again")
    if named is None or task.writes_labels:
        return  # no head to check (a bare encoder), or labels are words a language model writes
    id2label = config.get("id2label")
    if not isinstance(id2label, dict):
        raise ModelError(f"{path}: no id2label; {TRAINED_INFO_FILE} names {len(info.labels)} labels")
    try:
        in_order = [id2label[str(i)] for i in range(len(id2label))]
    except KeyError:
        raise ModelError(f"{path}: id2label's keys are not 0..{len(id2label) - 1}: {sorted(id2label)[:5]}") from None
    if in_order != info.labels:
        raise ModelError(f"{path}: id2label {_shown(in_order)} differs from {TRAINED_INFO_FILE}'s labels "
                         f"{_shown(info.labels)}; a model folder's two label lists must agree in order")


def check_vocabulary(folder: Path, tokenizer, embedding_rows: int) -> None:
    """The tokenizer's ids fit the model's embedding table, and fill most of it (a
    vocabulary far smaller than the table is a lost or foreign tokenizer file)."""
    size = len(tokenizer)
    if size > embedding_rows or size < embedding_rows // 2:
        raise ModelError(f"{folder}: the tokenizer has {size:,} tokens but the model's embeddings have "
                         f"{embedding_rows:,} rows; the tokenizer files are not this model's (export it again)")


def _shown(labels: list[str], most: int = 6) -> str:
    return repr(labels[:most])[:-1] + (f", ... {len(labels)} in all]" if len(labels) > most else "]")


def load_trained(folder: str | Path, quantized: bool = True, adapter_name: str = "default",
                 info: TrainedInfo | None = None):
    """(model, tokenizer, info) for an adapter folder written by ``save_trained``.

    A qlora adapter goes onto its 4-bit base, as trained; ``quantized=False`` puts it on a
    full-precision base instead (what export merges into). ``adapter_name``: the name peft
    keeps it under (serving puts several adapters on one base). ``info``: the folder's
    peftpipe.json, when the caller has read it already.
    """
    from transformers import AutoTokenizer


    folder = Path(folder)
    if not (folder / TRAINED_INFO_FILE).exists():
        raise DataError(f"{folder}: no trained model; run `dvc repro train` first")
    if info is None:  # else the caller read and checked it
        info = read_trained_info(folder)
        check_model_folder(folder, info)
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
    check_vocabulary(folder, tokenizer, model.get_input_embeddings().num_embeddings)
    return model, tokenizer, info
