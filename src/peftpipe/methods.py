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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftpipe.errors import ModelError, ParamsError
from peftpipe.wording import describe

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
    # Prompt and P-tuning prepend virtual tokens: per-token outputs need them cut off again.
    adds_input_tokens: bool = False
    # PiSSA and OLoRA initialise the adapter from the base's own weights and subtract that
    # from the base: the adapter is saved converted, so it applies to the original base.
    rewrites_base: bool = False
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
    def reads(self) -> tuple[str, ...]:
        """The params sections, besides peft, that its adapter is built from: what the train
        stage's settings file holds, so editing another method's knobs reruns nothing."""
        if not self.is_adapter:
            return ()
        family = ("prompt",) if self.config_class in PROMPT_CONFIGS else ("lora",)
        return family + (("quantization",) if self.quantized else ())

    @property
    def kept_as_adapter(self) -> bool:
        """Exported as adapter + base (nothing to merge), not as a merged plain model."""
        return self.is_adapter and not self.merges

    def prepare(self, model, task):
        """What a wrapped or reloaded model needs besides peft's own wrapping."""
        if self.adds_input_tokens and task.per_token:
            skip_virtual_token_positions(model)
        if self.needs_past_key_values:
            pass_prefixes_as_cache(model.get_base_model())
        return model

    def misfit_model(self, model) -> str | None:
        """Why this method cannot train ``model``, or None: prefix tuning needs a model whose
        forward takes the key/value cache (``cache``, or ``past_key_values`` before
        transformers 5.24), itself or through its backbone."""
        if not self.needs_past_key_values:
            return None
        import inspect

        import transformers

        head = inspect.signature(model.forward).parameters
        backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
        inner = inspect.signature(backbone.forward).parameters if backbone is not None else {}
        passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in head.values())
        if CACHE_NAMES & set(head) or (CACHE_NAMES & set(inner) and passes_on):
            return None
        return (f"{type(model).__name__} takes no key/value cache in transformers {transformers.__version__}, "
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

    @staticmethod
    def remember_initial_adapter(model) -> None:
        """The adapter as initialised (PiSSA, OLoRA): what ``save`` needs to convert the trained
        adapter into one that applies to the original base weights."""
        from peft import get_peft_model_state_dict

        model.peftpipe_initial_adapter = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}

    @staticmethod
    def save(model, folder: Path) -> None:
        """``save_pretrained``; an adapter whose initialisation rewrote the base is saved converted
        (peft's path_initial_model_for_weight_conversion), so that it applies to the original base.
        peft 0.21's conversion drops the modules trained in full (the new head): they are put back."""
        initial = getattr(model, "peftpipe_initial_adapter", None)
        if initial is None:
            model.save_pretrained(str(folder))
            return
        import tempfile

        from peft import get_peft_model_state_dict
        from safetensors.torch import load_file, save_file

        with tempfile.TemporaryDirectory() as initial_folder:
            save_file(initial, f"{initial_folder}/adapter_model.safetensors", metadata={"format": "pt"})
            model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=initial_folder)
        weights = folder / "adapter_model.safetensors"
        converted = load_file(str(weights))
        for name, value in get_peft_model_state_dict(model).items():
            converted.setdefault(name, value.detach().contiguous())
        save_file(converted, str(weights), metadata={"format": "pt"})

    def option(self, params: Params, name: str):
        return params.peft.options.get(name, self.own_options[name])


# The methods whose settings come from prompt.* (the others read lora.*).
PROMPT_CONFIGS = ("PromptEncoderConfig", "PromptTuningConfig", "PrefixTuningConfig")


def training_settings(params: Params, method: Method) -> dict:
    """What ``method`` (peft.method's) reads: peft and the sections in ``Method.reads``, and
    nothing else. The settings stage writes it; the train stage depends on it instead of on
    every method's sections, and its checkpoints are fingerprinted by it."""
    return {section: getattr(params, section).model_dump() for section in ("peft", *method.reads)}


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
    """LoRA+: the B matrices learn loraplus_lr_ratio times faster than everything else.

    Not peft's create_loraplus_optimizer: it puts every 1-D parameter in B's group too, so
    with lora.bias: all (the default) every bias of the network and the head's trained at
    16 times the rate. The ratio is the paper's, for the B matrices only; weight decay as the
    Trainer applies it (matrices, not biases or norms), so a ratio of 1 is LoRA step for step
    (measured on the default: the same loss at every logged step, test F1 0.4820)."""
    import torch

    ratio = METHODS["lora_plus"].option(params, "loraplus_lr_ratio")
    rate, decay = params.train.learning_rate, params.train.weight_decay
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(("lora_B" in name, parameter.ndim >= 2), []).append(parameter)
    return torch.optim.AdamW([{"params": group, "lr": rate * ratio if b_matrix else rate,
                               "weight_decay": decay if matrix else 0.0}
                              for (b_matrix, matrix), group in groups.items()], lr=rate)


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
    # Biases stay frozen (bias none) for these two: peft converts only bias-free adapters.
    Method("pissa", "LoRA initialised from each weight's principal singular vectors (lora.*, biases frozen)",
           "LoraConfig", functools.partial(_lora, init_lora_weights="pissa_niter_4", bias="none"), rewrites_base=True),
    Method("olora", "LoRA initialised from each weight's QR decomposition (lora.*, biases frozen)", "LoraConfig",
           functools.partial(_lora, init_lora_weights="olora", bias="none"), rewrites_base=True),
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


# What a model's forward calls its key/value cache: `cache` from transformers 5.24 on.
CACHE_NAMES = {"cache", "past_key_values"}


def pass_prefixes_as_cache(model) -> None:
    """Let peft hand prefix tuning's prefixes to a transformers 5.24 model.

    transformers 5.24 renamed forward's ``past_key_values`` to ``cache`` (the old keyword is
    still mapped, deprecated until 5.40), and peft 0.21.2 looks for ``past_key_values`` in
    the head's and then the backbone's signature: not finding it, it stops a classification
    model with "Model does not support past key values". The head's forward, given a
    signature with the old name, passes the prefixes on as ``cache``.
    """
    import inspect

    signature = inspect.signature(model.forward)
    if "past_key_values" in signature.parameters:
        return  # transformers before 5.24: peft finds it
    forward = model.forward

    def forward_taking_past_key_values(*args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(*args, **kwargs)

    # The Trainer keeps the dataset columns the signature names: the original one, plus the old name.
    parameters = list(signature.parameters.values())
    at = next((i for i, p in enumerate(parameters) if p.kind is p.VAR_KEYWORD), len(parameters))
    old_name = inspect.Parameter("past_key_values", inspect.Parameter.KEYWORD_ONLY, default=None)
    forward_taking_past_key_values.__signature__ = signature.replace(
        parameters=[*parameters[:at], old_name, *parameters[at:]])
    model.forward = forward_taking_past_key_values


def skip_virtual_token_positions(model) -> None:
    """Per-token outputs for the input positions only, with the loss computed on them.

    peft puts num_virtual_tokens before the inputs but passes the word labels through
    unchanged, so a token-classification loss would compare L + n logits with L labels (the
    known pitfall; padding the labels with -100 instead would leave the n extra logits in
    every prediction, shifted against the words). Hooks, so that the model saved is peft's own.
    """
    import torch

    virtual = model.active_peft_config.num_virtual_tokens
    held = {}

    def take_labels(module, args, kwargs):
        held["labels"] = kwargs.pop("labels", None)
        return args, kwargs

    def cut(module, args, kwargs, output):
        logits = output["logits"][:, virtual:]
        output["logits"] = logits
        labels = held.pop("labels", None)
        if labels is not None:
            output["loss"] = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return output

    model.register_forward_pre_hook(take_labels, with_kwargs=True)
    model.register_forward_hook(cut, with_kwargs=True)


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

