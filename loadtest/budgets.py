"""Budgets: a TOML table per scenario, checked against a run's results; a breach names itself."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KNOWN_KEYS = {"p50_ms", "p95_ms", "p99_ms", "max_error_rate", "min_rps", "drift_alert"}
"""drift_alert = 1: the drift scenario also needs the server's monitoring to report `alert` on the shifted feature."""


@dataclass(frozen=True)
class Budget:
    scenario: str
    limits: dict[str, float]


@dataclass(frozen=True)
class Result:
    """What a run measured: exact client-side percentiles, error rate, throughput."""

    requests: int
    failures: int
    rps: float
    percentiles_ms: dict[str, float]

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


def load_budget(path: Path, scenario: str) -> Budget:
    with open(path, "rb") as handle:
        table: dict[str, Any] = tomllib.load(handle)
    if scenario not in table:
        raise ValueError(f"{path} has no [{scenario}] budget; it has {sorted(table)}")
    limits = table[scenario]
    unknown = set(limits) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{path} [{scenario}]: unknown key(s) {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    return Budget(scenario, {key: float(value) for key, value in limits.items()})


def breaches(budget: Budget, result: Result) -> list[str]:
    """Every limit the result breaks, each as a sentence naming the measured and allowed values."""
    found = []
    if result.requests == 0:
        return [f"{budget.scenario}: no request completed"]
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        if key in budget.limits:
            measured = result.percentiles_ms[key[:3]]
            if measured > budget.limits[key]:
                found.append(f"{budget.scenario}: {key[:3]} {measured:.2f} ms > budget {budget.limits[key]:g} ms")
    if "max_error_rate" in budget.limits and result.error_rate > budget.limits["max_error_rate"]:
        found.append(
            f"{budget.scenario}: error rate {result.error_rate:.2%} ({result.failures} of {result.requests})"
            f" > budget {budget.limits['max_error_rate']:.2%}"
        )
    if "min_rps" in budget.limits and result.rps < budget.limits["min_rps"]:
        found.append(f"{budget.scenario}: {result.rps:.1f} requests/s < budget {budget.limits['min_rps']:g}")
    return found
