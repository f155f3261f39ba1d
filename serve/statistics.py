"""Per model version statistics in Triton's vocabulary: GET /v2/models/{m}/stats, get_inference_statistics.

Fed by the batcher's BatchRecords and by response-cache lookups; written and read on the event loop only.
"""

from __future__ import annotations

import time
from typing import Any

from serve.reports import BatchRecord

MAX_TRACKED_BATCH_SIZES = 256
"""Triton reports per batch size; a client sending every size up to the row limit must not grow this
without bound, so sizes past this many distinct ones are folded into the largest."""


class Duration:
    """A count and its summed nanoseconds, as Triton's StatisticDuration."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class BatchSize:
    __slots__ = ("compute_input", "compute_infer", "compute_output")

    def __init__(self) -> None:
        self.compute_input, self.compute_infer, self.compute_output = Duration(), Duration(), Duration()


class ModelStatistics:
    """Request counts are per request (a failed batch that was retried counts each request once, when it
    ran alone); compute durations are per execution, as Triton's batch_stats are."""

    def __init__(self) -> None:
        self.inference_count = 0
        """Rows scored successfully."""
        self.execution_count = 0
        self.last_inference_ms = 0
        self.success, self.fail, self.queue = Duration(), Duration(), Duration()
        self.compute_input, self.compute_infer, self.compute_output = Duration(), Duration(), Duration()
        self.cache_hit, self.cache_miss = Duration(), Duration()
        self.batch_sizes: dict[int, BatchSize] = {}

    def record(self, batch: BatchRecord) -> None:
        """Count one run of the model."""
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)  # wall clock: Triton reports it as a timestamp
        spent = batch.input_ns + batch.infer_ns + batch.output_ns
        self.compute_input.add(batch.input_ns)
        self.compute_infer.add(batch.infer_ns)
        self.compute_output.add(batch.output_ns)
        if batch.outcome == "success":
            self.inference_count += batch.rows
            self.success.add(spent * batch.requests, batch.requests)
        elif batch.outcome == "failure":
            self.fail.add(spent * batch.requests, batch.requests)
        if batch.outcome != "retried":
            self.queue.add(batch.queue_ns, batch.requests)
        sizes = self.batch_sizes
        key = batch.rows if batch.rows in sizes or len(sizes) < MAX_TRACKED_BATCH_SIZES else max(sizes)
        size = sizes.get(key)
        if size is None:
            size = sizes[key] = BatchSize()
        size.compute_input.add(batch.input_ns)
        size.compute_infer.add(batch.infer_ns)
        size.compute_output.add(batch.output_ns)

    def to_triton(self, name: str, version: int) -> dict[str, Any]:
        """One entry of Triton's model_stats list."""
        stages = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
                  "cache_miss")  # fmt: skip
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {stage: getattr(self, stage).to_json() for stage in stages},
            "batch_stats": [
                {
                    "batch_size": rows,
                    "compute_input": size.compute_input.to_json(),
                    "compute_infer": size.compute_infer.to_json(),
                    "compute_output": size.compute_output.to_json(),
                }
                for rows, size in sorted(self.batch_sizes.items())
            ],
        }
