"""Load on `peftpipe serve` against its peers, side by side in one run.

All serve the default's export (models/export, after `dvc repro`) on loopback ports:
- peftpipe: `peftpipe serve` (queued requests run in batches of similar length);
- naive: the same endpoint written the usual way (bench/naive_server.py: the transformers
  pipeline called once per request in FastAPI's thread pool, no batching);
- litserve: the same pipeline batched by LitServe (bench/litserve_server.py: max_batch_size
  32, batch_timeout 5 ms; pip install -e ".[bench]").
For each level of concurrent clients (each sends one test text per request, the next as
soon as the answer comes), for --seconds each: requests/s, texts/s, p50/p99 latency, errors.
--busy N measures every server again with N CPU-bound processes on the same cores (started
and stopped here: a server rarely has an idle machine). --limits first measures what the
model can do offline on the same texts: the Predictor in batches of 32, and the model's
forward alone with its tokenizer in batches of 32 sorted by token count, for the backend served.
Then a soak at --soak-clients for --soak-seconds: the server's RSS at its start and end.
Clients are one aiohttp session in this process (0.2 ms of CPU a request: the servers get
the cores); --serve-args passes more options to `peftpipe serve` ("--workers 2 --threads 1").
Each server runs in its own process group, stopped with every process it started.
Loopback only, bounded in count and time, stops by itself.

    python bench/serve_load.py                      # 1, 8, 32, 64 clients x 30 s, 5 min soak
    python bench/serve_load.py --clients 32 --seconds 20 --soak-seconds 0 --busy 2 --limits \
        --servers peftpipe naive litserve
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from peftpipe.serve.app import wait_until_up

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "models/export"
MAX_REQUESTS = 1_000_000  # a bound on any one level, whatever its time


def test_texts() -> list[str]:
    import pandas as pd

    frame = pd.read_parquet(ROOT / "data/split/test.parquet")
    return [" ".join(tokens) for tokens in frame["tokens"]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(kind: str, port: int, backend: str = "auto", serve_args: str = "") -> subprocess.Popen:
    if kind.startswith("peftpipe"):
        args = [str(Path(sys.executable).parent / "peftpipe"), "serve", "--model", f"default={EXPORT}",
                "--port", str(port), "--backend", backend, "--log-level", "warning", *shlex.split(serve_args)]
    else:
        args = [sys.executable, str(ROOT / f"bench/{kind}_server.py"), str(EXPORT), str(port)]
    # Its own process group: stopping it stops the worker processes it started too (LitServe's
    # inference workers outlived their server and spun on, taking a core from the next runs).
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        # peftpipe opens its port before the models load: /ready says when they have.
        wait_until_up(f"http://127.0.0.1:{port}/{'ready' if kind.startswith('peftpipe') else 'health'}", process)
    except RuntimeError as err:
        raise SystemExit(f"{kind}: {err}") from None
    return process


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def level(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` concurrent clients on one aiohttp session for ``seconds``: requests/s,
    p50/p99 latency, errors. (aiohttp, not httpx: httpx spent 3.3 ms of CPU a request, a
    third of a core at 100 requests/s, taken from the server on the same cores.)"""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    counter = 0

    async def client(index: int, http: aiohttp.ClientSession) -> None:
        nonlocal errors, counter
        i = index
        while time.perf_counter() < stop and counter < MAX_REQUESTS:
            counter += 1
            started = time.perf_counter()
            try:
                async with http.post(url, json={"texts": [texts[i % len(texts)]]}) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
                    else:
                        latencies.append(time.perf_counter() - started)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                errors += 1
            i += clients

    connector = aiohttp.TCPConnector(limit=clients)
    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    elapsed = time.perf_counter() - began
    return summary(clients, latencies, errors, elapsed)


def summary(clients: int, latencies: list[float], errors: int, elapsed: float) -> dict:
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "requests_per_s": round(len(latencies) / elapsed, 2), "texts_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1)}


LIMITS = """
import json, sys, time
sys.path.insert(0, {src!r})
from peftpipe.serving import Predictor
texts, backend = json.loads(sys.stdin.read()), {backend!r}
predictor = Predictor({export!r}, backend)
def rate(run):
    run(texts[:64])  # warm-up
    started = time.perf_counter(); run(texts); return len(texts) / (time.perf_counter() - started)
import torch
pipe = predictor.classify
model, tokenizer = pipe.model, pipe.tokenizer
def forward(batch_texts):
    # Sorted by token count, as the Predictor batches (by characters, a tweet's URLs and emoji
    # padded batches: 164 texts/s against 215 by tokens).
    counts = [len(ids) for ids in tokenizer(batch_texts, truncation=True)["input_ids"]]
    order = [batch_texts[i] for i in sorted(range(len(batch_texts)), key=counts.__getitem__)]
    with torch.inference_mode():
        for i in range(0, len(order), 32):
            model(**tokenizer(order[i:i + 32], padding=True, truncation=True, return_tensors="pt"))
print(json.dumps({{"predictor_texts_per_s": round(rate(lambda t: predictor(t, 32)), 1),
                   "forward_texts_per_s": round(rate(forward), 1)}}))
"""


def limits(texts: list[str], backend: str) -> dict:
    """What the model can do offline on these texts, in a fresh process (same threads as a server)."""
    script = LIMITS.format(src=str(ROOT / "src"), backend=backend, export=str(EXPORT))
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True,
                          timeout=900)
    if done.returncode:
        raise SystemExit(f"limits: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def busy(processes: int):
    """``processes`` CPU-bound processes on this machine's cores while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3600\n"
                                  "while time.time() < end: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def measure(kind: str, texts: list[str], args, results: dict, mode: str, first_round: bool) -> None:
    port = free_port()
    server = start(kind, port, args.backend, results["servers"][kind])
    url = f"http://127.0.0.1:{port}/v1/predict"
    try:
        asyncio.run(level(url, texts, 4, 2))  # warm-up
        rows = results["levels"].setdefault(mode, {}).setdefault(kind, {})
        for clients in args.clients:
            found = asyncio.run(level(url, texts, clients, args.seconds))
            rows.setdefault(str(clients), []).append(found)
            print(mode, kind, json.dumps(found), flush=True)
        if kind == "peftpipe" and mode == "idle" and args.soak_seconds and first_round:
            before = rss_mib(server.pid)
            soak = asyncio.run(level(url, texts, args.soak_clients, args.soak_seconds))
            results["soak"] = {**soak, "rss_start_mib": round(before, 1), "rss_end_mib": round(rss_mib(server.pid), 1)}
            print("soak", json.dumps(results["soak"]), flush=True)
    finally:
        stop(server)


def variants(args) -> dict[str, str]:
    """Each server to measure, with the options a peftpipe variant adds: `peftpipe` (its
    defaults plus --serve-args), `peftpipe-w2=--workers 2`, `naive`, `litserve`."""
    found = {}
    for given in args.servers:
        name, _, extra = given.partition("=")
        if name not in ("naive", "litserve") and not name.startswith("peftpipe"):
            raise SystemExit(f"--servers {given}: peftpipe[-LABEL[=OPTIONS]], naive or litserve")
        found[name] = extra if extra or name != "peftpipe" else args.serve_args
    return found


def stop(server: subprocess.Popen) -> None:
    """The server and every process it started: TERM, then KILL after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # workers left behind by a server that has exited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--soak-clients", type=int, default=32)
    parser.add_argument("--soak-seconds", type=float, default=300)
    parser.add_argument("--servers", nargs="+", default=["peftpipe", "naive"],
                        help="peftpipe, naive, litserve, and variants: 'peftpipe-w2=--workers 2'")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every server this many times, taking turns (the table shows medians)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"], help="what peftpipe serve runs")
    parser.add_argument("--serve-args", default="", help="more options for peftpipe serve, e.g. '--workers 2'")
    parser.add_argument("--busy", type=int, default=0, help="also measure with this many CPU-bound processes beside")
    parser.add_argument("--limits", action="store_true", help="first measure the Predictor and the forward offline")
    args = parser.parse_args()
    texts = test_texts()
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "command": " ".join(sys.argv), "levels": {}, "soak": {}}
    if args.limits:
        results["limits"] = limits(texts, args.backend)
        print("limits", json.dumps(results["limits"]), flush=True)
    results["servers"] = variants(args)
    for mode in ["idle", *(["busy"] if args.busy else [])]:
        with busy(args.busy if mode == "busy" else 0):
            for round_ in range(args.rounds):  # taking turns: a slow spell of the machine hits every server
                for kind in results["servers"]:
                    measure(kind, texts, args, results, mode, round_ == 0)
    print(table(results))
    out = ROOT / "bench/results" / f"serve-load-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out.relative_to(ROOT)}")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores"


def table(results: dict) -> str:
    """Per mode and client count: each server's requests/s (median over rounds, with the
    range), p50/p99 and errors of its median round, and each peftpipe server's ratio to each
    peer (the median of the rounds' ratios) and to the forward-only limit, when measured."""
    lines = []
    forward = (results.get("limits") or {}).get("forward_texts_per_s")
    if results.get("limits"):
        lines.append(f"limits (offline, same texts, batches of 32): Predictor "
                     f"{results['limits']['predictor_texts_per_s']} texts/s, forward only {forward} texts/s")
    for mode, servers in results["levels"].items():
        ours = [kind for kind in servers if kind.startswith("peftpipe")]
        peers = [kind for kind in servers if kind not in ours]
        for clients in next(iter(servers.values())):
            lines.append(f"{mode}, {clients} clients:")
            for kind in servers:
                rounds = servers[kind][clients]
                rates = [row["requests_per_s"] for row in rounds]
                middle = sorted(rounds, key=lambda row: row["requests_per_s"])[len(rounds) // 2]
                cell = (f"  {kind:<14} {statistics.median(rates):7.1f} req/s"
                        f"{f' ({min(rates):.1f}-{max(rates):.1f})' if len(rates) > 1 else ''}"
                        f"  p50 {middle['p50_ms']} ms  p99 {middle['p99_ms']} ms  errors {sum(r['errors'] for r in rounds)}")
                if kind in ours:
                    ratios = [f"{statistics.median(a['requests_per_s'] / b['requests_per_s'] for a, b in zip(rounds, servers[peer][clients]) if b['requests_per_s']):.2f}x {peer}"
                              for peer in peers]
                    if forward:
                        ratios.append(f"{statistics.median(rates) / forward:.0%} of forward")
                    cell += "  | " + ", ".join(ratios)
                lines.append(cell)
    soak = results.get("soak")
    if soak:
        growth = (soak["rss_end_mib"] - soak["rss_start_mib"]) / soak["rss_start_mib"]
        lines.append(f"soak: {soak['clients']} clients, {soak['requests']} requests, {soak['errors']} errors, "
                     f"RSS {soak['rss_start_mib']} -> {soak['rss_end_mib']} MiB ({growth:+.1%})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
