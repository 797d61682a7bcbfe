"""train: fine-tune the base model with the PEFT method in `peft.method` on the train split.

Writes models/adapter (adapter weights with the head, tokenizer, label map, base model
reference) and metrics/train.json (loss, timings, trainable-parameter share). Checkpoints
go to models/checkpoints; a run that was killed resumes from the last complete one.
With train.launcher accelerate it reruns itself under `accelerate launch`: every process
trains; only the main one writes.
"""


import torch

from accelerate import PartialState
from peftpipe import accelerate_loop, adapters, checkpoints, training
from peftpipe.artifacts import load_tokenized, save_trained, trained_info
from peftpipe.errors import DataError, ParamsError
from peftpipe.io import atomic_path, check_files, read_json
from peftpipe.methods import check_options, get_method, training_settings
from peftpipe.models import load_base
from peftpipe.params import only_checking
from peftpipe.provenance import write_metrics
from peftpipe.stage import stage
from peftpipe.tasks import get_task


# curves: DVCLive's train/eval loss and eval F1 per step; checkpoints: resumable, not a DVC output.
@stage(reads=("tokenized", "settings"), writes=("adapter", "report", "curves"), scratch=("checkpoint_dir",),
       launcher=lambda params: training.launch_command(params.train))
def main(params, tokenized, settings, adapter, report, curves, checkpoint_dir):
    """Train the adapter and save it."""
    # This process, or one of N under `accelerate launch` (gloo on a machine with no CUDA).
    processes = PartialState(cpu=not torch.cuda.is_available())
    task, method = get_task(params.task.kind), get_method(params.peft.method)  # resolved once, handed down
    datasets, labels = load_tokenized(tokenized)
    if not settings.is_file() or read_json(settings) != training_settings(params, method):  # run outside dvc: say so
        raise ParamsError(f"{settings} does not hold params.yaml's peft settings; run `dvc repro` "
                          f"(or python stages/settings.py --settings {settings}) first")
    check_options(method, params.peft.options)  # before the model loads: a typo costs no time
    with only_checking():  # nor a missing test set, found only after training
        check_files(params.eval.extra, "eval.extra", DataError,
                    "the evaluate stage reads it after training; fix the path or remove the entry")
    model, tokenizer = load_base(params.model, task, labels, params.seed,  # seeded: the adapter below is too
                                 params.quantization if method.quantized else None)
    batches = training.batches_per_epoch(params.train, params.seed, [len(ids) for ids in datasets["train"]["input_ids"]])
    steps = training.total_steps(params.train, batches, processes.num_processes)
    model = adapters.wrap(model, method, task, params, steps)
    counts = adapters.parameter_counts(model)
    processes.print(f"train: {method.name}, {counts['trainable_params']:,} of "
          f"{counts['total_params']:,} parameters trainable ({counts['trainable_share']:.2%})")
    run = checkpoints.fingerprint(params, tokenized, settings)  # what decides this run: resumes match it, peftpipe.json records it
    note = training.precision_note(params.train.mixed_precision, torch.cuda.is_available(), training.cpu_flags())
    if note:
        processes.print(note)
    if params.train.loop == "accelerate":  # the course's custom loop: no checkpoints to resume
        summary = accelerate_loop.train(model, tokenizer, datasets, params, method, task, labels, curves)
    else:
        with processes.main_process_first():  # the main one sweeps partial checkpoints first
            resume_from = checkpoints.prepare(checkpoint_dir, run)
        if resume_from:
            processes.print(f"train: resuming from {resume_from}")
        summary = training.train(model, tokenizer, datasets, params, method, task, labels, checkpoint_dir,
                                 curves, resume_from)
    if processes.is_main_process:
        with atomic_path(adapter, directory=True) as tmp:
            pairs = "text_pair" in datasets["train"].column_names
            save_trained(model, tokenizer, method, trained_info(params, method, labels, pairs, run), tmp)
        checkpoints.clear(checkpoint_dir)  # finished: a forced rerun starts from scratch
        write_metrics(report, {**summary.metrics(), "processes": processes.num_processes,
                               **training.batch_metrics(params.train, len(datasets["train"]), batches, processes.num_processes),
                               **counts, "peak_memory_mib": training.peak_memory_mib()}, params.seed)
    processes.wait_for_everyone()
    scores = ", ".join(f"{k} {v:.4f}" for k, v in summary.validation.items() if v is not None)
    processes.print(f"train: loss {summary.train_loss:.4f}, validation {scores} -> {adapter}")


if __name__ == "__main__":
    main()
