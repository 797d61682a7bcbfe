"""Progress for long loops: a tqdm bar (rate, ETA) on a terminal, plain lines in CI logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, every_seconds: float = 15.0) -> Iterator[T]:
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=desc)
        return
    started = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= every_seconds or done == total:
            rate = done / max(now - started, 1e-9)
            print(f"{desc}: {done}/{total} ({rate:.1f}/s, ETA {(total - done) / rate:.0f} s)",
                  file=sys.stderr, flush=True)
            last = now
