"""PEFT methods: one registry entry each, holding everything the pipeline asks of a method.

The params schema takes its `peft.method` choices and its task-fit rule from here, adapters
builds the peft config through ``build``, models loads a 4-bit base when ``quantized``,
export merges when ``merges``, serving loads an adapter onto its base when it does not. No
other module compares method names: adding a method is adding an entry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftpipe.errors import ModelError, ParamsError

if TYPE_CHECKING:
    from peftpipe.params import Params


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    # The peft config class (by name, so peft is imported only when a model is wrapped) and
    # how params fill it: (params, trained-in-full modules, total training steps) -> kwargs.
    # None: no adapter (full fine-tuning trains the model itself).
    config_class: str | None
    settings: Callable[[Params, list[str], int], dict] | None = None
    merges: bool = True  # export folds the adapter into the base weights (a plain model ships)
    quantized: bool = False  # the base is loaded in 4 bits (bitsandbytes) and prepared for k-bit training
    # Methods that prepend virtual tokens shift the inputs against per-token labels.
    adds_input_tokens: bool = False
    # Options the method itself reads from peft.options (not fields of its peft config), with defaults.
    own_options: dict = field(default_factory=dict)
    # (model, params) -> optimizer, where the method needs its own (LoRA+); None: AdamW.
    optimizer: Callable[[Any, Params], Any] | None = None
    # (model, global step) after each optimizer step, before gradients are cleared (AdaLoRA's budget).
    after_step: Callable[[Any, int], None] | None = None
    # Prefix tuning puts its prefixes into the attention through `past_key_values`, which
    # the model (or its backbone) must take.
    needs_past_key_values: bool = False

    @property
    def is_adapter(self) -> bool:
        return self.config_class is not None

    @property
    def kept_as_adapter(self) -> bool:
        """Exported as adapter + base (nothing to merge), not as a merged plain model."""
        return self.is_adapter and not self.merges

    def misfit(self, task_kind: str) -> str | None:
        """Why this method cannot train ``task_kind``, or None."""
        if self.adds_input_tokens and task_kind == "token_classification":
            return "virtual tokens would shift the inputs against their word labels"
        return None

    def misfit_model(self, model) -> str | None:
        """Why this method cannot train ``model``, or None. (transformers 5.24 dropped
        `past_key_values` from BERT-style encoders' forward: prefix tuning fits them on
        5.17, not on 5.24, and peft would fail only at the first training step.)"""
        if not self.needs_past_key_values:
            return None
        import inspect

        import transformers

        backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
        for module in (model, backbone):
            if module is not None and "past_key_values" in inspect.signature(module.forward).parameters:
                return None
        return (f"{type(model).__name__} takes no past_key_values in transformers {transformers.__version__}, "
                f"and prefix tuning puts its prefixes there; use lora (or another method), or a decoder model")

    def config(self, params: Params, task_type: str, trained_in_full: list[str], total_steps: int = 0):
        """The peft config: params' settings, then peft.options (checked by check_options)."""
        import peft

        options = {k: v for k, v in params.peft.options.items() if k not in self.own_options}
        kwargs = {**self.settings(params, trained_in_full, total_steps), **options}
        try:
            return getattr(peft, self.config_class)(task_type=task_type, **kwargs)
        except (TypeError, ValueError) as err:
            raise ModelError(f"params.yaml: peft.options: {self.config_class} refused them: "
                             f"{' '.join(str(err).split())[:300]}") from None

    def option(self, params: Params, name: str):
        return params.peft.options.get(name, self.own_options[name])


def _alpha(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _lora(params: Params, trained_in_full: list[str], total_steps: int, **variant) -> dict:
    lora = params.lora
    # The new head is trained in full and saved with the adapter; without this the reloaded
    # model gets a fresh random head (peft #310, #577, #876).
    return {"r": lora.r, "lora_alpha": _alpha(lora.alpha), "lora_dropout": lora.dropout, "bias": lora.bias,
            "target_modules": list(lora.target_modules) or None, "modules_to_save": trained_in_full, **variant}


def _adalora(params: Params, trained_in_full: list[str], total_steps: int) -> dict:
    """AdaLoRA starts every layer at lora.r and prunes the total rank budget to half of it,
    between the first and last tenth of training (its schedule needs the step count)."""
    settings = _lora(params, trained_in_full, total_steps)
    settings.pop("r")
    settings.pop("bias")
    tenth = max(1, total_steps // 10)
    return {**settings, "init_r": params.lora.r, "target_r": max(1, params.lora.r // 2), "total_step": total_steps,
            "tinit": tenth, "tfinal": tenth, "deltaT": max(1, tenth // 2)}


def _lycoris(params: Params, trained_in_full: list[str], total_steps: int) -> dict:
    lora = params.lora
    return {"r": lora.r, "alpha": lora.alpha, "rank_dropout": lora.dropout,
            "target_modules": list(lora.target_modules) or None, "modules_to_save": trained_in_full}


def _vera(params: Params, trained_in_full: list[str], total_steps: int) -> dict:
    lora = params.lora
    return {"r": lora.r, "vera_dropout": lora.dropout, "target_modules": list(lora.target_modules) or None,
            "modules_to_save": trained_in_full}


def _ia3(params: Params, trained_in_full: list[str], total_steps: int) -> dict:
    targets = list(params.lora.target_modules)
    # peft's per-architecture default names the feed-forward layers too; with targets of our
    # own, none of them is a feed-forward layer unless peft.options says so.
    return {"target_modules": targets or None, **({"feedforward_modules": []} if targets else {}),
            "modules_to_save": trained_in_full}


def _p_tuning(params: Params, trained_in_full: list[str], total_steps: int) -> dict:
    return {"num_virtual_tokens": params.prompt.num_virtual_tokens,
            "encoder_hidden_size": params.prompt.encoder_hidden_size, "modules_to_save": trained_in_full}


def _prompt_tuning(params: Params, trained_in_full: list[str], total_steps: int) -> dict:
    return {"num_virtual_tokens": params.prompt.num_virtual_tokens, "modules_to_save": trained_in_full}


def _prefix_tuning(params: Params, trained_in_full: list[str], total_steps: int) -> dict:
    # A causal LM has no new head: peft wants None rather than an empty list there.
    return {"num_virtual_tokens": params.prompt.num_virtual_tokens, "modules_to_save": trained_in_full or None}


def _loraplus_optimizer(model, params: Params):
    """LoRA+: the B matrices learn loraplus_lr_ratio times faster than the A matrices."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    ratio = METHODS["lora_plus"].option(params, "loraplus_lr_ratio")
    return create_loraplus_optimizer(model=model, optimizer_cls=torch.optim.AdamW, lr=params.train.learning_rate,
                                     loraplus_lr_ratio=ratio, weight_decay=params.train.weight_decay)


def _adalora_step(model, step: int) -> None:
    model.base_model.update_and_allocate(step)


METHODS = {method.name: method for method in (
    Method("none", "full fine-tuning: every weight trains", config_class=None, merges=False),
    Method("lora", "low-rank adapters (lora.*)", "LoraConfig", _lora),
    Method("qlora", "LoRA on a 4-bit NF4 base (lora.*, quantization.*)", "LoraConfig", _lora, quantized=True),
    Method("dora", "LoRA with weight decomposition: magnitude and direction (lora.*)", "LoraConfig",
           functools.partial(_lora, use_dora=True)),
    Method("rslora", "LoRA scaled by alpha / sqrt(r), stable at high ranks (lora.*)", "LoraConfig",
           functools.partial(_lora, use_rslora=True)),
    Method("lora_plus", "LoRA with B learning faster than A (lora.*, peft.options.loraplus_lr_ratio)",
           "LoraConfig", _lora, own_options={"loraplus_lr_ratio": 16.0}, optimizer=_loraplus_optimizer),
    Method("adalora", "LoRA whose rank budget is pruned during training (lora.r: the starting rank)",
           "AdaLoraConfig", _adalora, after_step=_adalora_step),
    Method("ia3", "learned scaling vectors on keys, values and feed-forward layers", "IA3Config", _ia3),
    Method("loha", "low-rank Hadamard product adapters (lora.r, alpha, dropout)", "LoHaConfig", _lycoris),
    Method("lokr", "low-rank Kronecker product adapters (lora.r, alpha, dropout)", "LoKrConfig", _lycoris),
    Method("vera", "shared frozen random matrices, trained scaling vectors (lora.r, dropout)", "VeraConfig", _vera),
    Method("p_tuning", "learned virtual input tokens from a prompt encoder (prompt.*)", "PromptEncoderConfig",
           _p_tuning, merges=False, adds_input_tokens=True),
    Method("prompt_tuning", "learned virtual input token embeddings (prompt.num_virtual_tokens)",
           "PromptTuningConfig", _prompt_tuning, merges=False, adds_input_tokens=True),
    Method("prefix_tuning", "learned key/value prefixes in every layer (prompt.*)", "PrefixTuningConfig",
           _prefix_tuning, merges=False, needs_past_key_values=True),
)}


def check_options(method: Method, options: dict) -> None:
    """peft.options against the method's peft config class's own fields, so a peft release
    that adds a field needs no code here: an unknown name gets a did-you-mean, a value of the
    wrong simple type one line."""
    if not options:
        return
    if not method.is_adapter:
        raise ParamsError(f"params.yaml: peft.options: full fine-tuning (peft.method none) takes no options, "
                          f"got {', '.join(options)}")
    import dataclasses
    import difflib
    import typing

    import peft

    from peftpipe.params import describe

    config_class = getattr(peft, method.config_class)
    hints = typing.get_type_hints(config_class)
    fields = [f.name for f in dataclasses.fields(config_class) if f.name not in ("task_type", "peft_type")]
    for name, value in options.items():
        if name in method.own_options:
            expected = type(method.own_options[name])
            if not isinstance(value, (int, float) if expected is float else expected) or isinstance(value, bool):
                raise ParamsError(f"params.yaml: peft.options.{name}: expected {describe(expected)}, got {value!r}")
            continue
        if name not in fields:
            valid = [*fields, *method.own_options]
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParamsError(f"params.yaml: peft.options.{name}: not an option of {method.config_class} "
                              f"(peft.method {method.name}){hint}")
        expected = hints.get(name)
        simple = {bool: bool, int: int, float: (int, float), str: str}.get(expected)
        if simple and (not isinstance(value, simple) or (expected is not bool and isinstance(value, bool))):
            raise ParamsError(f"params.yaml: peft.options.{name}: expected {describe(expected)} "
                              f"({method.config_class}.{name}), got {value!r} ({type(value).__name__})")


def get_method(name: str) -> Method:
    if name not in METHODS:

        raise ModelError(f"unknown PEFT method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def fitting(task_kind: str) -> list[str]:
    return [name for name, method in METHODS.items() if method.misfit(task_kind) is None]
