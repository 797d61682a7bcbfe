"""The custom training loop of the Hugging Face course's NER chapter, with Accelerate:
a DataLoader with the task's collator, AdamW, a linear schedule, accelerator.backward,
pad_across_processes + gather for evaluation. ``train.loop: accelerate`` picks it; it gives
the same summary as the Trainer (peftpipe.training.train) so metrics files line up.

What it leaves to the Trainer loop: resuming from checkpoints and length-grouped batches
(the course shuffles at random).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from peftpipe.methods import Method
from peftpipe.params import Params
from peftpipe.training import (
    TrainSummary,
    bound_kernel_cache,
    peak_rates,
    token_batch_sampler,
    train_class_weights,
    weighted_loss,
)


def _optimizer(model, params: Params):
    """AdamW with weight decay on weights only, as the Trainer does (not on biases, norms)."""
    import torch

    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.dim() < 2 else decay).append(parameter)
    return torch.optim.AdamW([{"params": decay, "weight_decay": params.train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=params.train.learning_rate)


def _loss(model, batch, weights):
    if weights is None:
        outputs = model(**batch)
        return outputs.loss, outputs
    outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
    return weighted_loss(outputs.logits, batch["labels"], weights), outputs


def _evaluate(accelerator, model, loader, metrics, weights) -> dict:
    """Validation loss and the task's metric, gathered from every process."""
    import torch

    model.eval()
    losses, logits_all, labels_all = [], [], []
    for batch in loader:
        with torch.no_grad():
            loss, outputs = _loss(model, batch, weights)
        losses.append(accelerator.gather_for_metrics(loss.detach().repeat(len(batch["labels"]))))
        logits, labels = outputs.logits, batch["labels"]
        if labels.dim() > 1:  # token labels: lengths differ across processes, pad to gather
            logits = accelerator.pad_across_processes(logits, dim=1, pad_index=0)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=-100)
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        logits_all += list(logits.float().cpu().numpy())
        labels_all += list(labels.cpu().numpy())
    model.train()
    if labels_all[0].ndim == 0:  # one label per row
        logits, labels = np.stack(logits_all), np.stack(labels_all)
    else:
        width = max(len(row) for row in labels_all)
        logits = np.stack([np.pad(r, ((0, width - len(r)), (0, 0))) for r in logits_all])
        labels = np.stack([np.pad(r, (0, width - len(r)), constant_values=-100) for r in labels_all])
    scores = metrics((logits, labels))
    return {"loss": float(torch.cat(losses).mean()), **scores}


def train(model, tokenizer, datasets, params: Params, method: Method, task, labels: list[str],
          curves_dir: Path) -> TrainSummary:
    """Train ``model`` in place; return the same summary as the Trainer loop."""
    import torch
    from dvclive import Live
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from accelerate import Accelerator

    train = params.train
    bound_kernel_cache(train.mixed_precision)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision=None if train.mixed_precision == "no" else train.mixed_precision)
    collate = task.collator(tokenizer)
    train_rows = task.model_inputs(datasets["train"])
    if train.batch_tokens:  # the same token-budget batches as the Trainer's
        batches = token_batch_sampler([len(ids) for ids in train_rows["input_ids"]], train.batch_tokens, params.seed)
        train_loader = DataLoader(train_rows, batch_sampler=batches, collate_fn=collate)
    else:
        shuffle = torch.Generator().manual_seed(params.seed)
        train_loader = DataLoader(train_rows, batch_size=train.batch_size, shuffle=True, collate_fn=collate,
                                  generator=shuffle)
    eval_loader = DataLoader(task.model_inputs(datasets["validation"]), batch_size=params.eval.batch_size,
                             collate_fn=collate)
    optimizer = method.optimizer(model, params) if method.optimizer else _optimizer(model, params)
    prepared, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    per_epoch = len(train_loader)
    total = train.max_steps if train.max_steps > 0 else math.ceil(train.epochs * per_epoch)
    warmup = int(train.warmup_steps * total) if train.warmup_steps < 1 else int(train.warmup_steps)
    scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=total)
    metrics = task.trainer_metrics(labels, model)
    weights = train_class_weights(params, task, datasets, labels)
    live = Live(str(curves_dir), save_dvc_exp=False, dvcyaml=None) if accelerator.is_main_process else None

    step, loss_sum, loss_count, losses_all, validation = 0, 0.0, 0, [], {}
    started = time.perf_counter()
    prepared.train()
    for epoch in range(math.ceil(total / per_epoch)):
        for batch in train_loader:
            loss, _ = _loss(prepared, batch, weights)
            accelerator.backward(loss)
            optimizer.step()
            if method.after_step:
                method.after_step(accelerator.unwrap_model(prepared), step)
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            value = loss.item()  # one device sync per step
            loss_sum, loss_count = loss_sum + value, loss_count + 1
            losses_all.append(value)
            if step % train.logging_steps == 0:
                rate = step / (time.perf_counter() - started)
                accelerator.print(f"step {step}/{total}: loss {loss_sum / loss_count:.4f} "
                                  f"({rate:.2f} steps/s, ETA {(total - step) / rate:.0f} s)")
                if live:
                    live.step = step
                    live.log_metric("train/loss", loss_sum / loss_count)
                loss_sum, loss_count = 0.0, 0
            if step == total:
                break
        validation = _evaluate(accelerator, prepared, eval_loader, metrics, weights)
        accelerator.print(f"epoch {epoch + 1}: validation loss {validation['loss']:.4f}, F1 {validation['f1']:.4f}")
        if live:
            live.step = step
            live.log_metric("eval/loss", validation["loss"])
            live.log_metric("eval/f1", validation["f1"])
        if step == total:
            break
    seconds = time.perf_counter() - started
    accelerator.wait_for_everyone()
    if live:
        live.make_summary()
    return TrainSummary(train_loss=float(np.mean(losses_all)), steps=step, epochs=step / per_epoch,
                        train_seconds=seconds, train_rows=len(datasets["train"]), validation=validation,
                        class_weights=dict(zip(labels, weights)) if weights else None,
                        learning_rates=peak_rates(optimizer))
