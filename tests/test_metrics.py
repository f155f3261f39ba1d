"""Request metrics kept in plain Python must read exactly like prometheus-client's own metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serve.metrics import UNRESOLVED, Metrics
from serve.tallies import LATENCY_BUCKETS, REQUEST_SECONDS, REQUESTS

# Every bucket edge exactly (le is inclusive), values between, beyond the last bound, and two statuses.
OBSERVATIONS = [(200, bound) for bound in LATENCY_BUCKETS] + [(200, 0.00003), (200, 0.0007), (200, 42.0),
                                                               (400, 0.002), (503, 0.0)]  # fmt: skip


def request_lines(exposition: bytes) -> list[str]:
    """The request counter's and latency histogram's samples, without prometheus-client's _created ones."""
    names = (REQUESTS[0], REQUEST_SECONDS[0])
    return sorted(
        line for line in exposition.decode().splitlines() if line.startswith(names) and "_created" not in line
    )


def test_request_tallies_expose_what_prometheus_client_would() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    requests = Counter(*REQUESTS, ("model", "version", "protocol", "status"), registry=reference)
    latency = Histogram(*REQUEST_SECONDS, ("model", "version", "protocol"), buckets=LATENCY_BUCKETS, registry=reference)
    for labels, record in ((("penguins", "1", "rest"), metrics.for_model("penguins", 1).requests["rest"]),
                           (("penguins", "1", "grpc"), metrics.for_model("penguins", 1).requests["grpc"]),
                           ((*UNRESOLVED, "rest"), metrics.requests_for(UNRESOLVED, "rest"))):  # fmt: skip
        for status, seconds in OBSERVATIONS:
            record(status, seconds)
            requests.labels(*labels, str(status)).inc()
            latency.labels(*labels).observe(seconds)
    expected = request_lines(generate_latest(reference))
    assert len(expected) == 3 * (3 + len(LATENCY_BUCKETS) + 3)  # per label set: 3 statuses, buckets + Inf, count, sum
    assert request_lines(metrics.exposition()) == expected


def test_batch_tallies_expose_what_prometheus_client_would() -> None:
    from prometheus_client import Gauge

    from serve.reports import BatchRecord
    from serve.tallies import BATCH_ROWS, INFERENCE_SECONDS, QUEUE_DEPTH, QUEUE_WAIT, ROW_BUCKETS

    metrics = Metrics()
    reference = CollectorRegistry()
    labels = ("model", "version")
    wait = Counter(*QUEUE_WAIT, labels, registry=reference)
    rows = Histogram(*BATCH_ROWS, labels, buckets=ROW_BUCKETS, registry=reference)
    seconds = Histogram(*INFERENCE_SECONDS, labels, buckets=LATENCY_BUCKETS, registry=reference)
    depth = Gauge(*QUEUE_DEPTH, labels, registry=reference)
    # Every bucket edge exactly (le is inclusive), between them and beyond the last, for two versions.
    batches = [(count, int(bound * 1e9)) for count, bound in zip(ROW_BUCKETS, LATENCY_BUCKETS, strict=False)]
    batches += [(3, 70_000), (20_000, 42_000_000_000), (1, 0)]
    for version in (1, 2):
        observe = metrics.for_model("penguins", version)
        for index, (count, infer_ns) in enumerate(batches):
            observe.batch(BatchRecord(1, count, "success", index * 1000, 10, infer_ns, 10, index))
            rows.labels("penguins", str(version)).observe(count)
            seconds.labels("penguins", str(version)).observe(infer_ns / 1e9)
            wait.labels("penguins", str(version)).inc(index * 1000 / 1e9)
        observe.queue_depth(7)
        depth.labels("penguins", str(version)).set(7)
    names = (QUEUE_WAIT[0], BATCH_ROWS[0], INFERENCE_SECONDS[0], QUEUE_DEPTH[0])

    def lines(exposition: bytes) -> list[str]:
        return sorted(line for line in exposition.decode().splitlines()
                      if line.startswith(names) and "_created" not in line)  # fmt: skip

    expected = lines(generate_latest(reference))
    assert len(expected) == 2 * (
        1 + (len(ROW_BUCKETS) + 3) + (len(LATENCY_BUCKETS) + 3) + 1
    )  # buckets, +Inf, count, sum
    assert lines(metrics.exposition()) == expected


def test_several_workers_tallies_add_up_and_a_stopped_workers_queue_depth_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Three workers' requests and batches in one scrape: this process's live tallies (its own published
    file not added again), a running worker's file, and the file of one that has exited, whose counts stay
    but whose queue depth goes. Files that are not this version's snapshots are skipped, with a warning."""
    from prometheus_client import Gauge

    from serve.reports import BatchRecord
    from serve.shared_tallies import identity
    from serve.tallies import BATCH_ROWS, INFERENCE_SECONDS, QUEUE_DEPTH, QUEUE_WAIT, ROW_BUCKETS

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reference = CollectorRegistry()
    labels = ("model", "version")
    requests = Counter(*REQUESTS, (*labels, "protocol", "status"), registry=reference)
    latency = Histogram(*REQUEST_SECONDS, (*labels, "protocol"), buckets=LATENCY_BUCKETS, registry=reference)
    rows = Histogram(*BATCH_ROWS, labels, buckets=ROW_BUCKETS, registry=reference)
    seconds = Histogram(*INFERENCE_SECONDS, labels, buckets=LATENCY_BUCKETS, registry=reference)
    wait = Counter(*QUEUE_WAIT, labels, registry=reference)
    depth = Gauge(*QUEUE_DEPTH, labels, registry=reference)
    latency.labels("penguins", "1", "grpc")  # bound for every protocol when the version loads: zeros
    exited = max(int(path.name) for path in Path("/proc").iterdir() if path.name.isdigit()) + 1_000_000
    # Whose file, named as its worker would name it -> its queue depth. The last one is this process.
    workers = {f"{exited}-1": 5, identity(os.getppid()): 3, f"{os.getpid()}-1": 7, identity(os.getpid()): 2}
    for worker, (name, queued) in enumerate(workers.items()):
        metrics = Metrics()
        observe = metrics.for_model("penguins", 1)
        for status, latency_s in OBSERVATIONS[worker::4]:
            observe.requests["rest"](status, latency_s)
            requests.labels("penguins", "1", "rest", str(status)).inc()
            latency.labels("penguins", "1", "rest").observe(latency_s)
        for count, bound in zip(ROW_BUCKETS[worker::4], LATENCY_BUCKETS[worker::4], strict=False):
            observe.batch(BatchRecord(1, count, "success", count * 1000, 10, int(bound * 1e9), 10, queued))
            rows.labels("penguins", "1").observe(count)
            seconds.labels("penguins", "1").observe(bound)
            wait.labels("penguins", "1").inc(count * 1000 / 1e9)
        metrics.publish()
        if name != identity(os.getpid()):  # another worker's: the pid before this process's (exited)
            (tmp_path / f"tallies-{identity(os.getpid())}.json").rename(tmp_path / f"tallies-{name}.json")
    depth.labels("penguins", "1").set(3 + 2)
    (tmp_path / "tallies-1-1.json").write_text('{"requests": [[["penguins", "1", "rest"], {"buckets": [1]}]]}')
    (tmp_path / "tallies-2-1.json").write_text("not json")
    names = (REQUESTS[0], REQUEST_SECONDS[0], BATCH_ROWS[0], INFERENCE_SECONDS[0], QUEUE_WAIT[0], QUEUE_DEPTH[0])

    def lines(exposition: bytes) -> list[str]:
        """The samples, with sums rounded: the workers' sums are added in another order than one process's."""
        samples = (line.rsplit(" ", 1) for line in exposition.decode().splitlines()
                   if line.startswith(names) and "_created" not in line)  # fmt: skip
        return sorted(f"{key} {round(float(value), 9) if '_sum{' in key or '_total{' in key else value}"
                      for key, value in samples)  # fmt: skip

    expected = lines(generate_latest(reference))
    assert 'tabserve_queue_depth{model="penguins",version="1"} 5.0' in expected
    assert lines(metrics.exposition()) == expected
    assert lines(metrics.exposition()) == expected, "scraped again: nothing added twice"
    assert sum("not a tally snapshot" in record.message for record in caplog.records) == 2, "each bad file once"
