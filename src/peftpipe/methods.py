"""PEFT methods: one registry entry each, holding everything the pipeline asks of a method.

The params schema takes its `peft.method` choices and its task-fit rule from here, adapters
builds the peft config through ``build``, models loads a 4-bit base when ``quantized``,
export merges when ``merges``, serving loads an adapter onto its base when it does not. No
other module compares method names: adding a method is adding an entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftpipe.errors import ModelError

if TYPE_CHECKING:
    from peftpipe.params import Params


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    # (params, peft task type, modules trained in full) -> a peft config; None: no adapter
    # (full fine-tuning trains the model itself).
    build: Callable[[Params, str, list[str]], Any] | None
    merges: bool = True  # export folds the adapter into the base weights (a plain model ships)
    quantized: bool = False  # the base is loaded in 4 bits (bitsandbytes) and prepared for k-bit training
    # Methods that prepend virtual tokens shift the inputs against per-token labels.
    adds_input_tokens: bool = False

    @property
    def is_adapter(self) -> bool:
        return self.build is not None

    @property
    def kept_as_adapter(self) -> bool:
        """Exported as adapter + base (nothing to merge), not as a merged plain model."""
        return self.is_adapter and not self.merges

    def misfit(self, task_kind: str) -> str | None:
        """Why this method cannot train ``task_kind``, or None."""
        if self.adds_input_tokens and task_kind == "token_classification":
            return "virtual tokens would shift the inputs against their word labels"
        return None


def _lora(params: Params, task_type: str, trained_in_full: list[str]):
    from peft import LoraConfig

    lora = params.lora
    return LoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=int(lora.alpha) if float(lora.alpha).is_integer() else lora.alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        target_modules=list(lora.target_modules) or None,
        # The new head is trained in full and saved with the adapter; without this the
        # reloaded model gets a fresh random head (peft #310, #577, #876).
        modules_to_save=trained_in_full,
    )


def _p_tuning(params: Params, task_type: str, trained_in_full: list[str]):
    from peft import PromptEncoderConfig

    return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=params.prompt.num_virtual_tokens,
                               encoder_hidden_size=params.prompt.encoder_hidden_size,
                               modules_to_save=trained_in_full)


def _prefix_tuning(params: Params, task_type: str, trained_in_full: list[str]):
    from peft import PrefixTuningConfig

    # A causal LM has no new head: peft wants None rather than an empty list there.
    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=params.prompt.num_virtual_tokens,
                              modules_to_save=trained_in_full or None)


METHODS = {method.name: method for method in (
    Method("none", "full fine-tuning: every weight trains", build=None, merges=False),
    Method("lora", "low-rank adapters on the attention projections (lora.*)", build=_lora),
    Method("qlora", "LoRA on a 4-bit NF4 base (lora.*, quantization.*)", build=_lora, quantized=True),
    Method("p_tuning", "learned virtual input tokens from a prompt encoder (prompt.*)", build=_p_tuning,
           merges=False, adds_input_tokens=True),
    Method("prefix_tuning", "learned key/value prefixes in every layer (prompt.*)", build=_prefix_tuning,
           merges=False),
)}


def get_method(name: str) -> Method:
    if name not in METHODS:

        raise ModelError(f"unknown PEFT method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def fitting(task_kind: str) -> list[str]:
    return [name for name, method in METHODS.items() if method.misfit(task_kind) is None]
