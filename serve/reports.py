"""What the batcher tells its observers (statistics, metrics) of each run of a model: one BatchRecord."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["success", "failure", "retried"]


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One run of the model, as observers (statistics, metrics) are told of it.

    "retried": the batch failed and each request then ran alone; those runs are reported on their own,
    so this one's `queue_ns` (the requests' summed wait) is 0. The three durations are assembling the
    inputs, the model's run and splitting the outputs; `queued` is how many requests still wait.
    """

    requests: int
    rows: int
    outcome: Outcome
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    queued: int
