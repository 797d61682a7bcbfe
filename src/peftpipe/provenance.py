"""Where a metrics file came from: commit, dirty tree, seed, package versions, hardware.

Kept to four short values so `dvc metrics show` stays readable (every string becomes a
column there).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

from peftpipe.io import write_json

PACKAGES = ("torch", "transformers", "peft", "datasets", "dvc")


def _git() -> str:
    """Short commit, with '+dirty' when tracked files differ from it; 'none' outside git."""
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = run("rev-parse", "--short=12", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "none"
    return commit + ("+dirty" if dirty else "")


def _hardware() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {gpu}"


def provenance(seed: int | None) -> dict:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    seeded = {} if seed is None else {"seed": seed}
    return {"git": _git(), **seeded, "versions": ", ".join(versions), "hardware": _hardware()}


def write_metrics(path: str, metrics: dict, seed: int | None = None) -> None:
    """Write a metrics file with its provenance (and the seed, where the stage used one)."""
    write_json(path, {**metrics, "provenance": provenance(seed)})
