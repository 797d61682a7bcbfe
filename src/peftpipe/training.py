"""Trainer wiring: train the (adapter-wrapped) model on the tokenized train split."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from peftpipe.params import Params


def training_arguments(params: Params, output_dir: Path):
    import torch
    from transformers import TrainingArguments

    train = params.train
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=params.eval.batch_size,
        learning_rate=train.learning_rate,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_steps,
        logging_steps=train.logging_steps,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        eval_strategy="epoch",
        save_strategy="no",
        seed=params.seed,
        data_seed=params.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        # A bar with rate and ETA on a terminal; plain log lines every logging_steps in CI.
        disable_tqdm=not sys.stderr.isatty(),
    )


def train(model, tokenizer, datasets, params: Params, task, labels: list[str], work_dir: Path) -> dict:
    """Run the Trainer; return the training summary (loss history, timings)."""
    from transformers import Trainer

    trainer = Trainer(
        model=model,
        args=training_arguments(params, work_dir),
        train_dataset=task.model_inputs(datasets["train"]),
        eval_dataset=task.model_inputs(datasets["validation"]),
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=task.trainer_metrics(labels),
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    evals = [h for h in history if "eval_f1" in h]
    return {
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
        "epochs": float(trainer.state.epoch or 0),
        "train_seconds": round(seconds, 2),
        "train_samples_per_second": round(len(datasets["train"]) * float(trainer.state.epoch or 0) / seconds, 2),
        "validation": {
            "loss": float(evals[-1]["eval_loss"]) if evals else None,
            "f1": float(evals[-1]["eval_f1"]) if evals else None,
        },
    }
