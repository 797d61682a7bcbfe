"""PEFT configs from params: adding a PEFT method touches this module only."""

from __future__ import annotations

from peftpipe.errors import ModelError
from peftpipe.params import Params

# Prompt methods learn virtual tokens: nothing to merge into the base weights.
PROMPT_METHODS = ("p_tuning", "prefix_tuning")


def peft_config(params: Params, task_type: str, head: list[str]):
    """The peft config for ``peft.method``, or None for full fine-tuning."""
    method = params.peft.method
    if method == "none":
        return None
    if method == "prefix_tuning":
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=params.prompt.num_virtual_tokens,
                                  modules_to_save=head or None)
    if method == "p_tuning":
        from peft import PromptEncoderConfig

        return PromptEncoderConfig(
            task_type=task_type,
            num_virtual_tokens=params.prompt.num_virtual_tokens,
            encoder_hidden_size=params.prompt.encoder_hidden_size,
            modules_to_save=head,
        )
    from peft import LoraConfig  # lora, and qlora (LoRA on a 4-bit base)

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
        modules_to_save=head,
    )


def trained_in_full(model, params: Params, head: list[str]) -> list[str]:
    """The new head plus ``peft.modules_to_save``, each checked to name a module of the model."""
    extra = [name for name in params.peft.modules_to_save if name not in head]
    names = {name for name, _ in model.named_modules()}
    unknown = [m for m in extra if not any(n == m or n.endswith("." + m) for n in names)]
    if unknown:
        children = ", ".join(name for name, _ in model.named_children())
        raise ModelError(f"params.yaml: peft.modules_to_save: {unknown} not in {type(model).__name__} "
                         f"(its modules: {children}; nested ones by their last name, e.g. pooler)")
    return head + extra


def wrap(model, params: Params, task_type: str, head: list[str]):
    """Attach the adapter. Call after seeding: LoRA's A matrices are drawn at random."""
    config = peft_config(params, task_type, trained_in_full(model, params, head))
    if config is None:
        return model
    from peft import get_peft_model

    if params.peft.method == "qlora":
        from peft import prepare_model_for_kbit_training

        # Norms and the head in fp32, inputs that require grad (for checkpointing).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=params.quantization.gradient_checkpointing)
    targets = list(getattr(config, "target_modules", None) or [])
    if targets:
        check_targets(model, targets)
    return get_peft_model(model, config)


def check_targets(model, targets: list[str]) -> None:
    """lora.target_modules name layers the model has (peft's own error would be a traceback)."""
    import torch

    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) or type(module).__name__.startswith("Linear")})
    unknown = [t for t in targets if not any(t == n or n.endswith("." + t) or n == t.rsplit(".", 1)[-1]
                                             for n in linear)]
    if unknown:
        raise ModelError(f"params.yaml: lora.target_modules: {unknown} not in {type(model).__name__}; its linear "
                         f"layers: {', '.join(linear)}")


def mergeable(method: str) -> bool:
    return method not in PROMPT_METHODS


def parameter_counts(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total,
            "trainable_share": round(trainable / total, 6)}
