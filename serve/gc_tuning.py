"""The process-wide garbage-collector policy while serving: the one place tabserve touches `gc`."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def tuned_gc(young_threshold: int) -> Iterator[None]:
    """Freeze what is loaded so far and collect the young generation rarely; restore the thresholds after.

    Everything loaded before serving (sessions, models, the app) lives as long as the process: frozen out
    of the cyclic GC, full collections no longer rescan it (they stalled requests by ~17 ms, at p99).
    Requests in flight hold thousands of young containers (64 connections' feeds, futures and scopes);
    at Python's 700 the GC walked and promoted them every few requests. Raised, 64-connection one-row
    throughput rose 3.0 % and 8.6 % in two runs (medians of 6 and 10 interleaved 1-s pairs) and the bare
    endpoint's did not move (1.002x): the cost was the app's. Nearly everything here is freed by
    reference counting, so collections stay rare and garbage cycles bounded. The older generations'
    thresholds made no difference (1.007x, 1.013x).
    """
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(young_threshold, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)  # the process may go on (an embedding app, a test run)
