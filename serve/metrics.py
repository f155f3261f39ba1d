"""Prometheus metrics, named by Prometheus conventions (base units, _total counters, _seconds).

With several worker processes prometheus-client's multiprocess mode is used: PROMETHEUS_MULTIPROC_DIR
is set by `python -m serve` before the workers start, and a scrape sums every process's files.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from serve.batching import BatchRecord
from serve.drift import DriftMetrics, PsiCollector

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
UNRESOLVED = ("", "")
"""The labels of requests that named no loaded model: one bounded set, never the client's model name."""


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class RequestTally:
    """One model version's requests by status and their latency histogram, in plain Python.

    prometheus-client takes a lock per update: a counter and a histogram cost 1.3 us per request
    (measured), these three updates 0.3 us. `TallyCollector` turns them into metric families when
    /metrics is scraped. One process only: worker processes write through to prometheus-client's
    shared files instead, so that a scrape of any worker counts every request.
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


class SharedBatches:
    """Write-through batch metrics for worker processes (prometheus-client's multiprocess files)."""

    def __init__(self, families: tuple[Counter, Histogram, Histogram, Gauge], labels: tuple[str, str]) -> None:
        wait, rows, seconds, depth = families
        self._wait, self._rows = wait.labels(*labels), rows.labels(*labels)
        self._seconds, self._depth = seconds.labels(*labels), depth.labels(*labels)

    def batch(self, batch: BatchRecord) -> None:
        self._rows.observe(batch.rows)
        self._seconds.observe(batch.infer_ns / 1e9)
        self._wait.inc(batch.queue_ns / 1e9)
        self._depth.set(batch.queued)

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)


class SharedRequests:
    """Write-through request metrics for worker processes (prometheus-client's multiprocess files)."""

    def __init__(self, requests: Counter, request_seconds: Histogram, labels: tuple[str, ...]) -> None:
        self._requests = requests
        self._labels = labels
        self._by_status: dict[int, Counter] = {}  # children bound once: a label lookup costs ~1 us
        self._seconds = request_seconds.labels(*labels)

    def request(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._requests.labels(*self._labels, str(status))
        counter.inc()
        self._seconds.observe(seconds)


@dataclass
class ModelMetrics:
    """One model version's children, bound once so the hot path does no label lookups."""

    parent: Metrics
    labels: tuple[str, str]
    requests: dict[str, Callable[[int, float], None]]
    """Per protocol: count one answered request, its HTTP(-equivalent) status and seconds from arrival to answer."""
    batch: Callable[[BatchRecord], None]
    """Observe one run of the model (a retried batch ran too: its rows and time count)."""
    queue_depth: Callable[[int], None]
    """Set the requests waiting now (a scrape does, and every batch)."""


class Metrics:
    """Every tabserve metric, in its own registry (so several apps in one test process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if multiprocess() else self.registry
        self._tallies: dict[tuple[str, ...], RequestTally] = {}
        self._batch_tallies: dict[tuple[str, str], BatchTally] = {}
        self._shared: tuple[Counter, Histogram] | None = None
        self._shared_batches: tuple[Counter, Histogram, Histogram, Gauge] | None = None
        if registry is None:
            self._shared = (
                Counter(*REQUESTS, (*REQUEST_LABELS, "status"), registry=None),
                Histogram(*REQUEST_SECONDS, REQUEST_LABELS, buckets=LATENCY_BUCKETS, registry=None),
            )
            # Across worker processes queue depths add up.
            self._shared_batches = (
                Counter(*QUEUE_WAIT, LABELS, registry=None),
                Histogram(*BATCH_ROWS, LABELS, buckets=ROW_BUCKETS, registry=None),
                Histogram(*INFERENCE_SECONDS, LABELS, buckets=LATENCY_BUCKETS, registry=None),
                Gauge(*QUEUE_DEPTH, LABELS, registry=None, multiprocess_mode="livesum"),
            )
        else:
            self.registry.register(TallyCollector(self._tallies))
            self.registry.register(BatchCollector(self._batch_tallies))
        # A load time is the slowest process's.
        self.model_load_seconds = Gauge("tabserve_model_load_seconds", "Load, verify and warm-up time of a version.",
                                        LABELS, registry=registry, multiprocess_mode="max")  # fmt: skip
        self.rejected = Counter("tabserve_rejected_requests", "Requests refused before inference, by reason.",
                                ("reason",), registry=registry)  # fmt: skip
        self.cache = Counter(
            "tabserve_cache_lookups", "Response cache lookups by result.", ("result",), registry=registry
        )
        self.explain_requests = Counter("tabserve_explain_requests", "Explain requests answered, by model and status.",
                                        ("model", "status"), registry=registry)  # fmt: skip
        self.explanations = Counter("tabserve_explanations", "Explanations computed, by model and method.",
                                    ("model", "method"), registry=registry)  # fmt: skip
        self.explain_rows = Counter("tabserve_explain_rows_evaluated", "Model rows scored for explanations.",
                                    ("model",), registry=registry)  # fmt: skip
        self.explain_in_flight = Gauge("tabserve_explain_in_flight", "Explain requests being handled.",
                                       registry=registry, multiprocess_mode="livesum")  # fmt: skip
        self.explain_seconds = Histogram("tabserve_explain_duration_seconds", "Explain latency, arrival to answer.",
                                         ("model",), buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        self.drift = DriftMetrics(registry)
        self._monitors: Callable[[], dict[tuple[str, str], Any]] = dict
        if registry is not None:
            registry.register(PsiCollector(self._windows, lambda: self._monitors()))

    def watch_quality(self, monitors: Callable[[], dict[tuple[str, str], Any]]) -> None:
        """Where the PSI collector finds the loaded versions' monitors (the repository, once it exists)."""
        self._monitors = monitors

    def _windows(self) -> list[Metric]:
        return [*self.drift.window.collect(), *self.drift.prediction_window.collect()]

    def families(self) -> list[Metric]:
        """Every metric as a scrape would see it: this process's, or every worker's when there are several."""
        if multiprocess():
            registry = CollectorRegistry()
            return list(MultiProcessCollector(registry).collect())  # type: ignore[no-untyped-call]
        return list(self.registry.collect())

    def explained(self, model: str, method: str, rows: int) -> None:
        self.explanations.labels(model, method).inc()
        self.explain_rows.labels(model).inc(rows)

    def explain_answered(self, model: str, status: int, seconds: float) -> None:
        """Every explain request's answer; `model` is "" when the request named no loaded model."""
        self.explain_requests.labels(model, str(status)).inc()
        self.explain_seconds.labels(model).observe(seconds)

    def requests_for(self, labels: tuple[str, str], protocol: str) -> Callable[[int, float], None]:
        """Where requests with these (model, version) labels are counted: `UNRESOLVED` for no model."""
        key = (*labels, protocol)
        if self._shared is not None:
            return SharedRequests(*self._shared, key).request
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = RequestTally()
        return tally.request

    def for_model(self, name: str, version: int) -> ModelMetrics:
        labels = (name, str(version))
        requests = {protocol: self.requests_for(labels, protocol) for protocol in PROTOCOLS}
        batches: BatchTally | SharedBatches
        if self._shared_batches is not None:
            batches = SharedBatches(self._shared_batches, labels)
        else:
            batches = self._batch_tallies.setdefault(labels, BatchTally())
        return ModelMetrics(self, labels, requests, batches.batch, batches.queue_depth)

    def exposition(self) -> bytes:
        if multiprocess():
            registry = CollectorRegistry()
            files = MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(PsiCollector(lambda: list(files.collect()), lambda: self._monitors()))  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
