"""Running one batch of queued requests: assemble the inputs, score, cut the outputs back, report.

A small batch runs on the calling thread (a hand-off costs more than it saves); a large one in the
executor. A batch that fails is retried request by request, so only the request that breaks the model
fails. Every run is reported to `on_batch` as a BatchRecord (statistics and metrics listen).
serve/batching.py decides what runs when; this module knows nothing of queues or timing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass

from serve.columns import Feed, Inputs, Outputs, Signature, assemble, split
from serve.errors import InferenceFailedError, ServeError
from serve.reports import BatchRecord, Outcome

logger = logging.getLogger("tabserve.batching")  # the name it logged under before this module split off


@dataclass(slots=True)
class Item:
    """One queued request: its columns, and the future that gets exactly its rows of every output."""

    feed: Inputs
    rows: int
    signature: Signature
    future: asyncio.Future[Outputs]
    deadline: float
    enqueued: float


class Execution:
    """Runs batches of Items through `run(feed) -> outputs`."""

    def __init__(
        self,
        run: Callable[[Feed], Feed],
        *,
        inline_batch_rows: float,
        executor: Executor | None,
        name: str,
        on_batch: Callable[[BatchRecord], None] | None,
        queued: Callable[[], int],
    ) -> None:
        self._run = run
        self.inline_batch_rows = inline_batch_rows
        """Batches of at most this many rows run on the calling thread, without awaiting anything."""
        self._executor = executor
        self._name = name
        self._on_batch = on_batch
        self._queued = queued
        """How many requests wait behind the batch, for its BatchRecord."""
        self._reporting_failed = False

    async def execute(self, batch: list[Item]) -> None:
        rows = sum(item.rows for item in batch)
        if rows <= self.inline_batch_rows:
            self.execute_inline(batch, rows)
            return
        clock = time.perf_counter_ns
        started = assembled = clock()
        try:
            feed = assemble([item.feed for item in batch], batch[0].signature)
            assembled = clock()
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, feed)
        except Exception as exc:
            if self._failed(batch, rows, exc, assembled - started, clock() - assembled):
                for item in batch:
                    await self.execute([item])
            return
        self._deliver(batch, rows, outputs, assembled - started, clock() - assembled)

    def execute_inline(self, batch: list[Item], rows: int) -> None:
        """Run a small batch to the end on this thread: every item's future is settled on return."""
        clock = time.perf_counter_ns
        started = assembled = clock()
        try:
            feed = assemble([item.feed for item in batch], batch[0].signature)
            assembled = clock()
            outputs = self._run(feed)
        except Exception as exc:
            if self._failed(batch, rows, exc, assembled - started, clock() - assembled):
                for item in batch:
                    self.execute_inline([item], item.rows)
            return
        self._deliver(batch, rows, outputs, assembled - started, clock() - assembled)

    def _failed(self, batch: list[Item], rows: int, exc: Exception, input_ns: int, infer_ns: int) -> bool:
        """Report a failed run. True: retry its requests one by one to find the culprit, neighbours
        unharmed; False: it was one request, which fails."""
        if len(batch) > 1:
            self._report(batch, rows, "retried", input_ns, infer_ns, 0)
            return True
        self._report(batch, rows, "failure", input_ns, infer_ns, 0)
        logger.warning("model %s failed on a %d-row request: %s", self._name, rows, exc)
        fail(batch, InferenceFailedError(f"model {self._name} failed on this input: {exc}"))
        return False

    def _deliver(self, batch: list[Item], rows: int, outputs: Feed, input_ns: int, infer_ns: int) -> None:
        ran = time.perf_counter_ns()
        try:
            parts = split(outputs, [item.rows for item in batch])
        except ValueError as exc:  # the model broke its own output contract: no input is to blame
            logger.error("model %s: %s", self._name, exc)
            fail(batch, ServeError(f"model {self._name} returned malformed outputs: {exc}"))
            return
        self._report(batch, rows, "success", input_ns, infer_ns, time.perf_counter_ns() - ran)
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)

    def _report(self, batch: list[Item], rows: int, outcome: Outcome, *ns: int) -> None:
        if self._on_batch is None:
            return
        input_ns, infer_ns, output_ns = ns
        queue_ns = 0
        if outcome != "retried":
            now = asyncio.get_running_loop().time()
            spent = input_ns + infer_ns + output_ns
            queue_ns = max(sum(int((now - item.enqueued) * 1e9) for item in batch) - spent * len(batch), 0)
        record = BatchRecord(len(batch), rows, outcome, queue_ns, input_ns, infer_ns, output_ns, self._queued())
        try:
            self._on_batch(record)
        except Exception:
            # Statistics are not worth an answer (a raising reporter once left its batch unanswered, hung
            # past its deadlines). Said once: a broken reporter fails on every batch.
            if not self._reporting_failed:
                self._reporting_failed = True
                logger.exception("model %s: reporting a batch failed (answers are unaffected; not logged again)",
                                 self._name)  # fmt: skip


def fail(items: Iterable[Item], exc: ServeError) -> None:
    """Settle every item still waiting with `exc`."""
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
