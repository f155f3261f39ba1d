"""What the benchmark measures: its cells (payload x connections x system), its duels, and one measurement."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

VARIANTS = 64
"""Distinct bodies per payload, sent in turn, each with its own rows.

One body sent over and over lets the CPU's branch predictor learn a tree ensemble's paths for those
exact rows. Measured on the penguins forest, in-process onnxruntime scores one 100-row batch repeated
1.9x faster than 64 different ones (659k against 349k rows/s), and two alternating batches already
lose the gain; a Ridge or an MLP model shows no difference. Real traffic does not repeat itself, so
the servers and the in-process ceiling all get the same varied batches (the repeated-batch ceiling
is reported too).
"""


@dataclass(frozen=True)
class Cell:
    payload: str
    connections: int
    system: str

    @property
    def key(self) -> str:
        """The cell as a JSON key of the raw results (and of the duels, with tabserve's opponent as system)."""
        return json.dumps(asdict(self))


@dataclass
class Measurement:
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_s: float
    thread_cpu_s: float
    steal_share: float
    duration_s: float

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of server CPU: steadier than requests/s when the hypervisor steals time."""
        return self.requests_per_s * self.duration_s / self.server_cpu_s if self.server_cpu_s else 0.0

    @property
    def rows_per_thread_cpu_second(self) -> float:
        return self.rows_per_s * self.duration_s / self.thread_cpu_s if self.thread_cpu_s else 0.0


PAYLOADS: dict[str, tuple[int, bool]] = {"1-row json": (1, False), "100-row json": (100, False),
                                         "1-row binary": (1, True), "100-row binary": (100, True)}  # fmt: skip
SYSTEMS_BY_PAYLOAD: dict[str, list[str]] = {
    "1-row json": ["tabserve", "tabserve-nobatch", "bare", "bare-twin", "flask"],
    "100-row json": ["tabserve", "tabserve-nobatch", "bare", "flask"],
    "1-row binary": ["tabserve", "tabserve-nobatch"],
    "100-row binary": ["tabserve", "tabserve-nobatch"],
}
DUELS: dict[str, list[str]] = {
    "100-row json": ["tabserve-nobatch", "tabserve-twin"],
    "100-row binary": ["tabserve-nobatch", "tabserve-twin"],
}
"""Payload -> whom tabserve meets side by side at every load: batching off, and its twin (A/A).

Side by side, both servers share core 0 at the same time, each loaded by its own wrk: whatever the
machine does in those seconds (hypervisor steal, a neighbour's cache traffic) it does to both, and the
scheduler splits the core between them, so the ratio is one of work done per CPU second. Measured one
after the other, 1-s runs of one server (100-row JSON, one connection) ranged 1030-1430 req/s. Side by
side, 5 s per duel, tabserve, its twin and batching off (all on one path at one connection) came within
1.4 % of each other per CPU second in 12 duels out of 12, while their req/s moved from 415 to 710.
"""
WORKERS_DUEL = "1-row json"
"""The payload on which tabserve meets two workers of itself, side by side, at the top load."""
