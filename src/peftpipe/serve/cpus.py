"""How many CPUs this process really has: the cores it may run on (affinity: taskset,
cpusets) and its cgroup's CPU quota (a container's `--cpus`), whichever is fewer.

A server that starts as many compute threads as the machine has cores, in a process that
may use fewer, makes the threads wait on each other: on a shared 2-core machine torch with
2 intra-op threads answered 7.6 texts/s, with 1 thread 60."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota in CPUs (cgroup v2 cpu.max, or v1 cfs_quota/period), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu/cpu.cfs_quota_us").read_text())
        period = int((root / "cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its affinity, capped by its cgroup quota (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_quota(root)
    return max(1, min(cores, math.floor(quota)) if quota is not None else cores)


def use_threads(threads: int) -> None:
    """Compute threads for torch and ONNX Runtime in this process (set before models load)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["PEFTPIPE_ORT_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # set once per process: already set
        torch.set_num_interop_threads(1)  # the model runs in one worker thread: no inter-op parallelism to use
