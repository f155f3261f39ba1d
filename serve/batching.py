"""Micro-batching: concurrent requests to one model version share onnxruntime calls.

One worker coroutine owns the queue. When idle it sleeps on a future that the next `submit` wakes, so
a lone request runs at once (Triton's dynamic batcher with zero delay); under load the next batch is
whatever queued while the previous one ran. Each item owns its future: one result per request, rows in
order, cancelled or expired items skipped, and a failing batch retried item by item so that only the
request that breaks the model fails. Every run is reported to `on_batch` as a BatchRecord (statistics
and metrics listen); the batcher keeps no counters of its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from serve.columns import Feed, Inputs, Outputs, Signature, assemble, feed_signature, split
from serve.deadlines import EarliestDeadline
from serve.errors import DeadlineExceededError, InferenceFailedError, ModelNotReadyError, ServeError, ServerBusyError
from serve.reports import BatchRecord, Outcome
from serve.waves import Waves

logger = logging.getLogger("tabserve.batching")


@dataclass(slots=True)
class _Item:
    feed: Inputs
    rows: int
    signature: Signature
    future: asyncio.Future[Outputs]
    deadline: float
    enqueued: float


class MicroBatcher:
    """Queue requests for one `run(feed) -> outputs` function and execute them in row-bounded batches."""

    def __init__(
        self,
        run: Callable[[Feed], Feed],
        *,
        max_batch_size: int = 64,
        max_batch_delay_ms: float = 0.0,
        adaptive_wait_ms: float = 0.0,
        max_queue_size: int = 1024,
        inline_batch_rows: int = 256,
        executor: Executor | None = None,
        name: str = "model",
        on_batch: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self._run = run
        self._max_batch_size = max_batch_size
        self._delay_s = max_batch_delay_ms / 1000.0
        self._adaptive_wait_s = adaptive_wait_ms / 1000.0
        self._max_queue_size = max_queue_size
        self._inline_batch_rows = inline_batch_rows if executor is not None else float("inf")
        self._executor = executor
        self._name = name
        self._on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._waves = Waves()
        self._gathered: asyncio.Future[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: list[_Item] = []
        """The batch being executed (a thread may be running it while the loop goes on)."""
        self._closing = False
        self._deadlines = EarliestDeadline(self._expire)

    async def __aenter__(self) -> MicroBatcher:
        self._worker = asyncio.create_task(self._work(), name=f"batcher:{self._name}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch that is running)."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return bool(self._running or self._queue)

    def submit(
        self, feed: Inputs, rows: int, deadline: float, signature: Signature | None = None
    ) -> asyncio.Future[Outputs]:
        """Queue one request; its future gets exactly its own rows of every output.

        `signature` (input names, dtypes, per-row shapes) decides who may share a batch and gives list
        columns their dtype; a caller that has validated the feed against a fixed layout passes it,
        otherwise it is computed here from the feed's arrays.
        """
        self.admit()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        if signature is None:
            signature = feed_signature(feed)
        self._queue.append(_Item(feed, rows, signature, future, deadline, loop.time()))
        self._queued_rows += rows
        self._deadlines.watch(loop, deadline)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        elif self._gathered is not None and self._gathered_enough():
            _resolve(self._gathered)
        return future

    def admit(self) -> None:
        """Raise what `submit` would refuse a request with now (a full queue, a closing batcher), so that a
        front end can refuse before it reads and parses a body it would throw away."""
        if self._closing:
            raise ModelNotReadyError(f"model {self._name} is shutting down and takes no new requests")
        if len(self._queue) >= self._max_queue_size:
            raise ServerBusyError(
                f"model {self._name} has {len(self._queue)} requests queued, the limit; retry shortly"
            )

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests, finish the queued ones (up to `timeout_s`), then stop the worker."""
        self._closing = True
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        while self.busy and loop.time() < give_up:
            await asyncio.sleep(0.005)
        self._deadlines.cancel()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(ModelNotReadyError(f"model {self._name} shut down before running"))
        self._queue.clear()
        self._queued_rows = 0

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
            if self._delay_s and self._queued_rows < self._max_batch_size:
                await asyncio.sleep(self._delay_s)
            elif self._adaptive_wait_s:
                await self._gather(loop)
            batch = self._take_batch(loop.time())
            if batch:
                self._running = batch
                try:
                    await self._execute(batch)
                finally:
                    self._running = []
                    self._waves.batch_ended(len(batch), loop.time())

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under sustained load, wait up to adaptive_wait_ms for a full batch or a whole wave (serve/waves.py).

        uvloop rounds timers to milliseconds, so the default 0.5 ms ends at the loop's next pass; the wave
        matters on the asyncio loop, which `workers > 1` uses, and for longer waits.
        """
        if not self._waves.sustained(loop.time()) or self._gathered_enough():
            return
        self._gathered = loop.create_future()
        timer = loop.call_later(self._adaptive_wait_s, _resolve, self._gathered)
        try:
            await self._gathered
        finally:
            timer.cancel()
            self._gathered = None

    def _gathered_enough(self) -> bool:
        return self._queued_rows >= self._max_batch_size or len(self._queue) >= self._waves.size

    def _expire(self, now: float) -> float:
        """Fail every request past its deadline, whether queued or running; return the next deadline.

        A running batch reaches here only when it runs in a thread; its results for expired requests
        are dropped. Queued ones stay in the queue, done, until `_take_batch` discards them.
        """
        earliest = math.inf
        for running, items in ((True, self._running), (False, self._queue)):
            for item in items:
                if item.future.done():
                    continue
                if item.deadline <= now:
                    item.future.set_exception(DeadlineExceededError(_late_message(item, now, running)))
                else:
                    earliest = min(earliest, item.deadline)
        return earliest

    def _take_batch(self, now: float) -> list[_Item]:
        """Pop live items with the first one's signature, up to max_batch_size rows (a big one alone)."""
        batch: list[_Item] = []
        rows = 0
        skipped: list[_Item] = []
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # its client left, or its deadline passed while it waited
                self._queued_rows -= self._queue.popleft().rows
                continue
            if item.deadline <= now:
                self._queued_rows -= self._queue.popleft().rows
                item.future.set_exception(DeadlineExceededError(_late_message(item, now, running=False)))
                continue
            if batch and (rows + item.rows > self._max_batch_size):
                break
            self._queued_rows -= self._queue.popleft().rows
            if batch and item.signature != batch[0].signature:
                skipped.append(item)  # different inputs or datatypes: the next batch
                continue
            batch.append(item)
            rows += item.rows
        self._queue.extendleft(reversed(skipped))
        self._queued_rows += sum(item.rows for item in skipped)
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        rows = sum(item.rows for item in batch)
        clock = time.perf_counter_ns
        started = assembled = clock()
        try:
            feed = assemble([item.feed for item in batch], batch[0].signature)
            assembled = clock()
            if rows <= self._inline_batch_rows:
                # A small batch takes tens of microseconds: a thread hand-off would cost more than it saves.
                outputs = self._run(feed)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, feed)
        except Exception as exc:
            if len(batch) > 1:
                self._report(batch, rows, "retried", assembled - started, clock() - assembled, 0)
                for item in batch:  # find the culprit: each request alone, neighbours unharmed
                    await self._execute([item])
                return
            self._report(batch, rows, "failure", assembled - started, clock() - assembled, 0)
            logger.warning("model %s failed on a %d-row request: %s", self._name, rows, exc)
            _fail(batch, InferenceFailedError(f"model {self._name} failed on this input: {exc}"))
            return
        ran = clock()
        try:
            parts = split(outputs, [item.rows for item in batch])
        except ValueError as exc:  # the model broke its own output contract: no input is to blame
            logger.error("model %s: %s", self._name, exc)
            _fail(batch, ServeError(f"model {self._name} returned malformed outputs: {exc}"))
            return
        self._report(batch, rows, "success", assembled - started, ran - assembled, clock() - ran)
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)

    def _report(self, batch: list[_Item], rows: int, outcome: Outcome, *ns: int) -> None:
        if self._on_batch is None:
            return
        input_ns, infer_ns, output_ns = ns
        queue_ns = 0
        if outcome != "retried":
            now = asyncio.get_running_loop().time()
            spent = input_ns + infer_ns + output_ns
            queue_ns = max(sum(int((now - item.enqueued) * 1e9) for item in batch) - spent * len(batch), 0)
        self._on_batch(
            BatchRecord(len(batch), rows, outcome, queue_ns, input_ns, infer_ns, output_ns, len(self._queue))
        )


def _fail(batch: list[_Item], exc: ServeError) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _late_message(item: _Item, now: float, running: bool) -> str:
    waited_ms = (now - item.enqueued) * 1000
    where = "while its batch ran" if running else "in the queue, before running"
    return f"request passed its deadline {where}: no answer after {waited_ms:.0f} ms"
