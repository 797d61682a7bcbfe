"""Load on `peftpipe serve` against the naive server, side by side in one run.

Both serve the default's export (models/export, after `dvc repro`) on loopback ports:
- peftpipe: `peftpipe serve` (queued requests run in batches of similar length);
- naive: the same endpoint written the usual way (bench/naive_server.py: the transformers
  pipeline called once per request in FastAPI's thread pool, no batching).
For each level of concurrent clients (each sends one test text per request, the next as
soon as the answer comes), for --seconds each: requests/s, texts/s, p50/p99 latency, errors.
Then a soak at --soak-clients for --soak-seconds: the server's RSS at its start and end.
Loopback only, bounded in count and time, stops by itself.

    python bench/serve_load.py                      # 1, 8, 32, 64 clients x 30 s, 5 min soak
    python bench/serve_load.py --seconds 5 --soak-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

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


def start(kind: str, port: int) -> subprocess.Popen:
    if kind == "peftpipe":
        args = [str(Path(sys.executable).parent / "peftpipe"), "serve", "--model", f"default={EXPORT}",
                "--port", str(port)]
    else:
        args = [sys.executable, str(ROOT / "bench/naive_server.py"), str(EXPORT), str(port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
    except RuntimeError as err:
        raise SystemExit(f"{kind}: {err}") from None
    return process


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def level(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    counter = 0

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal errors, counter
        i = index
        while time.perf_counter() < stop and counter < MAX_REQUESTS:
            counter += 1
            started = time.perf_counter()
            try:
                answer = await http.post(url, json={"texts": [texts[i % len(texts)]]}, timeout=60)
                if answer.status_code != 200:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - started)
            except httpx.HTTPError:
                errors += 1
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    began = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "requests_per_s": round(len(latencies) / elapsed, 2), "texts_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--soak-clients", type=int, default=32)
    parser.add_argument("--soak-seconds", type=float, default=300)
    parser.add_argument("--servers", nargs="+", default=["peftpipe", "naive"], choices=["peftpipe", "naive"])
    args = parser.parse_args()
    texts = test_texts()
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "command": " ".join(sys.argv), "levels": {}, "soak": {}}
    for kind in args.servers:
        port = free_port()
        server = start(kind, port)
        url = f"http://127.0.0.1:{port}/v1/predict"
        try:
            asyncio.run(level(url, texts, 4, 2))  # warm-up
            results["levels"][kind] = []
            for clients in args.clients:
                found = asyncio.run(level(url, texts, clients, args.seconds))
                results["levels"][kind].append(found)
                print(kind, json.dumps(found), flush=True)
            if kind == "peftpipe" and args.soak_seconds:
                before = rss_mib(server.pid)
                soak = asyncio.run(level(url, texts, args.soak_clients, args.soak_seconds))
                results["soak"] = {**soak, "rss_start_mib": round(before, 1), "rss_end_mib": round(rss_mib(server.pid), 1)}
                print("soak", json.dumps(results["soak"]), flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    if len(results["levels"]) == 2:
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
    lines = [f"{'clients':>7} | {'peftpipe req/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} | "
             f"{'naive req/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} | ratio"]
    for ours, naive in zip(results["levels"]["peftpipe"], results["levels"]["naive"]):
        ratio = ours["requests_per_s"] / naive["requests_per_s"] if naive["requests_per_s"] else float("nan")
        lines.append(f"{ours['clients']:>7} | {ours['requests_per_s']:>14} {ours['p50_ms']:>8} {ours['p99_ms']:>8} "
                     f"{ours['errors']:>4} | {naive['requests_per_s']:>11} {naive['p50_ms']:>8} {naive['p99_ms']:>8} "
                     f"{naive['errors']:>4} | {ratio:.2f}x")
    soak = results.get("soak")
    if soak:
        growth = (soak["rss_end_mib"] - soak["rss_start_mib"]) / soak["rss_start_mib"]
        lines.append(f"soak: {soak['clients']} clients, {soak['requests']} requests, {soak['errors']} errors, "
                     f"RSS {soak['rss_start_mib']} -> {soak['rss_end_mib']} MiB ({growth:+.1%})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
