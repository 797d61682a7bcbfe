"""CPU inference through ONNX Runtime: the export stage writes the merged classifier as an
ONNX graph (fp32) and a dynamically int8-quantized copy, checks both against the PyTorch
model on the test split, and `peftpipe predict --backend onnx|int8` serves them.

Only a plain classification model exports: a merged adapter or a fully fine-tuned model.
Prompt methods ship as adapter + base (their virtual tokens live in peft's forward, not in a
graph), and generation needs its decoding loop; both stay on PyTorch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from peftpipe.errors import ModelError

FOLDER = "onnx"
FILES = {"onnx": "model.onnx", "int8": "model.int8.onnx"}
OPSET = 17


def unsupported(task, kept_as_adapter: bool) -> str | None:
    """Why this model does not export to ONNX, or None."""
    if task.onnx_unsupported():
        return task.onnx_unsupported()
    if kept_as_adapter:
        return "a prompt method's adapter has no merged weights to put in a graph"
    return None


def export(model, tokenizer, folder: Path, *, per_token: bool) -> dict[str, Path]:
    """``model`` as an ONNX graph with dynamic batch and sequence axes, and its int8 copy
    (weights quantized per channel at export, activations at run time)."""
    import warnings

    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
    # An example with padding, so the traced graph keeps the attention mask's arithmetic.
    example = tokenizer(["a longer example sentence here", "short"], padding=True, return_tensors="pt")
    inputs = tuple(example[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    fp32, int8 = folder / FILES["onnx"], folder / FILES["int8"]
    wrapped = LogitsOnly(model, names).eval()
    with warnings.catch_warnings(), torch.inference_mode(), eager_attention(model):
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(wrapped, inputs, str(fp32), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    return {"onnx": fp32, "int8": int8}


@contextmanager
def eager_attention(model):
    """Trace the model with its plain (eager) attention. SDPA traces into extra mask
    arithmetic (Where, IsNaN) that ONNX Runtime runs op by op: the eager graph's int8 copy
    ran 1.14x faster batched (bench/README.md). The model is switched back afterwards."""
    before = getattr(model.config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


class LogitsOnly(torch.nn.Module):
    """The model with positional inputs and the logits tensor alone as output: the graph's."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors):
        return self.model(**dict(zip(self.names, tensors))).logits


def session(path: Path):
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"{path}: no ONNX model here; export writes one for merged classifiers (dvc repro export)")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    threads = os.environ.get("PEFTPIPE_ORT_THREADS")  # peftpipe serve: its CPU quota (serve/cpus.py)
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load(folder: Path, backend: str, task):
    """A transformers-shaped model (``model(**batch).logits``, ``config``) that runs the
    exported graph: the evaluation code and the transformers pipelines take it as they are.
    ``task``: the folder's Task (what its logits are per: text or token)."""
    from transformers import AutoConfig, PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

    config = AutoConfig.from_pretrained(str(folder))
    graph = session(folder / FOLDER / FILES[backend])
    names = [i.name for i in graph.get_inputs()]
    per_token = task.per_token

    class OnnxClassifier(PreTrainedModel):
        config_class = type(config)
        base_model_prefix = "onnx"

        def __init__(self):
            super().__init__(config)

        @property
        def device(self):
            return torch.device("cpu")

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if given["token_type_ids"] is None:
                given["token_type_ids"] = torch.zeros_like(input_ids)
            if given["attention_mask"] is None:
                given["attention_mask"] = torch.ones_like(input_ids)
            logits = graph.run(None, {n: given[n].cpu().numpy().astype(np.int64) for n in names})[0]
            output = TokenClassifierOutput if per_token else SequenceClassifierOutput
            return output(logits=torch.from_numpy(logits))

    return OnnxClassifier().eval()
