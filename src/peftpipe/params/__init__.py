"""params.yaml, validated once into typed objects.

- ``schema``: the sections (pydantic models), their defaults and descriptions, the rules
  between them, and the record of which leaves a stage reads;
- ``messages``: a validation error as one line naming the file, key, value and what is allowed;
- ``files``: reading, validating and editing params files.

Everything is imported from here: ``from peftpipe.params import Params, load_params``.
"""

from peftpipe.params.files import leaves, load_params, nest, parse_params, read_yaml, write_params, yaml_writer
from peftpipe.params.messages import explain
from peftpipe.params.schema import (
    SET_NAME,
    SPLITS,
    ColumnsParams,
    DataParams,
    EvalParams,
    ExportParams,
    LoraParams,
    ModelParams,
    Params,
    PeftParams,
    PromptParams,
    QuantizationParams,
    SearchRange,
    Section,
    SplitParams,
    TaskKind,
    TaskParams,
    TokenizeParams,
    TrainParams,
    TuneParams,
    only_checking,
    reads,
)
from peftpipe.wording import describe

__all__ = [
    "SET_NAME", "SPLITS", "ColumnsParams", "DataParams", "EvalParams", "ExportParams", "LoraParams", "ModelParams",
    "Params", "PeftParams", "PromptParams", "QuantizationParams", "SearchRange", "Section", "SplitParams", "TaskKind",
    "TaskParams", "TokenizeParams", "TrainParams", "TuneParams", "describe", "explain", "leaves", "load_params",
    "nest", "only_checking", "parse_params", "read_yaml", "reads", "write_params", "yaml_writer",
]
