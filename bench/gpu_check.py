"""The full-size recipes' first training steps on a CUDA machine, in one table.

    python bench/gpu_check.py                 # CUDA: every *-full recipe, 20 steps each (under 10 minutes on one H100)
    python bench/gpu_check.py --dry-run       # any machine: tiny models of the same architectures, on the CPU
    python bench/gpu_check.py --hub           # the recipes' own models and nothing synthetic but the rows (internet)

Each recipe runs through the pipeline's own stages (download from local files, split,
tokenize, settings, train) with its precision, PEFT method and 4-bit base as the recipe
sets them, for --steps steps. Without --hub, the model is the recipe's architecture at its
full size (SHAPES: the hub config's values) with random weights, so a GPU machine with no
internet still checks what needs CUDA: bf16 autocast, bitsandbytes' 4-bit layers, memory
and speed. Quality is not measured here (random weights, synthetic rows). One more row
launches conll-ner-full-lora as two processes (two GPUs; the CPU pair in --dry-run).
Rows go to stdout as a table and to bench/results/gpu-check-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import runpy
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORDS = ["alice", "bob", "paris", "london", "acme", "corp", "went", "to", "the", "city", "and", "said", "profit",
         "rose", "fell", "shares", "market", "news", "today", "a", "of", "in"]
# Each hub model's architecture and size, from its config.json (so no hub is needed).
SHAPES = {
    "bert-base-cased": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, vocab_size=28996, max_position_embeddings=512)),
    "roberta-base": ("roberta", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, vocab_size=50265, max_position_embeddings=514)),
    "roberta-large": ("roberta", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                      intermediate_size=4096, vocab_size=50265, max_position_embeddings=514)),
    "t5-large": ("t5", dict(d_model=1024, d_ff=4096, d_kv=64, num_layers=24, num_heads=16, vocab_size=32128)),
    "meta-llama/Meta-Llama-3-8B": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                                 max_position_embeddings=8192, rope_theta=500000.0)),
}
TINY = {  # --dry-run: the same architectures, small enough for a CPU test
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64),
    "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=66),
    "t5": dict(d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2),
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64),
}


def full_recipes() -> list[str]:
    from peftpipe.tools.recipes import known

    return [name for name in known() if "-full" in name]


def tokenizer_for(family: str):
    """A word-level tokenizer over WORDS with the special tokens the family's models expect."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if family in ("bert", "roberta"):
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
        backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"), {"pad_token_id": 0}
    vocab = ["<pad>", "</s>", "<unk>", "<s>", *WORDS, "Label", ":"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if family == "t5":  # every encoded text ends with </s>
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                       eos_token="</s>"), {"pad_token_id": 0, "eos_token_id": 1,
                                                           "decoder_start_token_id": 0}
    # A decoder LLM comes without a pad token; the pipeline adds one.
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>"), {"bos_token_id": 3, "eos_token_id": 1}


def build_model(name: str, folder: Path, tiny: bool) -> int:
    """The model's architecture with random weights (full size, or TINY), saved with a
    tokenizer; returns its parameter count."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        RobertaConfig,
        RobertaModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    family, shape = SHAPES[name]
    tokenizer, special = tokenizer_for(family)
    shape = {**shape, **TINY[family]} if tiny else shape
    config_class, model_class = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel),
                                 "t5": (T5Config, T5ForConditionalGeneration),
                                 "llama": (LlamaConfig, LlamaForCausalLM)}[family]
    torch.manual_seed(0)
    cuda = torch.cuda.is_available() and not tiny
    # Built on the GPU in bf16 where there is one: 8B random weights take minutes on CPUs.
    with torch.device("cuda" if cuda else "cpu"):
        model = model_class(config_class(**shape, **special)).to(torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    count = sum(p.numel() for p in model.parameters())
    del model
    return count


def write_rows(params, folder: Path, rows: int) -> dict[str, str]:
    """Synthetic rows in the recipe's columns and labels: train and test (validation is carved)."""
    from peftpipe.tasks import get_task

    rng = random.Random(0)
    columns, per_token = params.data.columns, get_task(params.task.kind).per_token
    labels = params.data.label_names or (["O", "B-PER", "I-PER", "B-LOC", "I-LOC"] if per_token
                                          else ["positive", "negative", "neutral"])
    files = {}
    for split, count in (("train", rows), ("test", max(rows // 4, 8))):
        path = folder / "inputs" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            for i in range(count):
                words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
                if per_token:
                    row = {columns.tokens: words, columns.tags: [rng.choice([t for t in labels if not t.startswith("I-")])
                                                                 for _ in words]}
                else:
                    row = {columns.text_columns[0]: " ".join(words), columns.label: labels[i % len(labels)]}
                    if columns.text_pair:
                        row[columns.text_pair] = " ".join(rng.choice(WORDS) for _ in range(6))
                fh.write(json.dumps(row) + "\n")
        files[split] = f"inputs/{split}.jsonl"
    return files


def stage_command(script: str) -> list[str]:
    """dvc.yaml's command line for stages/<script>.py, from the script on."""
    from ruamel.yaml import YAML

    for stage in YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text())["stages"].values():
        words = shlex.split(stage["cmd"])
        if f"stages/{script}.py" in words:
            return words[words.index(f"stages/{script}.py"):]
    raise KeyError(script)


def run_stage(script: str) -> None:
    """One stage in this process (its imports paid once), as conftest.run_stage does."""
    words = stage_command(script)
    command = runpy.run_path(str(ROOT / words[0]), run_name="gpu_check")["main"]
    command.main(words[1:], standalone_mode=False)


def check_recipe(name: str, project: Path, steps: int, tiny: bool, hub: bool) -> dict:
    import torch

    from peftpipe.params import load_params, write_params
    from peftpipe.tools.recipes import params_text

    project.mkdir(parents=True)
    (project / "params.yaml").write_text(params_text(name))
    params = load_params(project / "params.yaml")
    model_name, model_params = params.model.name, None
    if not hub:
        model_params = build_model(model_name, project / "model", tiny)
    files = write_rows(params, project, rows=64 if tiny else 512)
    write_params(project / "params.yaml", {
        "data": {"source": "local", "name": None, "config": None, "revision": None, "files": files, "format": "jsonl"},
        "split": {"group_by": None},
        **({} if hub else {"model": {"source": "local", "name": str(project / "model"), "revision": None,
                                     "max_length": 32 if tiny else params.model.max_length}}),
        "train": {"max_steps": steps, "logging_steps": 1, "checkpoint_steps": 0, "launcher": "python",
                  **({"mixed_precision": "no", "batch_size": 4} if tiny else {})},
        "eval": {"extra": {}}})
    row = {"recipe": name, "model": model_name + ("" if hub else " (random)"),
           "params_m": round(model_params / 1e6, 1) if model_params else None,
           "method": params.peft.method, "precision": "no" if tiny else params.train.mixed_precision,
           "four_bit": params.peft.method == "qlora", "processes": 1}
    return run_pipeline(project, row, ["download", "split", "tokenize_align", "settings", "train"], torch)


def run_pipeline(project: Path, row: dict, scripts: list[str], torch) -> dict:
    import os

    start, here, said = time.perf_counter(), Path.cwd(), io.StringIO()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    os.chdir(project)
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            for script in scripts:
                run_stage(script)
    except (SystemExit, Exception) as err:  # a stage's one-line error, or a crash outside its handling
        lines = [line for line in said.getvalue().splitlines() if line.startswith("error:")]
        return {**row, "status": "failed", "error": lines[-1] if lines else f"{type(err).__name__}: {err}"[:300]}
    finally:
        os.chdir(here)
    return {**row, **trained(project / "metrics/train.json"), "wall_s": round(time.perf_counter() - start, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None}


def trained(report: Path) -> dict:
    facts = json.loads(report.read_text())
    loss = facts.get("train_loss", facts.get("loss"))
    finite = loss is not None and math.isfinite(loss)
    return {"status": "ok" if finite else "loss not finite", "steps": facts.get("steps", facts.get("global_step")),
            "loss": loss, "train_s": facts.get("train_seconds", facts.get("train_runtime"))}


def two_processes(project: Path, tiny: bool) -> dict:
    """conll-ner-full-lora's project again, trained by two processes (DDP)."""
    import torch

    row = {"recipe": "conll-ner-full-lora", "model": "as above", "method": "lora", "processes": 2,
           "precision": "no" if tiny else "bf16", "four_bit": False}
    gpus = torch.cuda.device_count()
    if not tiny and gpus < 2:
        return {**row, "status": f"skipped: {gpus} GPU (two processes need two; NCCL keeps one rank a GPU)"}
    config = "accelerate/cpu-2proc.yaml" if tiny else "accelerate/multi-gpu.yaml"
    command = ["accelerate", "launch", "--config_file", str(ROOT / config), "--num_processes", "2",
               str(ROOT / "stages/train.py"), *stage_command("train")[1:]]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=project, capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {**row, "status": "failed", "error": lines[-1] if lines else f"exit {done.returncode}"}
    facts = json.loads((project / "metrics/train.json").read_text())
    return {**row, **trained(project / "metrics/train.json"), "wall_s": round(time.perf_counter() - start, 1),
            "processes": facts.get("processes", 2)}


COLUMNS = ["recipe", "model", "params_m", "method", "precision", "four_bit", "processes", "steps", "loss", "train_s",
           "peak_gpu_mib", "wall_s", "status"]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [row.get(column) for column in COLUMNS]
        cells[-1] = row["status"] + (f": {row['error']}" if row.get("error") else "")
        lines.append("| " + " | ".join("-" if cell is None else f"{cell:.4g}" if isinstance(cell, float) else str(cell)
                                       for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU (what the tests run)")
    parser.add_argument("--hub", action="store_true", help="the recipes' own models from the hub")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--recipes", nargs="*", help="these full recipes only (default: all)")
    parser.add_argument("--no-two-processes", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --dry-run to check the script on the CPU")
    names = args.recipes or full_recipes()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            rows.append(check_recipe(name, Path(scratch) / name, args.steps, args.dry_run, args.hub))
        if not args.no_two_processes and (Path(scratch) / "conll-ner-full-lora/data/tokenized").is_dir():
            print("gpu_check: conll-ner-full-lora, two processes ...", file=sys.stderr, flush=True)
            rows.append(two_processes(Path(scratch) / "conll-ner-full-lora", args.dry_run))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else "CPU (dry run)"
    print(f"gpu_check on {device}, {args.steps} steps a recipe, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(table(rows))
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (args.results / f"gpu-check-{'dry-' if args.dry_run else ''}{stamp}.json").write_text(
        json.dumps({"device": device, "steps": args.steps, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(row["status"] == "ok" or row["status"].startswith("skipped") for row in main()) else 1)
