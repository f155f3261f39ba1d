"""The population stability index (PSI) of recent values against a training reference, and its statuses.

PSI = sum over bins of (a - e) ln(a / e), with a and e the window's and the reference's shares; the
statuses use the usual credit-scoring thresholds (0.1 warn, 0.25 alert).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

MIN_PSI_ROWS = 100
"""A window with fewer rows has no PSI: a handful of rows differ from any reference by chance."""
PSI_FLOOR = 1e-4
"""A share of 0 (a bin never seen in training, or not yet in the window) counts as this in the PSI."""
Status = Literal["ok", "warn", "alert", "unknown"]
THRESHOLDS: tuple[tuple[float, Status], ...] = ((0.25, "alert"), (0.1, "warn"))
"""PSI at or above each, highest first; below them all, "ok". The usual credit-scoring thresholds."""


def psi(actual: npt.NDArray[np.float64], expected: npt.NDArray[np.float64]) -> float:
    """sum (a - e) ln(a / e) over bins, both as shares, each floored at PSI_FLOOR."""
    a = np.maximum(actual, PSI_FLOOR)
    e = np.maximum(expected, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def status_of(value: float | None) -> Status:
    if value is None:
        return "unknown"
    return next((status for threshold, status in THRESHOLDS if value >= threshold), "ok")


def window_psi(window: npt.NDArray[np.int64], expected: npt.NDArray[np.float64] | None) -> float | None:
    rows = int(window.sum())
    if expected is None or rows < MIN_PSI_ROWS:
        return None
    return psi(window / rows, expected)
