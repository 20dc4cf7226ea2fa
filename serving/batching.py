"""Adaptive batching inside the service process.

Requests that arrive while the model is busy are predicted together in the next call, up to
`max_batch_rows` rows. At low load a request is predicted at once (no batching window to wait
out); a batch that `inline` says is cheap (a few rows through the compiled path) is predicted on
the event loop itself, sparing the hand-off to the prediction thread. Under load the batch grows
with the queue, so the per-call cost of the model is shared and throughput rises instead of
requests being refused. A request is answered 503 only when it has waited longer than `timeout`
or the queue holds more than `max_queued_rows` rows: a real overload, not a mis-tuned latency
target.

BentoML's own batching (`batchable=True`) merges requests in a dispatcher that answers
503 "process is overloaded" once its latency estimate exceeds `max_latency_ms`, and it
hands the API one merged list, losing each request's id and model version. Predictions
run on one dedicated thread, so the event loop keeps accepting and parsing requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Overloaded(RuntimeError):
    """The request could not be served in time; the client should retry later."""


@dataclass
class Job:
    """One request's rows, waiting for a prediction."""

    rows: Sequence[Any]
    request_id: str
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest_batch_rows: int = 0
    rejected: int = 0


class MicroBatcher:
    """Queue requests; one worker predicts whatever has accumulated, batch after batch.

    `handle(jobs)` runs on the prediction thread and returns one result per job, in order:
    a value, or an exception instance to raise in that job's request only.
    """

    def __init__(
        self,
        handle: Callable[[list[Job]], list[Any]],
        *,
        max_batch_rows: int,
        timeout: float,
        max_queued_rows: int,
        thread_setup: Callable[[], object] | None = None,
        inline: Callable[[list[Job]], bool] | None = None,
    ) -> None:
        self.handle = handle
        self.inline = inline
        self.max_batch_rows = max_batch_rows
        self.timeout = timeout
        self.max_queued_rows = max_queued_rows
        self.stats = BatchStats()
        self._queue: deque[Job] = deque()
        self._queued_rows = 0
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict", initializer=thread_setup)

    async def submit(self, rows: Sequence[Any], request_id: str) -> Any:
        if self._queued_rows + len(rows) > self.max_queued_rows:
            self.stats.rejected += 1
            raise Overloaded(f"{self._queued_rows} rows are already waiting; retry later")
        loop = asyncio.get_running_loop()
        job = Job(rows, request_id, loop.create_future())
        self._queue.append(job)
        self._queued_rows += len(rows)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        return await job.future

    def _next_batch(self) -> list[Job]:
        batch: list[Job] = []
        rows = 0
        now = time.monotonic()
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.max_batch_rows):
            job = self._queue.popleft()
            self._queued_rows -= len(job.rows)
            if job.future.done():  # the client went away
                continue
            if now - job.enqueued > self.timeout:
                self.stats.rejected += 1
                job.future.set_exception(Overloaded(f"waited over {self.timeout:g} s for the model; retry later"))
                continue
            batch.append(job)
            rows += len(job.rows)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            self._count(batch)
            try:
                if self.inline is not None and self.inline(batch):
                    results = self.handle(batch)
                else:
                    results = await loop.run_in_executor(self._executor, self.handle, batch)
            except Exception as exc:  # noqa: BLE001 - delivered to every request of the batch
                results = [exc] * len(batch)
            for job, result in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _count(self, batch: list[Job]) -> None:
        size = sum(len(job.rows) for job in batch)
        self.stats.batches += 1
        self.stats.rows += size
        self.stats.largest_batch_rows = max(self.stats.largest_batch_rows, size)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
