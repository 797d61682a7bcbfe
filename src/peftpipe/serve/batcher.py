"""Requests to one model, run together in batches, each answer routed back to its request.

A batch holds at most ``max_batch`` texts (a request that does not fit waits for the next
one) and waits at most ``max_wait_ms`` after its first request for more. Up to ``parallel``
batches run at once (each in its own thread of the executor): a batch is formed when one
may start, from whatever queued while the others ran. A batch that
fails is run again request by request, so one request's bad input fails that request only.
Work whose request is gone (its client disconnected, its deadline passed) is dropped before
it runs. At most ``max_queue`` texts wait: past that, ``submit`` refuses at once (429).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


class Overloaded(Exception):
    """More texts wait for this model than --max-queue allows."""


@dataclass
class _Waiting:
    texts: list
    future: asyncio.Future


class Batcher:
    """Requests to one model, run together: up to ``max_batch`` texts per model call,
    waiting at most ``max_wait_ms`` after the first for more to arrive."""

    def __init__(self, predictor, max_batch: int = 32, max_wait_ms: float = 0.0, executor=None,
                 max_queue: int = 1 << 30, on_batch: Callable[[int], None] | None = None, parallel: int = 1):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait_ms / 1000
        self.parallel = parallel
        self.executor = executor or ThreadPoolExecutor(parallel, thread_name_prefix="peftpipe-model")
        self.running: set[asyncio.Task] = set()
        self.max_queue, self.on_batch = max_queue, on_batch
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self.queued = 0  # texts waiting, not yet in a batch
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in [self.task, *self.running]:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def full(self) -> bool:
        return self.queued >= self.max_queue

    async def submit(self, texts: list) -> list:
        if self.queued + len(texts) > self.max_queue:
            raise Overloaded(f"{self.queued} texts are waiting for this model; the queue holds {self.max_queue} "
                             f"(limit --max-queue)")
        waiting = _Waiting(texts, asyncio.get_running_loop().create_future())
        self.queued += len(texts)
        await self.queue.put(waiting)
        return await waiting.future  # cancelled with the caller: the batch then leaves it out

    async def _take(self, timeout: float | None = None) -> _Waiting:
        waiting = await (self.queue.get() if timeout is None else asyncio.wait_for(self.queue.get(), timeout))
        self.queued -= len(waiting.texts)
        return waiting

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        held: _Waiting | None = None  # a request that did not fit the last batch goes first in the next
        slots = asyncio.Semaphore(self.parallel)
        while True:
            await slots.acquire()  # a batch forms when it can run: what queued meanwhile joins it
            batch = [held if held is not None else await self._take()]
            held, size = None, len(batch[0].texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                # What queued while the last batch ran joins at once; then wait up to max_wait.
                if self.queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        waiting = await self._take(left)
                    except TimeoutError:
                        break
                else:
                    waiting = await self._take()
                if size + len(waiting.texts) > self.max_batch:  # never over max_batch texts in one call
                    held = waiting
                    break
                batch.append(waiting)
                size += len(waiting.texts)
            batch = [waiting for waiting in batch if not waiting.future.done()]  # gone: dropped unrun
            if not batch:
                slots.release()
                continue
            running = loop.create_task(self._answer(loop, batch))
            self.running.add(running)
            running.add_done_callback(lambda done: (self.running.discard(done), slots.release()))

    async def _answer(self, loop, batch: list[_Waiting]) -> None:
        """Run ``batch`` in one model call; if that fails, each request again alone, so one
        request's bad input fails that request only."""
        texts = [text for waiting in batch for text in waiting.texts]
        if self.on_batch:
            self.on_batch(len(texts))
        try:
            answers = await loop.run_in_executor(self.executor, self.predictor, texts)
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0], error=err)
            else:
                for waiting in batch:
                    await self._answer(loop, [waiting])
            return
        start = 0
        for waiting in batch:
            _settle(waiting, answers[start:start + len(waiting.texts)])
            start += len(waiting.texts)


def _settle(waiting: _Waiting, answers: list | None = None, error: Exception | None = None) -> None:
    """Give a request its answers or its error (unless its client is gone)."""
    if waiting.future.done():
        return
    if error is not None:
        waiting.future.set_exception(error)
    else:
        waiting.future.set_result(answers)
