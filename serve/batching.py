"""Micro-batching: concurrent requests to one model version share onnxruntime calls.

One worker coroutine owns the queue. When idle it sleeps on a future that the next `submit` wakes, so
a lone request runs at once (Triton's dynamic batcher with zero delay); under load the next batch is
whatever queued while the previous one ran. A request from a lone client skips even the wake-up: it
runs in its caller's task (`_runs_alone` says when). Each item owns its future: one result per request,
rows in order, cancelled or expired items skipped. serve/execution.py runs a batch (a failing one is
retried item by item) and reports it to `on_batch`; the batcher keeps no counters of its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Callable
from concurrent.futures import Executor

from serve.columns import Feed, Inputs, Outputs, Signature, feed_signature
from serve.deadlines import EarliestDeadline
from serve.errors import INTERNAL_ERROR, DeadlineExceededError, ModelNotReadyError, ServeError, ServerBusyError
from serve.execution import Execution, Item, fail
from serve.reports import BatchRecord
from serve.waves import Waves

logger = logging.getLogger("tabserve.batching")


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
        self._max_batch_size = max_batch_size
        self._delay_s = max_batch_delay_ms / 1000.0
        self._adaptive_wait_s = adaptive_wait_ms / 1000.0
        self._max_queue_size = max_queue_size
        self._name = name
        self._execution = Execution(
            run,
            inline_batch_rows=inline_batch_rows if executor is not None else float("inf"),
            executor=executor,
            name=name,
            on_batch=on_batch,
            queued=lambda: len(self._queue),
        )
        self._queue: collections.deque[Item] = collections.deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._waves = Waves()
        self._gathered: asyncio.Future[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._company: int | None = None
        """Requests queued in this pass of the loop behind one that ran alone; None when none ran alone."""
        self._running: list[Item] = []
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
        now = loop.time()
        item = Item(feed, rows, signature, future, deadline, now)
        if self._runs_alone(item, now):
            self._run_alone(loop, item)
            return future
        if self._company is not None:
            self._company += 1
        self._queue.append(item)
        self._queued_rows += rows
        self._deadlines.watch(loop, deadline)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        elif self._gathered is not None and self._gathered_enough():
            _resolve(self._gathered)
        return future

    def _runs_alone(self, item: Item, now: float) -> bool:
        """Whether `item` runs now, in its caller's task, saving the worker's wake-up and a second task step:
        what a lone client pays for. Only when the worker is parked and nothing is queued or running, the recent
        batches had no company (Waves.size; under load requests wait to share a batch, as before), no
        request ran this way earlier in this pass of the loop (those arriving with it queue, and count as
        its company), no wait is configured, and the item is small enough to run inline and not yet late."""
        return (
            self._wakeup is not None
            and not self._queue  # the worker may be woken already: nobody may be overtaken
            and self._company is None
            and self._waves.size <= 1
            and item.rows <= self._execution.inline_batch_rows
            and not self._delay_s
            and item.deadline > now
        )

    def _run_alone(self, loop: asyncio.AbstractEventLoop, item: Item) -> None:
        self._company = 0
        loop.call_soon(self._pass_over, loop)
        self._running = [item]
        try:
            self._execution.execute_inline(self._running, item.rows)
        finally:
            self._running = []

    def _pass_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """The pass that ran a request alone is over: its wave was that request and the ones that queued
        behind it, so two clients in step (a wave of two) go back to sharing batches."""
        self._waves.batch_ended(1 + (self._company or 0), loop.time())
        self._company = None

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
        fail(self._queue, ModelNotReadyError(f"model {self._name} shut down before running"))
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
                    await self._execution.execute(batch)
                except Exception:
                    # The last guard, as every background loop here has: an escaped exception would end the
                    # worker with this batch unanswered, past its deadlines, and nobody running the queue.
                    logger.exception("model %s: running a batch of %d requests failed", self._name, len(batch))
                    fail(batch, ServeError(INTERNAL_ERROR.message))  # a fresh one: raising gives it a traceback
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

    def _take_batch(self, now: float) -> list[Item]:
        """Pop live items with the first one's signature, up to max_batch_size rows (a big one alone)."""
        batch: list[Item] = []
        rows = 0
        skipped: list[Item] = []
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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _late_message(item: Item, now: float, running: bool) -> str:
    waited_ms = (now - item.enqueued) * 1000
    where = "while its batch ran" if running else "in the queue, before running"
    return f"request passed its deadline {where}: no answer after {waited_ms:.0f} ms"
