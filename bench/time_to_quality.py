"""Time to equal quality, against the scripts users would otherwise run (MLPerf's measure).

    dvc repro && python bench/time_to_quality.py        # both pairs; about 20 minutes on 2 CPU cores
    python bench/time_to_quality.py --pairs default      # the default against the tutorial-style script only
    python bench/time_to_quality.py --peer-rates 5e-5 1e-4 2e-4   # run_ner.py at each rate (its best is the target)
    python bench/time_to_quality.py --pairs default --seeds 42 43 44  # median of three seeds

Each pair runs the peer first, to the end, as its users run it: its final model's
validation F1 is the target. Then the pipeline's own training code (bench/train_run.py
--style pipeline) trains with the recipe's params and stops at its first validation
evaluation at or above the target. Times are wall seconds from the first step to that
evaluation's end (evaluations included; loading and tokenizing excluded for both). Test F1 of
both final models is compared with the paired test `peftpipe compare` uses.

- default: the embedded default (LoRA NER, MiniLM, WNUT-16, 5 epochs) against the PEFT LoRA
  token-classification tutorial's script (train_run.py --style tutorial: random batches,
  evaluation and a checkpoint every epoch, load_best_model_at_end).
- conll: conll-ner-cpu (one epoch of CoNLL-2003) against transformers' run_ner.py as it runs
  (train_run.py --style example: its defaults but the recipe's model, epochs and batch; one
  evaluation after training) at each of --peer-rates; needs ../shared/corpora.

Rows go to stdout and bench/results/time-to-quality-<UTC time>.json (with every evaluation's
time and F1, so the curves can be drawn).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from run import cpu_model, log, paired, python_json

HERE = Path(__file__).resolve().parent
CORPORA = HERE.parent.parent / "shared" / "corpora"
PAIRS = {
    "default": {"peer": ["--style", "tutorial"], "ours": [], "peer_name": "tutorial-style script (5 epochs)"},
    "conll": {"peer": ["--style", "example", "--recipe", "conll-ner-cpu"], "ours": ["--recipe", "conll-ner-cpu"],
              "peer_name": "run_ner.py-style script"},
}


def run_pair(name: str, rates: list[float], evals_per_epoch: int, epochs: float | None, seed: int | None = None) -> dict:
    pair = PAIRS[name]
    cap = ["--epochs", str(epochs)] if epochs else (["--epochs", "1"] if name == "conll" else [])
    cap += ["--seed", str(seed)] if seed is not None else []  # both sides: the same seed
    peers = []
    for rate in (rates if name == "conll" else [None]):
        log(f"{name}: {pair['peer_name']}" + (f" at learning rate {rate:g}" if rate else ""))
        peers.append(python_json("train_run.py", *pair["peer"], *cap,
                                 *(["--learning-rate", str(rate)] if rate else [])))
    peer = max(peers, key=lambda run: run["validation_f1"])
    target = peer["validation_f1"]
    log(f"{name}: pipeline until validation F1 >= {target:.4f}")
    ours = python_json("train_run.py", "--style", "pipeline", *pair["ours"], *cap, "--target-f1", str(target),
                       "--evals-per-epoch", str(evals_per_epoch))
    reached = ours["reached"]
    test = paired([peer], [ours])
    for run in (*peers, ours):  # the predictions served the paired test
        run.pop("test_rows", None)
    return {"pair": name, "seed": seed, "peer_name": pair["peer_name"], "peers": peers, "peer": peer, "ours": ours,
            "target_f1": target, "peer_seconds": peer["seconds"],
            "ours_seconds": reached["seconds"] if reached else None,
            "ratio": peer["seconds"] / reached["seconds"] if reached else None,
            "ours_best_f1": max((p["f1"] for p in ours["evaluations"]), default=None), "test": test}


def row(result: dict) -> str:
    peer, ours, test = result["peer"], result["ours"], result["test"]
    rate = f" at lr {peer['learning_rate']:g}" if peer.get("learning_rate") else ""
    if result["ratio"] is None:
        reached = f"not reached in {ours['seconds']:.0f} s (best {result['ours_best_f1']:.4f})"
    else:
        reached = f"{result['ours_seconds']:.0f} s, step {ours['reached']['step']}: **{result['ratio']:.2f}x**"
    seed = f", seed {result['seed']}" if result.get("seed") is not None else ""
    return (f"| {result['pair']}{seed} | {result['peer_name']}{rate} | {peer['seconds']:.0f} s | {result['target_f1']:.4f} | "
            f"{reached} | {test['a']:.4f} vs {test['b']:.4f}, {test['b'] - test['a']:+.4f} "
            f"[{test['low']:+.4f}, {test['high']:+.4f}], p {test['p']:.2f} |")


def medians(results: list[dict]) -> list[str]:
    """Per pair run over several seeds: the median of its ratios (a run that never reached
    the target counts as 0x, below every reached one)."""
    lines = []
    for name in dict.fromkeys(result["pair"] for result in results):
        ratios = [result["ratio"] or 0.0 for result in results if result["pair"] == name]
        if len(ratios) > 1:
            shown = ", ".join(f"{ratio:.2f}x" if ratio else "not reached" for ratio in ratios)
            middle = statistics.median(ratios)
            lines.append(f"{name}: median {f'{middle:.2f}x' if middle else 'not reached'} over {len(ratios)} seeds ({shown})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="*", choices=sorted(PAIRS), default=sorted(PAIRS))
    parser.add_argument("--peer-rates", nargs="*", type=float, default=[2e-4],
                        help="run_ner.py's learning rates (its default is 5e-5; 2e-4 was its best measured)")
    parser.add_argument("--evals-per-epoch", type=int, default=1, help="the pipeline's validation evaluations an epoch")
    parser.add_argument("--epochs", type=float, default=None, help="both sides' epochs (default: the recipe's)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[],
                        help="run each pair once per seed (both sides); the summary gives the median ratio")
    args = parser.parse_args()
    if "conll" in args.pairs and not CORPORA.is_dir():
        log(f"conll: skipped, {CORPORA} is missing (the corpora come with the team's shared folder)")
        args.pairs = [name for name in args.pairs if name != "conll"]
    results = [run_pair(name, args.peer_rates, args.evals_per_epoch, args.epochs, seed)
               for name in args.pairs for seed in (args.seeds or [None])]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = " ".join(["python bench/time_to_quality.py", *sys.argv[1:]])
    lines = [f"Time to equal quality on {cpu_model()}, {stamp}: `{command}`", "",
             "| pair | peer | peer's time | target (peer's validation F1) | pipeline to the target | "
             "test F1 peer vs pipeline, difference [95% CI], p |", "|---|---|---|---|---|---|",
             *map(row, results), "", *medians(results)]
    print("\n".join(lines))
    out = HERE / "results" / f"time-to-quality-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"cpu": cpu_model(), "args": sys.argv[1:], "results": results}, indent=1))
    log(f"-> {out}")


if __name__ == "__main__":
    main()
