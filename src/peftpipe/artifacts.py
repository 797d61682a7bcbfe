"""Reading and writing what stages hand to each other (data/tokenized, models/adapter)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from peftpipe.errors import DataError
from peftpipe.io import read_json, write_json
from peftpipe.params import ModelParams, Params

LABELS_FILE = "labels.json"
TRAINED_INFO_FILE = "peftpipe.json"


def save_tokenized(datasets: dict, labels: list[str], folder: Path) -> None:
    from datasets import DatasetDict

    DatasetDict(datasets).save_to_disk(str(folder))
    write_json(folder / LABELS_FILE, labels)


def load_tokenized(folder: str | Path = "data/tokenized"):
    from datasets import load_from_disk

    folder = Path(folder)
    if not (folder / LABELS_FILE).exists():
        raise DataError(f"{folder}: no tokenized data; run `dvc repro tokenize` first")
    return load_from_disk(str(folder)), read_json(folder / LABELS_FILE)


def save_trained(model, tokenizer, labels: list[str], params: Params, folder: Path) -> None:
    """The adapter (or full model), tokenizer, label map and how to rebuild the base model."""
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    write_json(folder / TRAINED_INFO_FILE, {
        "task": params.task.kind,
        "peft_method": params.peft.method,
        "model": dataclasses.asdict(params.model),
        "labels": labels,
        "seed": params.seed,
    })


def load_trained(folder: str | Path = "models/adapter"):
    """(model, tokenizer, info) for an adapter folder written by ``save_trained``."""
    from transformers import AutoTokenizer

    from peftpipe.models import resolve_model
    from peftpipe.tasks import get_task

    folder = Path(folder)
    if not (folder / TRAINED_INFO_FILE).exists():
        raise DataError(f"{folder}: no trained model; run `dvc repro train` first")
    info = read_json(folder / TRAINED_INFO_FILE)
    task = get_task(info["task"])
    if info["peft_method"] == "none":
        model = task.load_model(str(folder), info["labels"])
    else:
        from peft import PeftModel

        base_params = ModelParams(**info["model"])
        base = task.load_model(resolve_model(base_params), info["labels"], base_params.revision)
        model = PeftModel.from_pretrained(base, str(folder))
    return model, AutoTokenizer.from_pretrained(str(folder)), info
