"""Prometheus metrics, named by Prometheus conventions (base units, _total counters, _seconds).

With several worker processes prometheus-client's multiprocess mode is used: PROMETHEUS_MULTIPROC_DIR
is set by `python -m serve` before the workers start, and a scrape sums every process's files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from serve.drift import DriftMetrics, PsiCollector
from serve.reports import BatchRecord
from serve.tallies import (
    BATCH_ROWS,
    INFERENCE_SECONDS,
    LABELS,
    LATENCY_BUCKETS,
    PROTOCOLS,
    QUEUE_DEPTH,
    QUEUE_WAIT,
    REQUEST_LABELS,
    REQUEST_SECONDS,
    REQUESTS,
    ROW_BUCKETS,
    BatchCollector,
    BatchTally,
    RequestTally,
    TallyCollector,
)

UNRESOLVED = ("", "")
"""The labels of requests that named no loaded model: one bounded set, never the client's model name."""


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


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
