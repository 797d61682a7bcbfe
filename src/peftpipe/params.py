"""The params schema: params.yaml is validated here, once, into typed objects.

Every section is a frozen dataclass. ``load_params`` walks the YAML against the type hints
and fails on the first problem with one line that names the file, the key, the value and
what is allowed (with a did-you-mean for misspelt keys). Range checks live in each
section's ``__post_init__`` so the rule sits next to the field it guards.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from peftpipe.errors import ParamsError

TaskKind = Literal["token_classification", "sequence_classification", "generation"]
ModelSource = Literal["packaged", "local", "hub"]
DataSource = Literal["packaged", "local", "hub"]
DataFormat = Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "conll", "text@label", "orange-tab"]
PeftMethod = Literal["none", "lora", "qlora", "p_tuning", "prefix_tuning"]
LoraBias = Literal["none", "all", "lora_only"]
MixedPrecision = Literal["no", "bf16", "fp16"]
TrainLoop = Literal["trainer", "accelerate"]
SPLITS = ("train", "validation", "test")
SEED_RANGE = (0, 2**32 - 1)  # what numpy's and torch's seeding accept
MAX_BATCH = 65536
MAX_LENGTH = 1 << 20


class _Invalid(Exception):
    """Raised inside a section's checks; turned into a ParamsError naming the key."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(key, value, allowed)
        self.key, self.value, self.allowed = key, value, allowed


def _at_most(key: str, value: float, high: float, allowed: str) -> None:
    """Upper bounds catch a typo (an extra zero or three) before it becomes an out-of-memory
    crash an hour in; the lower bounds and their messages live with each field."""
    if value > high:
        raise _Invalid(key, value, allowed)


def _named(key: str, value) -> None:
    """A name (a column, a module) that is not blank."""
    names = value if isinstance(value, list) else [value]
    if any(isinstance(name, str) and not name.strip() for name in names):
        raise _Invalid(key, value, "non-empty names")


def _seed(key: str, value: int) -> None:
    low, high = SEED_RANGE
    if not low <= value <= high:
        raise _Invalid(key, value, f"an integer in [{low}, {high}]")


@dataclass(frozen=True)
class TaskParams:
    kind: TaskKind = "token_classification"


Column = Union[str, int]  # a name, or a position in a file without a header row (data.header: false)


@dataclass(frozen=True)
class ColumnsParams:
    """Which source columns hold the task's fields (each task reads its own)."""

    # token_classification: the words and their tags
    tokens: Column = "tokens"
    tags: Column = "tags"
    # sequence_classification: the text (several columns are joined with a space, e.g.
    # [title, description]), an optional second text (pairs), the class
    text: Union[Column, list[Column]] = "text"
    text_pair: Optional[Column] = None
    label: Column = "label"

    def __post_init__(self) -> None:
        # Column names are strings; a header-less file's columns are named "0", "1", ...
        for key in ("tokens", "tags", "text_pair", "label"):
            if isinstance(getattr(self, key), int):
                object.__setattr__(self, key, str(getattr(self, key)))
        text = [str(c) for c in self.text] if isinstance(self.text, list) else str(self.text)
        if isinstance(text, list) and not text:
            raise _Invalid("text", self.text, "a column, or a non-empty list of columns to join")
        for key in ("tokens", "tags", "label"):
            _named(key, getattr(self, key))
        for column in text if isinstance(text, list) else [text]:
            _named("text", column)
        object.__setattr__(self, "text", text)

    @property
    def text_columns(self) -> list[str]:
        return self.text if isinstance(self.text, list) else [self.text]


@dataclass(frozen=True)
class DataParams:
    source: DataSource = "packaged"
    # packaged: a name from peftpipe.sources.PACKAGED_DATASETS; hub: a dataset id
    # (or a folder laid out like a hub dataset repository).
    name: Optional[str] = "wnut16"
    config: Optional[str] = None
    revision: Optional[str] = None
    # local: one file per split, e.g. {train: path/train.jsonl}
    files: dict[str, str] = field(default_factory=dict)
    format: DataFormat = "auto"
    encoding: str = "utf-8"
    # csv/tsv: false when the first row is data; columns are then named "0", "1", ...
    header: bool = True
    columns: ColumnsParams = field(default_factory=ColumnsParams)
    # The label set: a list in id order, or a mapping from the ids in the data to names
    # ({1: World, 2: Sports}). Left empty, it is read from the data (NER: O first; classes:
    # sorted). Integer labels in the data are ids into it.
    labels: Union[list[str], dict[int, str]] = field(default_factory=list)
    # An I-X that does not continue an X entity (IOB1 files, broken data):
    # fix turns it into B-X (counted in data/raw/meta.json), reject stops with the row named.
    on_invalid_bio: Literal["fix", "reject"] = "fix"
    # How the tags mark entities: iob2 (B-X starts, I-X continues; IOB1 is fixed per
    # on_invalid_bio), io (bare types: PER PER O LOC), bioes (S- single, E- end). io and
    # bioes are converted to IOB2 (counted in data/raw/meta.json); a bare tag in iob2 stops.
    tag_scheme: Literal["iob2", "io", "bioes"] = "iob2"

    @property
    def label_names(self) -> list[str]:
        """The label set in id order."""
        if isinstance(self.labels, dict):
            return [self.labels[k] for k in sorted(self.labels)]
        return list(self.labels)

    @property
    def label_ids(self) -> dict[int, str]:
        """Id in the data -> name."""
        return dict(self.labels) if isinstance(self.labels, dict) else dict(enumerate(self.labels))

    def __post_init__(self) -> None:
        if len(set(self.label_names)) != len(self.label_names):
            twice = sorted({n for n in self.label_names if self.label_names.count(n) > 1})
            raise _Invalid("labels", self.labels, f"each name once ({', '.join(twice)} given twice)")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise _Invalid("encoding", self.encoding,
                           "an encoding Python knows (utf-8, latin-1, cp1252, utf-16, ...)") from None
        if self.source in ("packaged", "hub") and not self.name:
            raise _Invalid("name", self.name, f"a dataset name (data.source is {self.source})")
        if self.source == "local":
            if "train" not in self.files:
                raise _Invalid("files", self.files, "a mapping with at least a 'train' file")
            for split in self.files:
                if split not in SPLITS:
                    raise _Invalid(f"files.{split}", self.files[split], f"splits {', '.join(SPLITS)}")


@dataclass(frozen=True)
class SplitParams:
    """Fractions of the source's train split carved out for splits the source lacks, then
    (optionally) a class-balanced sample of each split."""

    seed: int = 42
    validation: float = 0.1
    test: float = 0.1
    # Rows per class to sample from each named split, e.g. {train: 2000, validation: 500,
    # test: 500} (sequence_classification). Empty: keep every row.
    per_class: dict[str, int] = field(default_factory=dict)
    # A class with fewer rows than per_class asks: take what there is (and say so) or fail.
    on_short_class: Literal["take", "fail"] = "take"
    # Keep rows that share this column's value on one side of a carved split (sentences of
    # one document, messages of one user). CoNLL files give `document` (-DOCSTART- blocks).
    group_by: Optional[str] = None
    # validation/test rows that repeat a train row: warn (and count them in
    # metrics/data.json), drop them, or fail.
    on_leakage: Literal["warn", "drop", "fail"] = "warn"

    def __post_init__(self) -> None:
        _seed("seed", self.seed)
        for key in ("validation", "test"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise _Invalid(key, getattr(self, key), "a fraction in (0, 1)")
        if self.validation + self.test >= 1.0:
            raise _Invalid("test", self.test, f"validation + test below 1 (validation is {self.validation})")
        for split, count in self.per_class.items():
            if split not in SPLITS:
                raise _Invalid(f"per_class.{split}", count, f"splits {', '.join(SPLITS)}")
            if count <= 0:
                raise _Invalid(f"per_class.{split}", count, "an integer > 0")


@dataclass(frozen=True)
class ModelParams:
    source: ModelSource = "packaged"
    # packaged: a name from peftpipe.models.PACKAGED_MODELS; local: a folder; hub: a model id
    name: str = "all-MiniLM-L6-v2"
    revision: Optional[str] = None
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise _Invalid("max_length", self.max_length, "an integer >= 8")
        _at_most("max_length", self.max_length, MAX_LENGTH, f"an integer in [8, {MAX_LENGTH}]")


@dataclass(frozen=True)
class TokenizeParams:
    # true: continuation sub-words get the word's I- tag (the course's align_labels_with_tokens);
    # false: only a word's first sub-word is labelled, the rest are ignored (-100).
    label_all_tokens: bool = False


@dataclass(frozen=True)
class PeftParams:
    method: PeftMethod = "lora"
    # Modules trained in full and saved with the adapter, besides the new head (which always
    # is): e.g. [pooler] for a sentence-embedding encoder whose pooler was never trained.
    modules_to_save: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _named("modules_to_save", self.modules_to_save)


@dataclass(frozen=True)
class LoraParams:
    r: int = 16
    alpha: float = 16
    dropout: float = 0.1
    bias: LoraBias = "all"
    # Empty: peft's default for the architecture (query/value for BERT and RoBERTa).
    target_modules: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise _Invalid("r", self.r, "an integer > 0")
        _at_most("r", self.r, 65536, "an integer in [1, 65536]")
        if self.alpha <= 0:
            raise _Invalid("alpha", self.alpha, "a number > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise _Invalid("dropout", self.dropout, "a number in [0, 1)")
        _named("target_modules", self.target_modules)


@dataclass(frozen=True)
class PromptParams:
    """Prompt methods: virtual tokens learned in front of every input (p_tuning) or in
    front of every layer's keys and values (prefix_tuning)."""

    num_virtual_tokens: int = 20
    encoder_hidden_size: int = 128  # p_tuning's prompt encoder (an MLP)

    def __post_init__(self) -> None:
        if self.num_virtual_tokens <= 0:
            raise _Invalid("num_virtual_tokens", self.num_virtual_tokens, "an integer > 0")
        if self.encoder_hidden_size <= 0:
            raise _Invalid("encoder_hidden_size", self.encoder_hidden_size, "an integer > 0")
        _at_most("num_virtual_tokens", self.num_virtual_tokens, 4096, "an integer in [1, 4096]")
        _at_most("encoder_hidden_size", self.encoder_hidden_size, 65536, "an integer in [1, 65536]")


@dataclass(frozen=True)
class QuantizationParams:
    """How qlora loads the base model in 4 bits (bitsandbytes)."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    # auto: bfloat16 on a GPU, float32 on CPU (bf16 compute is 20x slower there)
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Recompute activations in the backward pass: less memory, about a third slower.
    gradient_checkpointing: bool = True


@dataclass(frozen=True)
class TrainParams:
    epochs: float = 5
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    # A number below 1 is a fraction of the total steps, as in transformers 5.
    warmup_steps: float = 0.0
    # -1: run the full number of epochs.
    max_steps: int = -1
    logging_steps: int = 20
    # Batch sentences of similar length together: less padding, same examples per epoch.
    group_by_length: bool = True
    # Save a resumable checkpoint every this many steps (0: never). A killed train stage
    # resumes from the last complete one on the next `dvc repro`.
    checkpoint_steps: int = 100
    # trainer: the transformers Trainer (resumable, length-grouped batches); accelerate: the
    # course's custom loop (DataLoader, AdamW, linear schedule, accelerator.backward).
    loop: TrainLoop = "trainer"
    # How dvc.yaml starts the train stage: `python`, or `accelerate launch --config_file
    # accelerate/<name>.yaml` for several processes, GPUs or machines (see accelerate/).
    launcher: str = "python"
    # Autocast on GPUs; an accelerate config's mixed_precision applies when this is "no".
    mixed_precision: MixedPrecision = "no"
    # auto: weight the loss by normalised inverse class frequency in the train split (the
    # QLoRA tutorial's CustomTrainer); none: plain cross-entropy.
    class_weights: Literal["none", "auto"] = "none"

    def __post_init__(self) -> None:
        words = self.launcher.split()
        if words[:1] != ["python"] and words[:2] != ["accelerate", "launch"]:
            raise _Invalid("launcher", self.launcher,
                           "'python' or 'accelerate launch --config_file accelerate/<name>.yaml'")
        if "--config_file" in words:
            config = words[words.index("--config_file") + 1:][:1]
            if not config or not Path(config[0]).is_file():
                raise _Invalid("launcher", self.launcher,
                               "a --config_file that exists, e.g. accelerate/cpu-2proc.yaml")
        if self.epochs <= 0:
            raise _Invalid("epochs", self.epochs, "a number > 0")
        _at_most("epochs", self.epochs, 10000, "a number in (0, 10000]")
        if self.batch_size <= 0:
            raise _Invalid("batch_size", self.batch_size, "an integer > 0")
        _at_most("batch_size", self.batch_size, MAX_BATCH, f"an integer in [1, {MAX_BATCH}]")
        if self.learning_rate <= 0:
            raise _Invalid("learning_rate", self.learning_rate, "a number > 0")
        if self.weight_decay < 0:
            raise _Invalid("weight_decay", self.weight_decay, "a number >= 0")
        if self.warmup_steps < 0:
            raise _Invalid("warmup_steps", self.warmup_steps, "a number >= 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise _Invalid("max_steps", self.max_steps, "-1 (use epochs) or an integer > 0")
        for key in ("max_steps", "warmup_steps", "logging_steps", "checkpoint_steps"):
            _at_most(key, getattr(self, key), 10**8, f"at most {10**8:,} steps")
        if self.checkpoint_steps < 0:
            raise _Invalid("checkpoint_steps", self.checkpoint_steps, "an integer >= 0 (0: no checkpoints)")
        if self.logging_steps <= 0:
            raise _Invalid("logging_steps", self.logging_steps, "an integer > 0")


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = 64
    # More test sets, scored next to the carved test split: {name: file} (an official test
    # set, a later month, another domain), read like data.files and in the same schema.
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise _Invalid("batch_size", self.batch_size, "an integer > 0")
        _at_most("batch_size", self.batch_size, MAX_BATCH, f"an integer in [1, {MAX_BATCH}]")
        for name, path in self.extra.items():
            # The name becomes a file name (data/predictions/<name>.jsonl) and a metrics key.
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) or name in SPLITS:
                raise _Invalid(f"extra.{name}", path, "a name of letters, digits, - and _ (not train, "
                                                      "validation or test: those are the split's own)")
            _named(f"extra.{name}", path)


@dataclass(frozen=True)
class ExportParams:
    # Largest allowed difference between merged and adapter logits in the reload check.
    logits_tolerance: float = 1e-3
    # qlora: least share of test predictions where the merged full-precision model must
    # agree with the 4-bit model it was trained as.
    min_quantized_agreement: float = 0.9

    def __post_init__(self) -> None:
        if self.logits_tolerance <= 0:
            raise _Invalid("logits_tolerance", self.logits_tolerance, "a number > 0")
        if not 0.0 <= self.min_quantized_agreement <= 1.0:
            raise _Invalid("min_quantized_agreement", self.min_quantized_agreement, "a fraction in [0, 1]")


@dataclass(frozen=True)
class Params:
    recipe: str = "default"  # a name for the model card and `dvc exp show`; recipes/*.yaml set it
    seed: int = 42
    task: TaskParams = field(default_factory=TaskParams)
    data: DataParams = field(default_factory=DataParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    tokenize: TokenizeParams = field(default_factory=TokenizeParams)
    peft: PeftParams = field(default_factory=PeftParams)
    lora: LoraParams = field(default_factory=LoraParams)
    prompt: PromptParams = field(default_factory=PromptParams)
    quantization: QuantizationParams = field(default_factory=QuantizationParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    export: ExportParams = field(default_factory=ExportParams)

    def __post_init__(self) -> None:
        _seed("seed", self.seed)
        # Rules that tie two sections together.
        if self.split.per_class and self.task.kind != "sequence_classification":
            raise _Invalid("split.per_class", self.split.per_class,
                           "{} unless task.kind is sequence_classification (it samples rows per class)")
        if self.task.kind == "generation" and self.train.loop == "accelerate":
            raise _Invalid("train.loop", self.train.loop, "trainer for task.kind generation")
        if self.task.kind == "generation" and self.train.class_weights != "none":
            raise _Invalid("train.class_weights", self.train.class_weights,
                           "none for task.kind generation (the targets are words, not classes)")
        if self.peft.modules_to_save and self.peft.method == "none":
            raise _Invalid("peft.modules_to_save", self.peft.modules_to_save,
                           "[] for peft.method none (full fine-tuning trains every module)")
        if self.peft.method == "p_tuning" and self.task.kind == "token_classification":
            raise _Invalid("peft.method", self.peft.method,
                           "lora, qlora or none for token_classification (virtual tokens would shift "
                           "the inputs against their word labels)")

    def uses_hub(self) -> bool:
        return self.model.source == "hub" or self.data.source == "hub"


# --------------------------------------------------------------------------- validation


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = type(None) in typing.get_args(tp)
        return " or ".join(_describe(a) for a in inner) + (" or null" if nullable else "")
    if origin is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {str: "strings", int: "integers", float: "numbers"}.get(item, _describe(item))
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"a mapping of {_describe(key).split(' ', 1)[1]}s to {_describe(value).split(' ', 1)[1]}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, key: str, file: str) -> Any:
    """Check ``value`` against the type hint ``tp``; return it converted (floats, sections)."""

    def bad() -> ParamsError:
        return ParamsError(
            f"{file}: {key}: expected {_describe(tp)}, got {value!r} ({type(value).__name__})"
        )

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _build(tp, value, key, file)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad()
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        for alternative in inner:  # the first that takes the value
            try:
                return _convert(alternative, value, key, file)
            except ParamsError:
                if alternative is inner[-1] and len(inner) == 1:
                    raise
        raise bad()
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{key}[{i}]", file) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        key_tp, value_tp = typing.get_args(tp)
        return {
            _convert(key_tp, k, key, file): _convert(value_tp, v, f"{key}.{k}", file)
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(value):  # YAML's .nan and .inf, or 1e400: every rule below would pass nan
            raise ParamsError(f"{file}: {key}: got {value!r}, expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"params schema: unsupported type {tp!r} at {key}")


def _build(cls: type, data: dict, prefix: str, file: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    where = f"{prefix}." if prefix else ""
    for key in data:
        if key not in hints:
            close = difflib.get_close_matches(str(key), valid, n=1) or [
                name for name in valid if str(key).startswith(name)  # lora.rank -> lora.r
            ]
            hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
            raise ParamsError(
                f"{file}: unknown key '{where}{key}'{hint}; valid keys"
                f"{' in ' + prefix if prefix else ''}: {', '.join(valid)}"
            )
    values = {k: _convert(hints[k], v, f"{where}{k}", file) for k, v in data.items()}
    try:
        return cls(**values)
    except _Invalid as err:
        raise ParamsError(
            f"{file}: {where}{err.key}: got {err.value!r}, expected {err.allowed}"
        ) from None


def parse_params(data: Any, file: str = "params.yaml") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{file}: expected a mapping of sections at the top level")
    return _build(Params, data, "", file)


def _yaml_problem(err: Exception) -> str:
    """The parser's complaint on one line, with the line and column it points at."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if not problem:
        return " ".join(str(err).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def read_yaml(path: Path) -> Any:
    """A YAML file's content (YAML 1.2, as DVC writes it: 1e-3 is a number), or a ParamsError
    naming the file and, for a syntax error, the line and column."""
    from ruamel.yaml import YAML, YAMLError

    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, not a file")
    if not path.exists():
        raise ParamsError(f"{path}: file not found (run from the project root, or pass --params)")
    from peftpipe.io import decode

    text = decode(path.read_bytes(), "utf-8", str(path), ParamsError, "save it as UTF-8")
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    data = read_yaml(path)
    if data is None:  # DVC cannot even parse dvc.yaml's ${...} against an empty file
        raise ParamsError(f"{path}: the file is empty; start from a recipe (peftpipe recipe NAME) or the README's")
    return parse_params(data, str(path))


def write_params(path: Path, changes: dict) -> Path | None:
    """Set ``changes`` ({section: {key: value}}, or {key: value} at the top) in a params
    file, keeping its comments and every other key (the schema's defaults where there is no
    file), check the result, and write it atomically. A file that changes is kept first as
    <name>.bak, whose path is returned: a user's edits are never dropped without a copy."""
    import io
    import shutil

    from ruamel.yaml import YAML

    from peftpipe.io import atomic_path

    yaml = YAML()  # round trip: comments and key order stay
    old = path.read_text() if path.exists() else None
    document = None
    if old is not None:
        read_yaml(path)  # a broken file stops here, with its line and column
        document = yaml.load(old)
    if not isinstance(document, dict):
        document = dataclasses.asdict(Params())
    def put(mapping, key, value) -> None:
        mapping[key] = value
        comments = getattr(mapping, "ca", None)  # a comment about the old value would now mislead
        if comments is not None and key in comments.items:
            del comments.items[key]

    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            for inner, setting in value.items():
                put(document[key], inner, setting)
        else:
            put(document, key, value)
    text = io.StringIO()
    yaml.dump(document, text)
    parse_params(YAML(typ="safe", pure=True).load(text.getvalue()), str(path))
    backup = None
    if old is not None and old != text.getvalue():
        backup = path.with_name(path.name + ".bak")
        shutil.copy2(path, backup)
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
    return backup
