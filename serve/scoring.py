"""Scoring a parsed request: from the response cache when it holds the answer, else in its model's next batch.

The one path every front end takes after parsing. It knows nothing of transports: a front end says how
it hears that its client has left, so that a queued request whose answer nobody will read never runs.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from serve.cache import MAX_CACHED_ROWS, ResponseCache, canonical_key
from serve.columns import Inputs, Outputs
from serve.errors import ClientDisconnectedError
from serve.repository import ModelEntry

OnLeave = Callable[[Callable[[], object]], None]
"""Registers a callback to run if the client leaves before its answer is complete."""


class Scorer:
    def __init__(self, request_timeout_s: float, cache: ResponseCache | None) -> None:
        self.request_timeout_s = request_timeout_s
        self.cache = cache

    def admit(self, entry: ModelEntry) -> None:
        """Refuse now, before the body is read and parsed, a request `score` would refuse anyway.

        Under overload most requests meet a full queue: refusing them unparsed took the p95 of a 503 at
        128 connections against a 16-request queue from 52-53 to 42-45 ms here (tests/test_overload.py's
        load). The queue cannot drain between here and `score` unless the request waits for its body,
        so a request is refused here only if it would have been there; the one difference is that an
        invalid body then gets the 503 and not its 400. With a response cache nothing is refused early:
        the answer may be cached."""
        if self.cache is None:
            entry.batcher.admit()

    def score(
        self, entry: ModelEntry, feed: Inputs, rows: int, timeout_s: float | None, on_leave: OnLeave | None
    ) -> asyncio.Future[Outputs]:
        """The request's future outputs, due by the earlier of `timeout_s` and the server's request timeout.

        A plain function handing back a future, not a coroutine: each coroutine layer on the hot path
        costs a suspension and a resumption per request.
        """
        cache = self.cache
        if cache is None or rows > MAX_CACHED_ROWS:
            return self._submit(entry, feed, rows, timeout_s, on_leave)
        started = time.perf_counter_ns()
        key = canonical_key(entry.model.identity, entry.model.signature, feed)
        found = cache.get(key)
        entry.metrics.parent.cache.labels("hit" if found is not None else "miss").inc()
        lookup = entry.statistics.cache_hit if found is not None else entry.statistics.cache_miss
        lookup.add(time.perf_counter_ns() - started)
        if found is not None:
            if entry.quality is not None:  # every row a caller sends counts, cached or not
                entry.quality.record(feed, found, rows)
            answered: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
            answered.set_result(found)
            return answered
        future = self._submit(entry, feed, rows, timeout_s, on_leave)
        future.add_done_callback(functools.partial(_keep, cache, key, rows))
        return future

    def _submit(
        self, entry: ModelEntry, feed: Inputs, rows: int, timeout_s: float | None, on_leave: OnLeave | None
    ) -> asyncio.Future[Outputs]:
        budget = self.request_timeout_s if timeout_s is None else min(timeout_s, self.request_timeout_s)
        deadline = asyncio.get_running_loop().time() + budget
        future = entry.batcher.submit(feed, rows, deadline, entry.model.signature)  # it enforces the deadline
        if on_leave is not None:  # without one (another HTTP server), an abandoned request still runs
            on_leave(functools.partial(_abandon, future))
        return future


def _abandon(future: asyncio.Future[Outputs]) -> None:
    """The client left: the batcher skips a request that is done, so it never runs."""
    if not future.done():
        future.set_exception(ClientDisconnectedError("the client closed the connection before its request ran"))


def _keep(cache: ResponseCache, key: bytes, rows: int, future: asyncio.Future[Outputs]) -> None:
    if not future.cancelled() and future.exception() is None:
        cache.put(key, future.result(), rows)
