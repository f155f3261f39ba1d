"""Prometheus metrics, named by Prometheus conventions (base units, _total counters, _seconds).

Requests and batches are counted in plain Python tallies (serve/tallies.py). With several worker
processes PROMETHEUS_MULTIPROC_DIR is set by `python -m serve` before the workers start: each worker
publishes its tallies there (serve/shared_tallies.py), the other metrics go through prometheus-client's
multiprocess mode, and a scrape adds up every process's files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from serve.drift import DriftMetrics, PsiCollector
from serve.reports import BatchRecord
from serve.shared_tallies import SharedTallies
from serve.tallies import (
    LABELS,
    LATENCY_BUCKETS,
    PROTOCOLS,
    BatchCollector,
    BatchTally,
    RequestTally,
    TallyCollector,
)

UNRESOLVED = ("", "")
"""The labels of requests that named no loaded model: one bounded set, never the client's model name."""


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


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
        # Requests and batches: plain tallies in every mode; several workers publish theirs to each other.
        self.shared = SharedTallies(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]), self._tallies,
                                    self._batch_tallies) if multiprocess() else None  # fmt: skip
        if registry is not None:
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
        if self.shared is None:
            return list(self.registry.collect())
        requests, batches = self.shared.merged()
        tallied = [*TallyCollector(requests).collect(), *BatchCollector(batches).collect()]
        names = {family.name for family in tallied}
        # A directory reused from a version that wrote these families through prometheus-client would
        # expose them twice; the tallies are the only source of them now.
        files = [family for family in MultiProcessCollector(None).collect() if family.name not in names]  # type: ignore[no-untyped-call]
        return [*files, *tallied]

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
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = RequestTally()
        return tally.request

    def for_model(self, name: str, version: int) -> ModelMetrics:
        labels = (name, str(version))
        requests = {protocol: self.requests_for(labels, protocol) for protocol in PROTOCOLS}
        batches = self._batch_tallies.setdefault(labels, BatchTally())
        return ModelMetrics(self, labels, requests, batches.batch, batches.queue_depth)

    def exposition(self) -> bytes:
        if self.shared is None:
            return bytes(generate_latest(self.registry))
        families = self.families()
        registry = CollectorRegistry()
        registry.register(_Families(families))
        registry.register(PsiCollector(lambda: families, lambda: self._monitors()))
        return bytes(generate_latest(registry))

    def publish(self) -> None:
        """With several workers, write this one's request and batch tallies for the others' scrapes."""
        if self.shared is not None:
            self.shared.publish()


class _Families:
    """Metric families already collected, as a collector a registry can expose."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
