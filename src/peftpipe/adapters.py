"""Attach a PEFT method's adapter to a model (the method itself is in peftpipe.methods)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftpipe.errors import ModelError

if TYPE_CHECKING:
    from peftpipe.methods import Method
    from peftpipe.params import Params
    from peftpipe.tasks import Task


def trained_in_full(model, modules_to_save: list[str], head: list[str]) -> list[str]:
    """The new head plus ``peft.modules_to_save``, each checked to name a module of the model."""
    extra = [name for name in modules_to_save if name not in head]
    names = {name for name, _ in model.named_modules()}
    unknown = [m for m in extra if not any(n == m or n.endswith("." + m) for n in names)]
    if unknown:
        children = ", ".join(name for name, _ in model.named_children())
        raise ModelError(f"params.yaml: peft.modules_to_save: {unknown} not in {type(model).__name__} "
                         f"(its modules: {children}; nested ones by their last name, e.g. pooler)")
    return head + extra


def wrap(model, method: Method, task: Task, params: Params, total_steps: int = 0):
    """Attach ``method``'s adapter for ``task`` (the method's options are in the params
    sections it reads). Call after seeding: LoRA's A matrices are drawn at random.
    ``total_steps``: the training's optimizer steps (AdaLoRA schedules its budget on them)."""
    misfit = method.misfit_model(model)
    if misfit:  # before training, not at its first step
        raise ModelError(f"params.yaml: peft.method {method.name}: {misfit}")
    head = trained_in_full(model, params.peft.modules_to_save, task.head_modules(model))
    if not method.is_adapter:  # full fine-tuning
        return model
    config = method.config(params, task.peft_task_type(model), head, total_steps)
    from peft import get_peft_model

    if method.quantized:
        from peft import prepare_model_for_kbit_training

        # Norms and the head in fp32, inputs that require grad (for checkpointing).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=params.quantization.gradient_checkpointing)
    targets = list(getattr(config, "target_modules", None) or [])
    if targets:
        check_targets(model, targets)
    model = method.prepare(get_peft_model(model, config), task)
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

