"""Trainer wiring: train the (adapter-wrapped) model on the tokenized train split."""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftpipe import checkpoints, trial
from peftpipe.errors import ParamsError
from peftpipe.methods import Method
from peftpipe.params import Params, TrainParams


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
        save_strategy="steps" if train.checkpoint_steps else "no",
        save_steps=train.checkpoint_steps or 500,
        save_total_limit=2,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        eval_strategy="epoch",
        seed=params.seed,
        data_seed=params.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=train.mixed_precision == "bf16",
        fp16=train.mixed_precision == "fp16",
        dataloader_num_workers=0,
        # A bar with rate and ETA on a terminal; plain log lines every logging_steps in CI.
        disable_tqdm=not sys.stderr.isatty(),
    )


@dataclass(frozen=True)
class TrainSummary:
    """What a training loop hands to metrics/train.json: both loops (the Trainer here, the
    course's Accelerate loop) fill the same fields, so their metrics files line up."""

    train_loss: float
    steps: int
    epochs: float
    train_seconds: float
    train_rows: int
    validation: dict  # loss and the task's scores (f1 first), from the last evaluation
    class_weights: dict | None = None
    resumed_from_step: int = 0
    tune: dict | None = None  # a `peftpipe tune` trial: which, and where it was pruned
    # The optimizer's peak learning rates, one per distinct parameter group rate: what the
    # run really used (LoRA+ shows its two rates here; a plain method one).
    learning_rates: tuple[float, ...] = ()

    def metrics(self) -> dict:
        return {
            "train_loss": self.train_loss, "steps": self.steps, "epochs": round(self.epochs, 4),
            "resumed_from_step": self.resumed_from_step, "train_seconds": round(self.train_seconds, 2),
            "train_samples_per_second": round(self.train_rows * self.epochs / self.train_seconds, 2),
            "validation": self.validation, "class_weights": self.class_weights,
            "learning_rates": list(self.learning_rates),
            **({"tune": self.tune} if self.tune else {}),
        }


def validation_scores(logged: dict) -> dict:
    """Loss and the task's scores from the last evaluation (f1, or token_accuracy for
    generation); None where no evaluation ran."""
    skip = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    scores = {key[5:]: float(value) for key, value in logged.items() if key.startswith("eval_") and key not in skip}
    return {"loss": scores.pop("loss", None), "f1": scores.pop("f1", None), **scores}


def class_weights(label_ids: list[int], num_labels: int) -> list[float]:
    """Normalised inverse class frequency (the QLoRA tutorial's CustomTrainer): a class
    seen half as often weighs twice as much; weights sum to 1; an absent class gets 0."""
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=num_labels).astype(float)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return (inverse / inverse.sum()).tolist()


def train_class_weights(params: Params, task, datasets, labels: list[str]) -> list[float] | None:
    if params.train.class_weights == "none":
        return None
    return class_weights(task.train_label_ids(datasets["train"]), len(labels))


def weighted_loss(logits, labels, weights):
    """Cross-entropy with class weights; positions labelled -100 are ignored. The mean is
    taken over the weights of the targets, so the loss scale does not depend on them."""
    import torch

    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
        weight=torch.as_tensor(weights, dtype=torch.float32, device=logits.device), ignore_index=-100)


def token_budget_batches(lengths: list[int], budget: int, seed: int) -> list[list[int]]:
    """Row indices in batches of at most ``budget`` padded tokens (fairseq's max_tokens).

    Rows are sorted by length (equal lengths in a seeded random order) and cut greedily: a
    batch pads to its longest row, so n rows of length up to L cost n x L. The batches then
    come in a seeded random order. Their number depends on the lengths alone, so every epoch
    (and every seed) has the same number of steps. A row longer than ``budget`` gets a batch
    of its own (params keep budget >= model.max_length, so none is).
    """
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    shuffled = rng.permutation(len(lengths))
    order = shuffled[np.argsort(lengths[shuffled], kind="stable")]
    batches, batch = [], []
    for index in order.tolist():
        if batch and (len(batch) + 1) * int(lengths[index]) > budget:
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return [batches[i] for i in rng.permutation(len(batches))]


def token_batch_sampler(lengths: list[int], budget: int, seed: int):
    """A DataLoader batch_sampler over :func:`token_budget_batches`, seeded with (seed, epoch):
    the Trainer calls set_epoch, so a resumed run sees the same batches as an unbroken one."""
    from torch.utils.data import Sampler

    class TokenBudgetBatchSampler(Sampler):
        def __init__(self):
            self.epoch = 0
            self.batches = token_budget_batches(lengths, budget, seed)

        def set_epoch(self, epoch: int) -> None:
            if epoch != self.epoch:
                self.epoch, self.batches = epoch, token_budget_batches(lengths, budget, seed + epoch)

        def __iter__(self):
            return iter(self.batches)

        def __len__(self) -> int:
            return len(self.batches)

    return TokenBudgetBatchSampler()


def _trainer_class():
    """The Trainer, with length-grouped batches that a resumed run reproduces exactly.

    The stock LengthGroupedSampler draws its order from the global torch RNG when an epoch
    starts; a run resumed mid-epoch restores that RNG only later, so it would see other
    batches. Seeding the order with (seed, epoch) makes it independent of what ran before.
    """
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self, batch_size: int, lengths: list[int], seed: int):
            super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:  # the Trainer calls this at each epoch
            self.epoch = epoch

        def __iter__(self):
            self.generator.manual_seed(self.seed + self.epoch)
            return super().__iter__()

    class PipelineTrainer(Trainer):
        class_weights: list[float] | None = None  # train.class_weights: auto
        batch_tokens: int | None = None  # train.batch_tokens

        def get_train_dataloader(self):
            if not self.batch_tokens:
                return super().get_train_dataloader()
            from torch.utils.data import DataLoader

            dataset = self._remove_unused_columns(self.train_dataset, description="Training")
            batches = token_batch_sampler([len(ids) for ids in dataset["input_ids"]], self.batch_tokens,
                                          self.args.data_seed or self.args.seed)
            return self.accelerator.prepare(DataLoader(dataset, batch_sampler=batches, collate_fn=self.data_collator,
                                                       num_workers=self.args.dataloader_num_workers))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.class_weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            loss = weighted_loss(outputs.logits, inputs["labels"], self.class_weights)
            return (loss, outputs) if return_outputs else loss

        def loss_scale(self) -> int:
            """transformers averages tokens across processes by multiplying each step's loss by
            the process count (DDP then means the gradients), and logs and returns that
            product as the training loss: under two processes it read twice the loss."""
            if self.class_weights is None and self.args.average_tokens_across_devices and \
                    (self.model_accepts_loss_kwargs or self.compute_loss_func):
                return self.accelerator.num_processes
            return 1

        def log(self, logs: dict, *args, **kwargs) -> None:
            if "loss" in logs:  # the curves and log lines: the loss per token, at any process count
                logs = {**logs, "loss": logs["loss"] / self.loss_scale()}
            super().log(logs, *args, **kwargs)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            lengths = [len(ids) for ids in dataset["input_ids"]]
            return EpochSeededLengthGroupedSampler(batch, lengths, self.args.data_seed or self.args.seed)

    return PipelineTrainer


def curves_callback(folder: Path, resume: bool):
    """Log train loss, eval loss and eval F1 per step with DVCLive into ``folder``.

    Only these curves: DVCLive's stock Trainer integration also logs every
    TrainingArguments field as a param (about 100 columns in `dvc exp show`).
    Under `accelerate launch` only the main process writes them.
    """
    from dvclive import Live
    from transformers import TrainerCallback

    curves = {"loss": "train/loss", "eval_loss": "eval/loss", "eval_f1": "eval/f1",
              "eval_token_accuracy": "eval/token_accuracy"}

    class DVCLiveCurves(TrainerCallback):
        live = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            if self.live is None:
                self.live = Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None)
            self.live.step = state.global_step
            for key, name in curves.items():
                if key in (logs or {}):
                    self.live.log_metric(name, float(logs[key]))

        def on_train_end(self, args, state, control, **kwargs):
            if self.live is not None:
                self.live.make_summary()

    return DVCLiveCurves()


def method_step_callback(after_step):
    """Calls a method's per-step hook (AdaLoRA's budget) after each optimizer step, while the
    gradients it reads are still there."""
    from transformers import TrainerCallback

    class AfterOptimizerStep(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            after_step(model, state.global_step)

    return AfterOptimizerStep()


def peak_memory_mib() -> dict:
    """This process's peak resident memory, and the GPU's peak allocation when there is one."""
    import resource

    import torch

    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    peak = {"rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)}
    if torch.cuda.is_available():
        peak["cuda"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def batches_per_epoch(train: TrainParams, seed: int, train_lengths: list[int]) -> int:
    """Batches in one pass over the train split: batch_size rows each, or token budgets
    (their number depends on the lengths only, the same in every epoch)."""
    if train.batch_tokens:
        return len(token_budget_batches(train_lengths, train.batch_tokens, seed))
    return math.ceil(len(train_lengths) / train.batch_size)


def total_steps(train: TrainParams, batches: int, processes: int = 1) -> int:
    """Optimizer steps the training will take, from :func:`batches_per_epoch` (each
    process's batches make one step)."""
    if train.max_steps > 0:
        return train.max_steps
    return math.ceil(train.epochs * math.ceil(batches / processes))


def batch_metrics(train: TrainParams, train_rows: int, batches: int, processes: int = 1) -> dict:
    """What one optimizer step takes, for metrics/train.json: rows, or with train.batch_tokens
    the token budget and the rows a batch holds on average."""
    if not train.batch_tokens:
        return {"effective_batch_size": processes * train.batch_size}
    return {"effective_batch_tokens": processes * train.batch_tokens,
            "mean_batch_rows": round(train_rows / batches, 2)}


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags for bf16 matmuls in hardware


def precision_note(mixed_precision: str, cuda: bool, cpu_flags: set[str] | None) -> str | None:
    """One line when train.mixed_precision will not pay on this machine's CPU (``cpu_flags``
    from /proc/cpuinfo; None where it cannot be read). bf16 autocast on a CPU with bf16 in
    hardware trains ~1.5x faster at equal F1 here (bench/README.md); elsewhere it is emulated."""
    if cuda or mixed_precision == "no" or cpu_flags is None:
        return None
    if mixed_precision == "fp16":
        return ("train: train.mixed_precision fp16 on a CPU: autocast to fp16 is for GPUs and runs slower here; "
                "use bf16 (with avx512_bf16 or amx_bf16) or no")
    if not cpu_flags & set(NATIVE_BF16_FLAGS):
        return (f"train: train.mixed_precision bf16 on a CPU without bf16 in hardware (none of "
                f"{', '.join(NATIVE_BF16_FLAGS)} in /proc/cpuinfo): emulated, so slower than no")
    return None


# oneDNN, which runs bf16 products on the CPU, keeps a compiled kernel with its scratch
# memory for every distinct shape it meets, up to 1,024 of them; length-grouped batches
# bring new shapes with every length, and that cache alone raised the default's peak RSS by
# 28% over float32. 32 kernels keep the peak at float32's at no measured cost in speed;
# 16 cost about 10%, 4 doubled the time (bench/README.md).
KERNEL_CACHE_SIZE = "32"


def bound_kernel_cache(mixed_precision: str) -> None:
    """Cap oneDNN's kernel cache for bf16 autocast (a user's own ONEDNN_PRIMITIVE_CACHE_CAPACITY
    wins). oneDNN reads it when it first builds a bf16 kernel: call before training."""
    if mixed_precision == "bf16":
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE_SIZE)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def train(model, tokenizer, datasets, params: Params, method: Method, task, labels: list[str],
          checkpoint_dir: Path, curves_dir: Path, resume_from: Path | None = None) -> TrainSummary:
    """Run the Trainer (from ``resume_from`` when given); return the training summary.
    (It reads most of params: train.*, eval.batch_size, seed, the method's sections.)"""
    bound_kernel_cache(params.train.mixed_precision)
    callbacks = [checkpoints.marker_callback(), curves_callback(curves_dir, resume=resume_from is not None)]
    if method.after_step:
        callbacks.append(method_step_callback(method.after_step))
    link = trial.from_environment()
    reporting = trial.pruning_callback(link) if link else None
    if reporting:
        callbacks.append(reporting)
    trainer = _trainer_class()(
        model=model,
        args=training_arguments(params, checkpoint_dir),
        train_dataset=task.model_inputs(datasets["train"]),
        eval_dataset=task.model_inputs(datasets["validation"]),
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=task.trainer_metrics(labels, model),
        # Generation keeps only the argmax: full vocabulary logits would fill the memory.
        preprocess_logits_for_metrics=task.preprocess_logits,
        callbacks=callbacks,
        optimizers=(method.optimizer(model, params) if method.optimizer else None, None),
    )
    trainer.class_weights = train_class_weights(params, task, datasets, labels)
    trainer.batch_tokens = params.train.batch_tokens
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    return TrainSummary(
        train_loss=float(result.training_loss) / trainer.loss_scale(), steps=int(result.global_step), epochs=float(trainer.state.epoch or 0),
        train_seconds=seconds, train_rows=len(datasets["train"]), validation=validation_scores(evals[-1] if evals else {}),
        class_weights=dict(zip(labels, trainer.class_weights)) if trainer.class_weights else None,
        resumed_from_step=checkpoints.step_of(resume_from) if resume_from else 0,
        tune=reporting.summary() if reporting else None, learning_rates=peak_rates(trainer.optimizer))


def peak_rates(optimizer) -> tuple[float, ...]:
    """The distinct rates the optimizer's groups start from (the scheduler keeps them as
    ``initial_lr``), rounded against float noise."""
    return tuple(sorted({float(f"{group.get('initial_lr', group['lr']):.6g}") for group in optimizer.param_groups}))


def launch_command(train: TrainParams) -> list[str] | None:
    """How train.launcher runs the train stage: None for this process, or accelerate's
    launcher with the project's config (an argument list: params never reach a shell)."""
    if train.launcher == "python":
        return None
    import shutil

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        raise ParamsError("train.launcher: accelerate, but its `accelerate` command is not installed here "
                          "(pip install accelerate), or set train.launcher: python")
    processes = ["--num_processes", str(train.processes)] if train.processes else []
    return [accelerate, "launch", "--config_file", train.accelerate_config, *processes]
