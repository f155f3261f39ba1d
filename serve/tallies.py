"""Metric names and buckets, and the metrics one process keeps as plain Python tallies.

prometheus-client takes a lock per update; in one process these tallies do the same counting for a
fraction of it and are turned into metric families only when /metrics is scraped (serve/metrics.py
registers their collectors). Worker processes keep them too and publish them to each other
(serve/shared_tallies.py).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from serve.reports import BatchRecord

# Sub-millisecond buckets: a batched single-row request takes ~0.1-1 ms here.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
LABELS = ("model", "version")
REQUEST_LABELS = (*LABELS, "protocol")
"""Requests are also told apart by the front end they came through."""
PROTOCOLS = ("rest", "grpc")
REQUESTS = ("tabserve_requests", "Inference requests by model, version, protocol and HTTP(-equivalent) status.")
REQUEST_SECONDS = ("tabserve_request_duration_seconds", "Inference latency, arrival to answer.")
# A sum, as Triton's nv_inference_queue_duration_us: per batch, not per request, since it is on the hot path;
# divided by the request count it is the mean wait.
QUEUE_WAIT = ("tabserve_queue_wait_seconds", "Seconds requests waited for their batches.")
BATCH_ROWS = ("tabserve_batch_rows", "Rows per onnxruntime call.")
INFERENCE_SECONDS = ("tabserve_inference_seconds", "onnxruntime time per batch.")
QUEUE_DEPTH = ("tabserve_queue_depth", "Requests waiting per model version.")
# Each bucket's "le" label exactly as prometheus-client's own histograms write it.
BUCKET_BOUNDS = tuple(floatToGoString(bound) for bound in (*LATENCY_BUCKETS, math.inf))  # type: ignore[no-untyped-call]
ROW_BOUNDS = tuple(floatToGoString(float(bound)) for bound in (*ROW_BUCKETS, math.inf))  # type: ignore[no-untyped-call]


class RequestTally:
    """One model version's requests by status and their latency histogram, in plain Python.

    prometheus-client takes a lock per update: a counter and a histogram cost 1.3 us per request
    (measured), these three updates 0.3 us. `TallyCollector` turns them into metric families when
    /metrics is scraped; with several workers, after adding up every worker's (serve/shared_tallies.py).
    """

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        """Observations per bucket, not cumulative; the last is +Inf."""
        self.total_seconds = 0.0

    def request(self, status: int, seconds: float) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        self.total_seconds += seconds

    def add(self, other: RequestTally) -> None:
        """Count another process's requests too (serve/shared_tallies.py)."""
        for status, count in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + count
        self.buckets = [mine + theirs for mine, theirs in zip(self.buckets, other.buckets, strict=True)]
        self.total_seconds += other.total_seconds


class TallyCollector:
    """Exposes request tallies under the names and labels prometheus-client's own metrics would have."""

    def __init__(self, tallies: dict[tuple[str, ...], RequestTally]) -> None:
        self.tallies = tallies

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        requests, latency = self._families()
        for labels, tally in list(self.tallies.items()):
            for status, count in sorted(tally.by_status.items()):
                requests.add_metric([*labels, str(status)], count)
            cumulative = itertools.accumulate(tally.buckets)
            latency.add_metric(list(labels), list(zip(BUCKET_BOUNDS, cumulative, strict=True)), tally.total_seconds)
        yield requests
        yield latency

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (CounterMetricFamily(*REQUESTS, labels=(*REQUEST_LABELS, "status")),
                HistogramMetricFamily(*REQUEST_SECONDS, labels=REQUEST_LABELS))  # fmt: skip


class BatchTally:
    """One model version's batch metrics in plain Python, as RequestTally is for requests.

    Through prometheus-client, one batch's two histograms, counter and gauge cost 8.3 us (measured on
    this project's machine): at one connection every request is a batch, and that was ~3 % of it.
    """

    def __init__(self) -> None:
        self.rows = [0] * (len(ROW_BUCKETS) + 1)
        self.rows_sum = 0
        self.seconds = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds_sum = 0.0
        self.queue_wait_s = 0.0
        self.depth = 0

    def batch(self, batch: BatchRecord) -> None:
        """Observe one run of the model (a retried batch ran too: its rows and time count)."""
        self.rows[bisect.bisect_left(ROW_BUCKETS, batch.rows)] += 1  # le: the first bound >= the value
        self.rows_sum += batch.rows
        seconds = batch.infer_ns / 1e9
        self.seconds[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds_sum += seconds
        self.queue_wait_s += batch.queue_ns / 1e9
        self.depth = batch.queued

    def queue_depth(self, depth: int) -> None:
        self.depth = depth

    def add(self, other: BatchTally, live: bool) -> None:
        """Count another process's batches too; its queue depth only if it is still running."""
        self.rows = [mine + theirs for mine, theirs in zip(self.rows, other.rows, strict=True)]
        self.seconds = [mine + theirs for mine, theirs in zip(self.seconds, other.seconds, strict=True)]
        self.rows_sum += other.rows_sum
        self.seconds_sum += other.seconds_sum
        self.queue_wait_s += other.queue_wait_s
        self.depth += other.depth if live else 0


class BatchCollector:
    """Exposes batch tallies under the names and labels prometheus-client's own metrics would have."""

    def __init__(self, tallies: dict[tuple[str, str], BatchTally]) -> None:
        self.tallies = tallies

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        wait, rows, seconds, depth = self._families()
        for labels, tally in list(self.tallies.items()):
            wait.add_metric(list(labels), tally.queue_wait_s)
            rows.add_metric(list(labels), list(zip(ROW_BOUNDS, itertools.accumulate(tally.rows), strict=True)),
                            tally.rows_sum)  # fmt: skip
            seconds.add_metric(list(labels), list(zip(BUCKET_BOUNDS, itertools.accumulate(tally.seconds), strict=True)),
                               tally.seconds_sum)  # fmt: skip
            depth.add_metric(list(labels), tally.depth)
        yield from (wait, rows, seconds, depth)

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily, GaugeMetricFamily]:
        return (CounterMetricFamily(*QUEUE_WAIT, labels=LABELS), HistogramMetricFamily(*BATCH_ROWS, labels=LABELS),
                HistogramMetricFamily(*INFERENCE_SECONDS, labels=LABELS),
                GaugeMetricFamily(*QUEUE_DEPTH, labels=LABELS))  # fmt: skip
