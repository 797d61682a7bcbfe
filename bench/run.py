"""peftpipe benchmark: the pipeline against a tutorial-style script, on this machine, in
one run. Writes bench/results/<timestamp>.json and .md and prints the table.

    python bench/run.py                 # about 20 minutes on 2 CPU cores (--scaling: 6 more)
    python bench/run.py --epochs 1 --repeats 1 --skip-conll   # a quick look

Run it from the repository root after `dvc repro` (it reads data/split, data/tokenized
and models/adapter, and times a no-op `dvc repro`). See bench/README.md for what each
number means and how FLOPs are counted.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Diagnostic rows: the default with token-budget batches (1,024 padded tokens, about 32
# tweets), and conll-ner-cpu with the 16-row batches and rate it had before its recipe took
# train.batch_tokens 640 (bench/README.md: what each does to speed and F1).
DEFAULT_TOKEN_BATCHES = ["--style", "pipeline", "--batch-tokens", "1024"]
CONLL_ROW_BATCHES = ["--style", "pipeline", "--batch-tokens", "0", "--learning-rate", "1e-4"]
RESULTS = HERE / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def python_json(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: {script} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Best FLOP/s of an n x n matmul in ``dtype`` with torch's default threads."""
    import torch

    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    torch.mm(a, b)  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def shape_peak(rows: int = 600, hidden: int = 384, repeats: int = 20, dtype: str = "float32") -> float:
    """Best float32 FLOP/s of the default model's own products: a batch of ~600 token rows
    through a hidden x hidden projection and the hidden x 4 hidden feed-forward layer (what
    the large-matmul peak overstates for a small model)."""
    import torch

    x = torch.randn(rows, hidden, dtype=getattr(torch, dtype))
    weights = [torch.randn(hidden, hidden, dtype=x.dtype), torch.randn(hidden, 4 * hidden, dtype=x.dtype)]
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in weights)
    for w in weights:
        x @ w  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for w in weights:
            x @ w
        best = min(best, time.perf_counter() - started)
    return flops / best


def timed(args: list[str], cwd: str | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def pipeline_overhead() -> dict:
    status = subprocess.run(["dvc", "status", "--quiet"], capture_output=True)
    if status.returncode != 0:
        log("dvc status: the pipeline is not up to date; run `dvc repro` first to time a no-op repro")
        return {}
    noop = min(timed(["dvc", "repro"])[0] for _ in range(3))
    floor = dvc_floor()
    log(f"no-op dvc repro {noop:.2f} s (a one-stage project's: {floor:.2f} s); now dvc exp run --temp -S lora.r=8 "
        "(30 steps)")
    seconds, output = timed(["dvc", "exp", "run", "--temp", "-n", "bench-r8", "-S", "lora.r=8",
                             "-S", "train.max_steps=30"])
    ran = [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
    subprocess.run(["dvc", "exp", "remove", "bench-r8"], capture_output=True)
    return {"noop_repro_s": noop, "noop_repro_one_stage_s": floor, "exp_r8_30_steps_s": seconds,
            "exp_r8_stages_run": ran}


def dvc_floor() -> float:
    """A no-op `dvc repro` of a one-stage project (best of 3): DVC's own start-up on this
    machine, the floor under the pipeline's (which adds 7 stages' deps, params and outs)."""
    with tempfile.TemporaryDirectory(prefix="peftpipe-bench-dvc-") as folder:
        for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
            subprocess.run(command, cwd=folder, check=True, capture_output=True)
        Path(folder, "dvc.yaml").write_text("stages:\n  one:\n    cmd: echo done > out.txt\n    outs: [out.txt]\n")
        subprocess.run(["dvc", "repro", "-q"], cwd=folder, check=True, capture_output=True)
        return min(timed(["dvc", "repro"], cwd=folder)[0] for _ in range(3))


def summarize(runs: list[dict]) -> dict:
    """Totals over repeats: throughput = all tokens / all seconds; each run's rate too (spread)."""
    seconds = sum(r["seconds"] for r in runs)
    return {
        "real_tokens_per_s_each": [r["real_tokens"] / r["seconds"] for r in runs],
        "test_f1": [round(r["test_f1"], 4) for r in runs if "test_f1" in r],
        "seconds_per_run": seconds / len(runs),
        "real_tokens_per_s": sum(r["real_tokens"] for r in runs) / seconds,
        "padded_tokens_per_s": sum(r["padded_tokens"] for r in runs) / seconds,
        "padding_share": 1 - sum(r["real_tokens"] for r in runs) / sum(r["padded_tokens"] for r in runs),
        "validation_f1": [round(r["validation_f1"], 4) for r in runs],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "flops_per_s": sum(r["flops"] for r in runs) / seconds,
        "mfu": [r["flops"] / r["seconds"] / r["peak_flops"] for r in runs if "peak_flops" in r],
        "mfu_shape": [r["flops"] / r["seconds"] / r["shape_peak_flops"] for r in runs if "shape_peak_flops" in r],
    }


def paired(baseline_runs: list[dict], ours: list[dict]) -> dict:
    """Test F1 of the first runs of each side, paired over the same test rows (peftpipe compare)."""
    from peftpipe.tools.compare import Meaning, Predictions, compare

    def predictions(run: dict) -> Predictions:
        meaning = run["test_meaning"]
        return Predictions(run["test_rows"], Meaning(meaning["task"], tuple(meaning["labels"])))

    difference = next(d for d in compare(predictions(baseline_runs[0]), predictions(ours[0])) if d.metric == "f1")
    return {"a": difference.a, "b": difference.b, "low": difference.low, "high": difference.high,
            "p": difference.p_value}


def side_by_side(label: str, variants: dict[str, list[str]], repeats: int, args: list[str]) -> dict[str, list[dict]]:
    """Each variant (its train_run.py arguments) once per repeat, alternating, so drift hits
    all alike; the first repeat also scores the test split (for the paired tests)."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, variant in variants.items():
            precision = "bfloat16" if "bf16" in variant else "float32"
            before = (matmul_peak(dtype=precision), shape_peak(dtype=precision))
            run = python_json("train_run.py", *variant, *args, *(["--no-test"] if i else []))
            after = (matmul_peak(dtype=precision), shape_peak(dtype=precision))
            # MFU against this run's own bracket: the peak measured just before and just after it.
            run["precision"] = precision
            run["peak_flops"], run["shape_peak_flops"] = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            test = f", test F1 {run['test_f1']:.4f}" if "test_f1" in run else ""
            log(f"{label} {name} run {i + 1}: {run['seconds']:.1f} s, {run['real_tokens'] / run['seconds']:.0f} "
                f"real tokens/s, val F1 {run['validation_f1']:.4f}{test}, peak {run['peak_rss_mib']:.0f} MiB")
            runs[name].append(run)
    return runs


def train_rows(rows: tuple) -> list[str]:
    """Rows (name, summary): MFU per run against the peak of its precision measured just
    before and after it (median over runs)."""
    lines = ["| train stage | wall s / run | real tokens/s, all runs [each] | padding | val F1 | test F1 | "
             "peak RSS MiB | MFU | MFU at the model's shapes |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        each = ", ".join(f"{x:.0f}" for x in r["real_tokens_per_s_each"])
        lines.append(f"| {name} | {r['seconds_per_run']:.1f} | {r['real_tokens_per_s']:.0f} [{each}] | "
                     f"{r['padding_share']:.1%} | {', '.join(map(str, r['validation_f1']))} | "
                     f"{', '.join(map(str, r.get('test_f1') or ['-']))} | "
                     f"{r['peak_rss_mib']:.0f} | {median(r['mfu']):.1%} | {median(r['mfu_shape']):.1%} |")
    return lines


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


def ratio_line(name: str, base: dict, ours: dict, test: dict | None, variant: str = "") -> str:
    each = sorted(o / b for o, b in zip(ours["real_tokens_per_s_each"], base["real_tokens_per_s_each"]))
    ours_name = f"peftpipe {variant}".strip()
    line = (f"**Throughput ratio (real tokens/s, {ours_name} / {name}): {ours['real_tokens_per_s'] / base['real_tokens_per_s']:.2f}x** "
            f"(per alternating pair: median {each[len(each) // 2]:.2f}x, range {each[0]:.2f}-{each[-1]:.2f}x)")
    if test:
        line += (f"; test F1 {test['b']:.4f} vs {test['a']:.4f}, paired difference {test['b'] - test['a']:+.4f} "
                 f"[{test['low']:+.4f}, {test['high']:+.4f}], p {test['p']:.4f}")
    return line


def table(result: dict) -> str:
    measured = [p for p in ("float32", "bfloat16") if f"{p}_matmul_peak_flops" in result]

    def peaks(key: str) -> str:
        return " / ".join(f"{result[f'{p}_{key}'] / 1e9:.1f}" for p in measured)

    lines = [f"Machine: {result['machine']}. Matmul peaks at the start of the run, {' / '.join(measured)}: "
             f"{peaks('matmul_peak_flops')} GFLOP/s "
             f"(2048 x 2048); at the default model's shapes (600 x 384 @ 384 x 384 and 384 x 1536) "
             f"{peaks('shape_peak_flops')}. "
             "Each training run's MFU is against its own precision's peaks measured just before and after it.", ""]
    if "pipeline" in result:
        t, p = result["tutorial"], result["pipeline"]
        lines += [f"Default (LoRA NER on WNUT-16), {result['epochs']:g} epochs x {result['repeats']} alternating runs each:", ""]
        bf16_row = (("peftpipe, `train.mixed_precision: bf16`", result["pipeline_bf16"]),) if "pipeline_bf16" in result else ()
        token_row = ((("peftpipe, `train.batch_tokens: 1024` (diagnostic)", result["pipeline_token_batches"]),)
                     if "pipeline_token_batches" in result else ())
        lines += train_rows((("tutorial-style script", t), ("peftpipe", p), *bf16_row,
                             ("peftpipe, random batches (diagnostic)", result["pipeline_random_batches"]), *token_row))
        lines += ["", ratio_line("tutorial", t, p, result.get("default_test"))]
        if bf16_row:
            lines.append(ratio_line("tutorial", t, result["pipeline_bf16"], result.get("default_test_bf16"), "bf16"))
        lines.append("")
    if "conll" in result:
        c = result["conll"]
        lines += [f"conll-ner-cpu (full fine-tuning), {c['fraction']:.0%} of its train and validation splits, 1 epoch, "
                  f"{c['repeats']} alternating runs each:", ""]
        bf16_row = (("peftpipe, `train.mixed_precision: bf16`", c["pipeline_bf16"]),) if "pipeline_bf16" in c else ()
        rows_row = ((("peftpipe, 16-row batches at 1e-4 (before the recipe's batch_tokens)", c["pipeline_row_batches"]),)
                    if "pipeline_row_batches" in c else ())
        lines += train_rows((("transformers' run_ner.py, written the same way", c["example"]),
                             ("peftpipe (the recipe: `train.batch_tokens: 640`)", c["pipeline"]),
                             *bf16_row, *rows_row))
        lines += ["", ratio_line("run_ner.py", c["example"], c["pipeline"], c.get("test"))]
        if rows_row:
            lines.append(ratio_line("16-row batches", c["pipeline_row_batches"], c["pipeline"], c.get("test_row_batches")))
        if bf16_row:
            lines.append(ratio_line("run_ner.py", c["example"], c["pipeline_bf16"], c.get("test_bf16"), "bf16"))
        lines.append("")
    overhead = result.get("overhead") or {}
    if overhead:
        lines += [f"- no-op `dvc repro`: {overhead['noop_repro_s']:.2f} s; a one-stage project's on this machine "
                  f"(DVC's own start-up): {overhead['noop_repro_one_stage_s']:.2f} s",
                  f"- `dvc exp run --temp -S lora.r=8 -S train.max_steps=30`: {overhead['exp_r8_30_steps_s']:.0f} s, "
                  f"ran {', '.join(overhead['exp_r8_stages_run'])}"]
    rates = result.get("stage_rates") or {}
    if rates:
        lines += [f"- tokenize: {rates['tokenize_rows_per_s']:.0f} rows/s; baseline: "
                  f"{rates['baseline_examples_per_s']:.0f} examples/s; evaluate: {rates['evaluate_examples_per_s']:.0f} "
                  "examples/s",
                  f"- export, ms per example (batched / one at a time): adapter "
                  f"{rates['adapter_ms_per_example_batched']:.2f} / {rates['adapter_ms_per_example_single']:.2f}, "
                  f"merged {rates['merged_ms_per_example_batched']:.2f} / {rates['merged_ms_per_example_single']:.2f}"]
    inference = result.get("inference") or {}
    if inference:
        rows = inference["rows"]
        evaluate_rate = rows["pytorch adapter (evaluate)"]["examples_per_s"]
        served_ms = rows["pytorch merged"]["ms_per_text_single"]
        lines += ["", f"Inference on the test split ({inference['examples']} examples; {inference['repeats']} alternating "
                      f"repeats, median [min, max]; one at a time: {inference['single_texts']} texts through the "
                      "serving pipeline):", "",
                  f"Batched, one pass over the split is {inference['forward_flops'] / 1e9:.0f} GFLOP (products "
                  f"only); MFU is against the float32 2048 x 2048 peak measured around these runs "
                  f"({inference['float32_matmul_peak_flops'] / 1e9:.0f} GFLOP/s; for int8, the float32 work it "
                  "stands in for).", "",
                  f"A file: `peftpipe predict` over the same {inference['single_texts']} texts as one input, "
                  f"{inference['file_batch_size']} at a time by length (int8 one at a time), against predict's former "
                  "one at a time in PyTorch.", "",
                  "| backend | examples/s batched | x evaluate's | MFU batched | ms per text, one at a time | x predict's | "
                  "texts/s, a file | x predict's | agreement with PyTorch | max logit diff | test F1 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            spread = f"[{min(r['examples_per_s_all']):.0f}, {max(r['examples_per_s_all']):.0f}]"
            single = (f"{r['ms_per_text_single']:.2f} [{min(r['ms_per_text_single_all']):.2f}, "
                      f"{max(r['ms_per_text_single_all']):.2f}] | {served_ms / r['ms_per_text_single']:.2f}x"
                      if r["ms_per_text_single"] else "- | -")
            rate = r.get("file_texts_per_s")
            single += (f" | {rate:.0f} [{min(r['file_texts_per_s_all']):.0f}, {max(r['file_texts_per_s_all']):.0f}] | "
                       f"{rate * served_ms / 1000:.2f}x" if rate else " | - | -")
            lines.append(f"| {name} | {r['examples_per_s']:.0f} {spread} | {r['examples_per_s'] / evaluate_rate:.2f}x | "
                         f"{r['mfu']:.1%} | {single} | {r['prediction_agreement']:.4f} | {r['max_abs_logit_diff']:.1e} | {r['f1']:.4f} |")
    scaling = result.get("scaling") or []
    if scaling:
        base = scaling[0]
        lines += ["", "| scaling run (1 epoch) | train rows x | max_length | real tokens | padded tokens | "
                      "seconds | s per 1k real tokens |", "|---|---|---|---|---|---|---|"]
        for r in scaling:
            lines.append(f"| {r['label']} | {r['fraction'] / base['fraction']:g} | {r['max_length']} | "
                         f"{r['real_tokens']} | {r['padded_tokens']} | {r['seconds']:.1f} | "
                         f"{1000 * r['seconds'] / r['real_tokens']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true", help="no side-by-side runs (with --skip-scaling: overhead only)")
    parser.add_argument("--scaling", action="store_true", help="also the scaling runs (5 more, ~6 minutes)")
    parser.add_argument("--skip-conll", action="store_true", help="no conll-ner-cpu vs run_ner.py runs")
    parser.add_argument("--conll-fraction", type=float, default=0.1,
                        help="share of CoNLL's train (and validation) split per run; 1 is the recipe's full epoch")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()

    import torch

    from peftpipe.training import NATIVE_BF16_FLAGS, cpu_flags

    # bf16 rows only where bf16 runs in hardware: emulated, one 2048 x 2048 bf16 product takes
    # seconds (an AVX2-only CPU spent minutes on the peak alone) and says nothing about the pipeline.
    native_bf16 = torch.cuda.is_available() or bool((cpu_flags() or set()) & set(NATIVE_BF16_FLAGS))
    precisions = ("float32", "bfloat16") if native_bf16 else ("float32",)
    bf16 = {"pipeline_bf16": ["--style", "pipeline", "--mixed-precision", "bf16"]} if native_bf16 else {}
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "epochs": args.epochs,
              "repeats": args.repeats, "native_bf16": native_bf16,
              "machine": f"{platform.machine()} {cpu_model()}, {torch.get_num_threads()} torch threads, "
                         f"torch {torch.__version__}, "
                         f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}, "
                         f"{'bf16 in hardware' if native_bf16 else 'no bf16 in hardware: bf16 rows skipped'}"}
    for precision in precisions:
        result[f"{precision}_matmul_peak_flops"] = matmul_peak(dtype=precision)
        result[f"{precision}_shape_peak_flops"] = shape_peak(dtype=precision)
        log(f"{precision} matmul peak {result[f'{precision}_matmul_peak_flops'] / 1e9:.1f} GFLOP/s, at the model's "
            f"shapes {result[f'{precision}_shape_peak_flops'] / 1e9:.1f}")

    runs = {}
    if not args.skip_training:
        runs = side_by_side("default", {"tutorial": ["--style", "tutorial"], "pipeline": ["--style", "pipeline"], **bf16},
                            args.repeats, ["--epochs", str(args.epochs)])
        # One diagnostic run: the pipeline with random batches, as the tutorial draws them.
        runs.update(side_by_side("default", {"pipeline_random_batches": ["--style", "pipeline", "--random-batches"],
                                             "pipeline_token_batches": DEFAULT_TOKEN_BATCHES},
                                 1, ["--epochs", str(args.epochs)]))
        for name, group in runs.items():
            result[name] = summarize(group)
        result["default_test"] = paired(runs["tutorial"], runs["pipeline"])
        if native_bf16:
            result["default_test_bf16"] = paired(runs["tutorial"], runs["pipeline_bf16"])

    if not args.skip_conll:
        if not Path("../shared/corpora/conll2003").is_dir():
            log("conll-ner-cpu: ../shared/corpora/conll2003 is not here; skipped")
        else:
            fraction = str(args.conll_fraction)
            conll = side_by_side("conll-ner-cpu", {"example": ["--style", "example"], "pipeline": ["--style", "pipeline"],
                                                   **bf16, "pipeline_row_batches": CONLL_ROW_BATCHES},
                                 args.repeats, ["--recipe", "conll-ner-cpu", "--epochs", "1", "--fraction", fraction,
                                                "--validation-fraction", fraction])
            result["conll"] = {"fraction": args.conll_fraction, "repeats": args.repeats,
                               **{name: summarize(group) for name, group in conll.items()},
                               "test": paired(conll["example"], conll["pipeline"]),
                               "test_row_batches": paired(conll["pipeline_row_batches"], conll["pipeline"]),
                               **({"test_bf16": paired(conll["example"], conll["pipeline_bf16"])} if native_bf16 else {})}
            runs["conll"] = conll
    for side in runs.values():  # the predictions served the paired tests; the record keeps the numbers
        for group in (side.values() if isinstance(side, dict) else [side]):
            for run in group:
                run.pop("test_rows", None)
                run.pop("test_meaning", None)
    result["runs"] = runs

    if args.scaling:
        result["scaling"] = []
        for label, fraction, max_length in (("x1", 0.25, None), ("x2", 0.5, None), ("x4", 1.0, None),
                                            ("x1, max_length 64", 0.25, 64), ("x1, max_length 256", 0.25, 256)):
            extra = ["--max-length", str(max_length)] if max_length else []
            run = python_json("train_run.py", "--style", "pipeline", "--epochs", "1", "--fraction", str(fraction),
                              *extra)
            run["label"] = label
            log(f"scaling {label}: {run['seconds']:.1f} s, {run['real_tokens']} real tokens")
            result["scaling"].append(run)

    if not args.skip_inference:
        result["inference"] = python_json("inference.py", "--repeats", str(args.repeats))
        log("inference: " + ", ".join(f"{name} {r['examples_per_s']:.0f}/s"
                                      for name, r in result["inference"]["rows"].items()))
    # The peaks again after the timed runs: a shared machine drifts (the README reports both).
    for precision in precisions:
        result[f"{precision}_matmul_peak_flops_after"] = matmul_peak(dtype=precision)
        result[f"{precision}_shape_peak_flops_after"] = shape_peak(dtype=precision)
    if not args.skip_overhead:
        result["stage_rates"] = python_json("stage_rates.py")
        result["overhead"] = pipeline_overhead()

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(result, indent=2))
    text = table(result)
    (RESULTS / f"{stamp}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
