"""peftpipe benchmark: the pipeline against a tutorial-style script, on this machine, in
one run. Writes bench/results/<timestamp>.json and .md and prints the table.

    python bench/run.py                 # about 15-20 minutes on 2 CPU cores
    python bench/run.py --epochs 1 --repeats 1 --skip-scaling   # a quick look

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
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def python_json(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: {script} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 FLOP/s of an n x n matmul with torch's default threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def shape_peak(rows: int = 600, hidden: int = 384, repeats: int = 20) -> float:
    """Best float32 FLOP/s of the default model's own products: a batch of ~600 token rows
    through a hidden x hidden projection and the hidden x 4 hidden feed-forward layer (what
    the large-matmul peak overstates for a small model)."""
    import torch

    x = torch.randn(rows, hidden)
    weights = [torch.randn(hidden, hidden), torch.randn(hidden, 4 * hidden)]
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


def timed(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def pipeline_overhead() -> dict:
    status = subprocess.run(["dvc", "status", "--quiet"], capture_output=True)
    if status.returncode != 0:
        log("dvc status: the pipeline is not up to date; run `dvc repro` first to time a no-op repro")
        return {}
    noop = min(timed(["dvc", "repro"])[0] for _ in range(3))
    log(f"no-op dvc repro {noop:.2f} s; now dvc exp run --temp -S lora.r=8 (30 steps)")
    seconds, output = timed(["dvc", "exp", "run", "--temp", "-n", "bench-r8", "-S", "lora.r=8",
                             "-S", "train.max_steps=30"])
    ran = [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
    subprocess.run(["dvc", "exp", "remove", "bench-r8"], capture_output=True)
    return {"noop_repro_s": noop, "exp_r8_30_steps_s": seconds, "exp_r8_stages_run": ran}


def summarize(runs: list[dict]) -> dict:
    """Totals over repeats: throughput = all tokens / all seconds."""
    seconds = sum(r["seconds"] for r in runs)
    return {
        "seconds_per_run": seconds / len(runs),
        "real_tokens_per_s": sum(r["real_tokens"] for r in runs) / seconds,
        "padded_tokens_per_s": sum(r["padded_tokens"] for r in runs) / seconds,
        "padding_share": 1 - sum(r["real_tokens"] for r in runs) / sum(r["padded_tokens"] for r in runs),
        "validation_f1": [round(r["validation_f1"], 4) for r in runs],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "flops_per_s": sum(r["flops"] for r in runs) / seconds,
    }


def table(result: dict) -> str:
    peak = result["matmul_peak_flops"]
    lines = [f"Machine: {result['machine']}; float32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048 x 2048); "
             f"at the default model's shapes (600 x 384 @ 384 x 384 and 384 x 1536) "
             f"{result['shape_peak_flops'] / 1e9:.1f} GFLOP/s", ""]
    if "pipeline" in result:
        t, p = result["tutorial"], result["pipeline"]
        lines += [
            f"{result['epochs']:g} epochs x {result['repeats']} alternating runs each:", "",
            "| train stage | wall s / run | real tokens/s | padding | val F1 | peak RSS MiB | MFU | MFU at the model's shapes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = (("tutorial-style script", t), ("peftpipe", p),
                ("peftpipe, random batches (diagnostic)", result["pipeline_random_batches"]))
        for name, r in rows:
            lines.append(f"| {name} | {r['seconds_per_run']:.1f} | {r['real_tokens_per_s']:.0f} | "
                         f"{r['padding_share']:.1%} | {', '.join(map(str, r['validation_f1']))} | "
                         f"{r['peak_rss_mib']:.0f} | {r['flops_per_s'] / peak:.1%} | "
                         f"{r['flops_per_s'] / result['shape_peak_flops']:.1%} |")
        lines += ["", f"**Throughput ratio (real tokens/s, peftpipe / tutorial): "
                      f"{p['real_tokens_per_s'] / t['real_tokens_per_s']:.2f}x**", ""]
    overhead = result.get("overhead") or {}
    if overhead:
        lines += [f"- no-op `dvc repro`: {overhead['noop_repro_s']:.2f} s",
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
                  "| backend | examples/s batched | x evaluate's | ms per text, one at a time | x predict's | "
                  "agreement with PyTorch | max logit diff | test F1 |", "|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            spread = f"[{min(r['examples_per_s_all']):.0f}, {max(r['examples_per_s_all']):.0f}]"
            single = (f"{r['ms_per_text_single']:.2f} [{min(r['ms_per_text_single_all']):.2f}, "
                      f"{max(r['ms_per_text_single_all']):.2f}] | {served_ms / r['ms_per_text_single']:.2f}x"
                      if r["ms_per_text_single"] else "- | -")
            lines.append(f"| {name} | {r['examples_per_s']:.0f} {spread} | {r['examples_per_s'] / evaluate_rate:.2f}x | "
                         f"{single} | {r['prediction_agreement']:.4f} | {r['max_abs_logit_diff']:.1e} | {r['f1']:.4f} |")
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
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true", help="no side-by-side runs (with --skip-scaling: overhead only)")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()

    import torch

    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "epochs": args.epochs,
              "repeats": args.repeats,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
                         f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"}
    result["matmul_peak_flops"], result["shape_peak_flops"] = matmul_peak(), shape_peak()
    log(f"matmul peak {result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s, at the model's shapes "
        f"{result['shape_peak_flops'] / 1e9:.1f}")

    runs = {"tutorial": [], "pipeline": []}
    for i in range(0 if args.skip_training else args.repeats):
        for style in ("tutorial", "pipeline"):  # alternating, so drift hits both alike
            run = python_json("train_run.py", "--style", style, "--epochs", str(args.epochs))
            log(f"{style} run {i + 1}: {run['seconds']:.1f} s, {run['real_tokens'] / run['seconds']:.0f} "
                f"real tokens/s, val F1 {run['validation_f1']:.4f}, peak {run['peak_rss_mib']:.0f} MiB")
            runs[style].append(run)
    if not args.skip_training:
        # One diagnostic run: the pipeline with random batches, as the tutorial draws them.
        run = python_json("train_run.py", "--style", "pipeline", "--epochs", str(args.epochs), "--random-batches")
        log(f"pipeline, random batches: {run['seconds']:.1f} s, val F1 {run['validation_f1']:.4f}")
        runs["pipeline_random_batches"] = [run]
    result["runs"] = runs
    if not args.skip_training:
        result["tutorial"], result["pipeline"] = summarize(runs["tutorial"]), summarize(runs["pipeline"])
        result["pipeline_random_batches"] = summarize(runs["pipeline_random_batches"])

    if not args.skip_scaling:
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
        result["inference"] = python_json("inference.py", "--repeats", str(max(3, args.repeats)))
        log("inference: " + ", ".join(f"{name} {r['examples_per_s']:.0f}/s"
                                      for name, r in result["inference"]["rows"].items()))
    # The peaks again after the timed runs: a shared machine drifts (the README reports both).
    result["matmul_peak_flops_after"], result["shape_peak_flops_after"] = matmul_peak(), shape_peak()
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
