"""One training run for the benchmark, in its own process so peak memory is its own.

--style pipeline: the train stage's code (peftpipe.training) on the tokenized splits.
--style tutorial: a script written the way the PEFT LoRA token-classification tutorial
  does it (tokenize_and_align_labels, random batches, DataCollatorForTokenClassification,
  eval and save every epoch, load_best_model_at_end), same model, rows, LoRA config,
  batch size, epochs, learning rate and max length.
--style example: a script written the way transformers' own token-classification example
  (examples/pytorch/token-classification/run_ner.py) runs: the same tokenize_and_align_labels
  with --label_all_tokens as the recipe sets it (continuations as I-), random batches,
  DataCollatorForTokenClassification, default checkpointing (every 500 steps), one
  evaluation on validation after training; full fine-tuning when the recipe's method is none.
--recipe NAME: the recipe's params and data (loaded and split in process, as the download and
  split stages would) instead of params.yaml and data/split.
Every style's trained model then predicts the test split through the same code (peftpipe's
evaluate path), so the F1s compare paired.
Prints one JSON line: wall seconds, real and padded tokens, FLOPs, validation and test F1,
the test predictions, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT = Path("data/split")  # the default's, after dvc repro; --recipe writes its own
VALIDATION_FRACTION = 1.0  # --validation-fraction
SCORE_TEST = True  # --no-test: a later repeat's predictions would only repeat the first's
FAST_DROPOUT = False  # --fast-dropout


class TokenCounter:
    """Counts what the model computes while training: a pre-hook on the word embeddings."""

    def __init__(self, model, pad_id: int):
        self.real = self.padded = self.attention_units = 0
        embeddings = model.get_input_embeddings()
        embeddings.register_forward_pre_hook(self._count)
        self.pad_id = pad_id

    def _count(self, module, args):
        if not module.training:
            return
        ids = args[0]
        self.padded += ids.numel()
        self.real += int((ids != self.pad_id).sum())
        self.attention_units += ids.shape[0] * ids.shape[1] ** 2  # sum over batches of B * S^2


class EvalClock:
    """Seconds since training began at each validation evaluation (so evaluation time is
    inside them) and its F1; with a target, training stops at the first evaluation that
    reaches it (time to quality, as MLPerf measures it)."""

    def __init__(self, target: float | None = None, evals_per_epoch: int = 1):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock.started = time.perf_counter()
                if evals_per_epoch > 1:  # the stage evaluates once an epoch
                    per_epoch = max(1, round(state.max_steps / args.num_train_epochs))
                    args.eval_strategy, state.eval_steps = "steps", max(1, per_epoch // evals_per_epoch)

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                f1 = (metrics or {}).get("eval_f1")
                clock.points.append({"seconds": round(time.perf_counter() - clock.started, 2),
                                     "step": state.global_step, "f1": f1, "loss": (metrics or {}).get("eval_loss")})
                if clock.target is not None and f1 is not None and f1 >= clock.target:
                    control.should_training_stop = True

        self.callback, self.target, self.points, self.started = Callback(), target, [], time.perf_counter()

    def reached(self) -> dict | None:
        return next((p for p in self.points if self.target is not None and p["f1"] >= self.target), None)


CLOCK: EvalClock | None = None  # set in main(); every style reports its evaluations' times


def clocked_training() -> None:
    """The train stage's Trainer, with CLOCK's callback added."""
    from peftpipe import training

    plain_trainer = training._trainer_class

    def trainer_class():
        class Clocked(plain_trainer()):
            def __init__(self, *args, **kwargs):
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), CLOCK.callback]
                super().__init__(*args, **kwargs)

        return Clocked

    training._trainer_class = trainer_class


def flop_counts(model, counter: TokenCounter) -> dict:
    """Training FLOPs, counted from the linear layers the model runs (see bench/README.md).

    Forward 2N per token over every linear weight N; backward 2N for the input gradients
    (LoRA sits in every layer, so they flow to the bottom) plus 2 x trainable weights for
    the weight gradients; LoRA's own matrices cost 6 x their size per token. Attention
    scores and weighted sums: 4 x layers x hidden per token x sequence length forward, twice
    that backward.
    """
    import torch

    frozen = trainable = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for p in module.parameters(recurse=False):
                if p.dim() == 2:
                    if p.requires_grad:
                        trainable += p.numel()
                    else:
                        frozen += p.numel()
    config = model.config
    per_token = 4 * frozen + 6 * trainable
    attention = 12 * config.num_hidden_layers * config.hidden_size * counter.attention_units
    return {"linear_frozen": frozen, "linear_trainable": trainable,
            "flops": per_token * counter.padded + attention,
            "flops_real_tokens": per_token * counter.real + attention * counter.real / max(1, counter.padded)}


def pipeline_run(params, epochs: float, fraction: float, max_length: int, out: Path) -> dict:
    from peftpipe import adapters, training
    from peftpipe.io import read_json
    from peftpipe.methods import get_method
    from peftpipe.models import load_base
    from peftpipe.tasks import get_task

    params = params.model_copy(update={"train": params.train.model_copy(update={"epochs": epochs}),
                                        "model": params.model.model_copy(update={"max_length": max_length})})
    task = get_task(params.task.kind)
    labels = read_json(SPLIT / "labels.json")
    method = get_method(params.peft.method)
    model, tokenizer = load_base(params.model, task, labels, params.seed,
                                 params.quantization if method.quantized else None)
    datasets = {name: task.tokenize(frame(name, fraction, params.seed), tokenizer, labels, params)
                for name in ("train", "validation")}
    model = adapters.wrap(model, method, task, params)
    if FAST_DROPOUT:
        from fast_dropout import use_fast_dropout

        use_fast_dropout(model)
    counter = TokenCounter(model, tokenizer.pad_token_id)
    started = time.perf_counter()
    summary = training.train(model, tokenizer, datasets, params, method, task, labels, out / "checkpoints",
                             out / "curves")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "validation_f1": summary.validation["f1"], "steps": summary.steps,
            **flop_counts(model, counter), "real_tokens": counter.real, "padded_tokens": counter.padded,
            **(test_scores(model, tokenizer, params, labels) if SCORE_TEST else {})}


def test_scores(model, tokenizer, params, labels: list[str]) -> dict:
    """Test F1 and predictions from peftpipe's evaluate path, whichever script trained ``model``."""
    from peftpipe.evaluation import predict_split
    from peftpipe.tasks import get_task

    task = get_task(params.task.kind)
    dataset = task.tokenize(frame("test", 1.0, params.seed), tokenizer, labels, params)
    model.eval()
    _, predicted = predict_split(task, model, tokenizer, dataset, labels, params.eval.batch_size)
    gold = task.gold(dataset)
    return {"test_f1": task.compute_metrics(gold, predicted, labels)["overall"]["f1"],
            "test_rows": [{"row": i, "gold": g, "predicted": p} for i, (g, p) in enumerate(zip(gold, predicted))],
            "test_meaning": {"task": task.kind, "labels": labels}}


def tutorial_run(params, epochs: float, fraction: float, max_length: int, out: Path, example: bool = False) -> dict:
    """As in the tutorial (or, with ``example``, transformers' run_ner.py), apart from reading
    the same rows and model as the pipeline."""
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from peftpipe.io import read_json
    from peftpipe.models import resolve_model

    set_seed(params.seed)
    label_list = read_json(SPLIT / "labels.json")
    label2id = {name: i for i, name in enumerate(label_list)}
    # run_ner.py --label_all_tokens: a word's continuation sub-words get its label, B- as I-.
    b_to_i = {name: label2id.get("I-" + name[2:], label2id[name]) if name.startswith("B-") else label2id[name]
              for name in label_list}
    label_all_tokens = example and params.tokenize.label_all_tokens
    checkpoint = resolve_model(params.model)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def tokenize_and_align_labels(examples):
        tokenized_inputs = tokenizer(examples["tokens"], truncation=True, is_split_into_words=True,
                                     max_length=max_length)
        labels = []
        for i, label in enumerate(examples["tags"]):
            word_ids = tokenized_inputs.word_ids(batch_index=i)
            previous_word_idx = None
            label_ids = []
            for word_idx in word_ids:
                if word_idx is None:
                    label_ids.append(-100)
                elif word_idx != previous_word_idx:
                    label_ids.append(label2id[label[word_idx]])
                else:
                    label_ids.append(b_to_i[label[word_idx]] if label_all_tokens else -100)
                previous_word_idx = word_idx
            labels.append(label_ids)
        tokenized_inputs["labels"] = labels
        return tokenized_inputs

    splits = {name: Dataset.from_pandas(frame(name, fraction, params.seed)[["tokens", "tags"]], preserve_index=False)
              .map(tokenize_and_align_labels, batched=True, remove_columns=["tokens", "tags"])
              for name in ("train", "validation")}

    def compute_metrics(p):
        predictions, labels = p
        predictions = np.argmax(predictions, axis=2)
        true_predictions = [[label_list[p] for (p, l) in zip(prediction, label) if l != -100]  # noqa: E741 (the tutorial's names)
                            for prediction, label in zip(predictions, labels)]
        true_labels = [[label_list[l] for (p, l) in zip(prediction, label) if l != -100]  # noqa: E741
                       for prediction, label in zip(predictions, labels)]
        return {"f1": f1_score(true_labels, true_predictions)}

    model = AutoModelForTokenClassification.from_pretrained(
        checkpoint, num_labels=len(label_list), id2label=dict(enumerate(label_list)), label2id=label2id)
    if params.peft.method != "none":
        lora = params.lora
        peft_config = LoraConfig(task_type=TaskType.TOKEN_CLS, inference_mode=False, r=lora.r, lora_alpha=lora.alpha,
                                 lora_dropout=lora.dropout, bias=lora.bias)
        model = get_peft_model(model, peft_config)
    counter = TokenCounter(model, tokenizer.pad_token_id)
    if example:  # run_ner.py's defaults: no evaluation while training, a checkpoint every 500 steps
        schedule = {"eval_strategy": "no", "save_strategy": "steps", "save_steps": 500}
    else:
        schedule = {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True}
    args = TrainingArguments(
        output_dir=str(out / "tutorial"),
        learning_rate=params.train.learning_rate,
        per_device_train_batch_size=params.train.batch_size,
        per_device_eval_batch_size=params.train.batch_size,
        num_train_epochs=epochs,
        weight_decay=params.train.weight_decay,
        **schedule,
        seed=params.seed,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=splits["train"], eval_dataset=splits["validation"],
                      processing_class=tokenizer, data_collator=DataCollatorForTokenClassification(tokenizer=tokenizer),
                      compute_metrics=compute_metrics, callbacks=[CLOCK.callback])
    started = time.perf_counter()
    result = trainer.train()
    if example:  # run_ner.py --do_eval: once, after training (the pipeline's time includes its evaluations too)
        trainer.evaluate()
    seconds = time.perf_counter() - started
    last = [h for h in trainer.state.log_history if "eval_f1" in h][-1]
    if not example:  # load_best_model_at_end: the model it returns is the lowest validation loss's
        last = min((h for h in trainer.state.log_history if "eval_f1" in h), key=lambda h: h["eval_loss"])
    return {"seconds": seconds, "validation_f1": last["eval_f1"], "steps": result.global_step,
            **flop_counts(model, counter), "real_tokens": counter.real, "padded_tokens": counter.padded,
            **(test_scores(trainer.model, tokenizer, params, label_list) if SCORE_TEST else {})}


def compile_training() -> None:
    """The train stage's TrainingArguments with torch_compile on: the Trainer compiles the
    model with inductor; shapes vary per batch, so dynamo marks them dynamic after the first
    recompile. The compile time is inside the timed train() call, as a user would pay it."""
    from peftpipe import training

    plain = training.training_arguments

    def compiled(params, output_dir):
        arguments = plain(params, output_dir)
        arguments.torch_compile, arguments.torch_compile_backend = True, "inductor"
        return arguments

    training.training_arguments = compiled


def recipe_split(name: str, folder: Path):
    """The recipe's params, and its data split into ``folder`` as the download and split stages would."""
    from peftpipe.io import write_json
    from peftpipe.params import parse_params
    from peftpipe.sources import load_raw
    from peftpipe.splitting import make_splits
    from peftpipe.tools import recipes

    params = parse_params(recipes.compose(name), f"recipes/{name}.yaml")
    loaded = load_raw(params.data, params.task.kind, params.split.group_by)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in make_splits(loaded.splits, params.split).items():
        rows.to_parquet(folder / f"{split}.parquet", index=False)
    write_json(folder / "labels.json", loaded.labels)
    return params


def frame(name: str, fraction: float, seed: int) -> pd.DataFrame:
    rows = pd.read_parquet(SPLIT / f"{name}.parquet")
    if name == "validation" and VALIDATION_FRACTION < 1:
        rows = rows.sample(max(1, round(len(rows) * VALIDATION_FRACTION)), random_state=seed)
    if name == "train" and fraction != 1:
        n = max(1, round(len(rows) * fraction))
        rows = pd.concat([rows] * int(np.ceil(fraction)))[:n] if fraction > 1 else rows.sample(n, random_state=seed)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--style", choices=["pipeline", "tutorial", "example"], required=True)
    parser.add_argument("--recipe", help="a recipe's params and data instead of params.yaml and data/split")
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the train split (>1 repeats it)")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--validation-fraction", type=float, default=1.0,
                        help="share of validation evaluated (with --fraction: keeps a full run's train:eval proportion)")
    parser.add_argument("--no-test", action="store_true", help="skip scoring the test split (later repeats)")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default=None,
                        help="override train.mixed_precision (bf16: autocast, on CPU too)")
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="override train.batch_tokens (padded tokens per batch; 0: batch_size rows)")
    parser.add_argument("--learning-rate", type=float, default=None, help="override train.learning_rate")
    parser.add_argument("--seed", type=int, default=None, help="override seed (model head, adapter init, data order)")
    parser.add_argument("--fast-dropout", action="store_true",
                        help="pipeline with bench/fast_dropout.py's mask in every nn.Dropout (a probe, not a param)")
    parser.add_argument("--compile", action="store_true",
                        help="pipeline with the Trainer's torch_compile (inductor; a probe, not a param)")
    parser.add_argument("--target-f1", type=float, default=None,
                        help="pipeline: stop at the first validation F1 at or above it (time to quality)")
    parser.add_argument("--evals-per-epoch", type=int, default=1, help="validation evaluations an epoch (the stage: 1)")
    parser.add_argument("--random-batches", action="store_true",
                        help="pipeline with train.group_by_length false (isolates what grouping does)")
    args = parser.parse_args()

    from peftpipe.params import load_params

    global SPLIT, VALIDATION_FRACTION, SCORE_TEST, FAST_DROPOUT, CLOCK
    CLOCK = EvalClock(args.target_f1, args.evals_per_epoch)
    VALIDATION_FRACTION, SCORE_TEST, FAST_DROPOUT = args.validation_fraction, not args.no_test, args.fast_dropout
    with tempfile.TemporaryDirectory(prefix="peftpipe-bench-") as out:
        if args.recipe:
            SPLIT = Path(out) / "split"
            params = recipe_split(args.recipe, SPLIT)
        else:
            params = load_params()
        overrides = {**({"group_by_length": False} if args.random_batches else {}),
                     **({"batch_tokens": args.batch_tokens or None} if args.batch_tokens is not None else {}),
                     **({"learning_rate": args.learning_rate} if args.learning_rate else {}),
                     **({"mixed_precision": args.mixed_precision} if args.mixed_precision else {})}
        params = params.model_copy(update={"train": params.train.model_copy(update=overrides),
                                            **({"seed": args.seed} if args.seed is not None else {})})
        max_length = args.max_length or params.model.max_length
        if args.compile:
            compile_training()
        if args.style == "pipeline":
            clocked_training()
            result = pipeline_run(params, args.epochs, args.fraction, max_length, Path(out))
        else:
            result = tutorial_run(params, args.epochs, args.fraction, max_length, Path(out), args.style == "example")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"style": args.style, "recipe": args.recipe, "seed": params.seed, "random_batches": args.random_batches,
                      "fast_dropout": args.fast_dropout,
                      "compile": args.compile,
                      "mixed_precision": params.train.mixed_precision, "learning_rate": params.train.learning_rate, "batch_tokens": params.train.batch_tokens, "epochs": args.epochs, "fraction": args.fraction,
                      "max_length": args.max_length or params.model.max_length,
                      "peak_rss_mib": round(peak_kib / 1024, 1), "evaluations": CLOCK.points,
                      "target_f1": args.target_f1, "reached": CLOCK.reached(), **result}))


if __name__ == "__main__":
    main()
