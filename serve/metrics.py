"""Prometheus metrics, named by Prometheus conventions (base units, _total counters, _seconds).

With several worker processes prometheus-client's multiprocess mode is used: PROMETHEUS_MULTIPROC_DIR
is set by `python -m serve` before the workers start, and a scrape sums every process's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

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


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@dataclass
class ModelMetrics:
    """One model version's children, bound once so the hot path does no label lookups."""

    parent: Metrics
    labels: tuple[str, str]
    request_seconds: Any
    queue_wait_seconds: Any
    batch_rows: Any
    inference_seconds: Any
    requests_by_status: dict[int, Any] = field(default_factory=dict)

    def request(self, status: int, seconds: float) -> None:
        counter = self.requests_by_status.get(status)
        if counter is None:
            counter = self.requests_by_status[status] = self.parent.requests.labels(*self.labels, str(status))
        counter.inc()
        self.request_seconds.observe(seconds)

    def batch(self, rows: int, seconds: float, queue_wait_seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.inference_seconds.observe(seconds)
        self.queue_wait_seconds.inc(queue_wait_seconds)


class Metrics:
    """Every tabserve metric, in its own registry (so several apps in one test process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if multiprocess() else self.registry
        self.requests = Counter("tabserve_requests", "Inference requests by model, version and HTTP status.",
                                (*LABELS, "status"), registry=registry)  # fmt: skip
        self.request_seconds = Histogram("tabserve_request_duration_seconds", "Inference latency, arrival to answer.",
                                         LABELS, buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        # A sum, as Triton's nv_inference_queue_duration_us: per batch, not per request, since it is on the
        # hot path; divided by the request count it is the mean wait.
        self.queue_wait_seconds = Counter("tabserve_queue_wait_seconds", "Seconds requests waited for their batches.",
                                          LABELS, registry=registry)  # fmt: skip
        self.batch_rows = Histogram("tabserve_batch_rows", "Rows per onnxruntime call.", LABELS, buckets=ROW_BUCKETS,
                                    registry=registry)  # fmt: skip
        self.inference_seconds = Histogram("tabserve_inference_seconds", "onnxruntime time per batch.", LABELS,
                                           buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        # Across worker processes queue depths add up; a load time is the slowest process's.
        self.queue_depth = Gauge("tabserve_queue_depth", "Requests waiting per model version.", LABELS,
                                 registry=registry, multiprocess_mode="livesum")  # fmt: skip
        self.model_load_seconds = Gauge("tabserve_model_load_seconds", "Load, verify and warm-up time of a version.",
                                        LABELS, registry=registry, multiprocess_mode="max")  # fmt: skip
        self.rejected = Counter("tabserve_rejected_requests", "Requests refused before inference, by reason.",
                                ("reason",), registry=registry)  # fmt: skip
        self.cache = Counter(
            "tabserve_cache_lookups", "Response cache lookups by result.", ("result",), registry=registry
        )

    def for_model(self, name: str, version: int) -> ModelMetrics:
        labels = (name, str(version))
        return ModelMetrics(
            self,
            labels,
            self.request_seconds.labels(*labels),
            self.queue_wait_seconds.labels(*labels),
            self.batch_rows.labels(*labels),
            self.inference_seconds.labels(*labels),
        )

    def exposition(self) -> bytes:
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
