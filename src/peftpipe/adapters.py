"""Attach a PEFT method's adapter to a model (the method itself is in peftpipe.methods)."""

from __future__ import annotations

from peftpipe.errors import ModelError
from peftpipe.methods import get_method
from peftpipe.params import Params
from peftpipe.tasks import get_task


def peft_config(params: Params, task_type: str, head: list[str], total_steps: int = 0):
    """The peft config for ``peft.method``, or None for full fine-tuning."""
    method = get_method(params.peft.method)
    return method.config(params, task_type, head, total_steps) if method.is_adapter else None


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


def wrap(model, params: Params, task_type: str, head: list[str], total_steps: int = 0):
    """Attach the adapter. Call after seeding: LoRA's A matrices are drawn at random.
    ``total_steps``: the training's optimizer steps (AdaLoRA schedules its budget on them)."""
    misfit = get_method(params.peft.method).misfit_model(model)
    if misfit:  # before training, not at its first step
        raise ModelError(f"params.yaml: peft.method {params.peft.method}: {misfit}")
    config = peft_config(params, task_type, trained_in_full(model, params, head), total_steps)
    if config is None:
        return model
    from peft import get_peft_model

    if get_method(params.peft.method).quantized:
        from peft import prepare_model_for_kbit_training

        # Norms and the head in fp32, inputs that require grad (for checkpointing).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=params.quantization.gradient_checkpointing)
    targets = list(getattr(config, "target_modules", None) or [])
    if targets:
        check_targets(model, targets)
    method = get_method(params.peft.method)
    model = method.prepare(get_peft_model(model, config), get_task(params.task.kind))
    if method.rewrites_base:
        method.remember_initial_adapter(model)
    return model


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


def parameter_counts(model) -> dict:
    trainable = sum(_weights(p) for p in model.parameters() if p.requires_grad)
    total = sum(_weights(p) for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total,
            "trainable_share": round(trainable / total, 6)}


def _weights(parameter) -> int:
    """How many weights ``parameter`` holds. A 4-bit parameter packs two weights in each byte
    of its storage, so its numel() is half (or less) of what it holds: counted as stored, a
    qlora model's trainable share came out a third too high (1.00% against lora's 0.76%)."""
    if type(parameter).__name__ == "Params4bit":
        storage = getattr(parameter, "quant_storage", None)
        return parameter.numel() * 2 * (storage.itemsize if storage is not None else 1)
    return parameter.numel()

