"""Convert at the first precision whose graph passes the parity gate; when none does, say which row and why.

The tolerances never move: a precision either reproduces scikit-learn within them or is not used. The
card's `parity` records the precision chosen and what every earlier one failed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pandas as pd
from sklearn.base import BaseEstimator

from export.convert import convert_pipeline
from export.features import MISSING_STRING, Feature, describe_features
from export.parity import ParityError, ParityReport, Tolerance, accepts_missing, check_parity, edge_rows
from export.precision import PRECISIONS, Precision


@dataclass(frozen=True)
class Attempt:
    """One precision tried: its report (passed or not)."""

    precision: Precision
    report: ParityReport

    def to_json(self) -> dict[str, Any]:
        return {"precision": self.precision.name, "passed": self.report.passed, "problems": list(self.report.problems)}


@dataclass(frozen=True)
class Converted:
    """The graph that passed, how it was made, and the rows it was checked on."""

    model: onnx.ModelProto
    precision: Precision
    report: ParityReport
    attempts: tuple[Attempt, ...]
    features: list[Feature]
    rows: pd.DataFrame
    """Held-out rows first, then the edge rows."""
    edges: int
    expected: dict[str, npt.NDArray[Any]]
    """scikit-learn's outputs on `rows`: the golden answers."""

    def parity_json(self) -> dict[str, Any]:
        return {
            **self.report.to_json(),
            "precision": self.precision.name,
            "precisions_tried": [attempt.to_json() for attempt in self.attempts],
        }


def convert_with_parity(
    pipeline: BaseEstimator,
    training_frame: pd.DataFrame,
    check_frame: pd.DataFrame,
    tolerance: Tolerance,
    max_rows: int,
    progress: Callable[[str], None] = lambda message: None,
) -> Converted:
    """Try PRECISIONS in order; return the first that passes, or raise ParityError naming the row and why."""
    missing = accepts_missing(pipeline, training_frame, list(training_frame.columns))
    attempts: list[Attempt] = []
    checked: tuple[list[Feature], pd.DataFrame, int] | None = None
    for precision in PRECISIONS:
        progress(f"converting with skl2onnx ({precision.name}: {precision.description})")
        model = convert_pipeline(pipeline, training_frame, precision, progress)
        if checked is None:  # every precision has the same inputs, so the same rows are checked
            features = describe_features(training_frame, missing, [value.name for value in model.graph.input])
            edges = edge_rows(training_frame, features)
            checked = features, pd.concat([check_frame.iloc[:max_rows], edges], ignore_index=True), len(edges)
            progress(f"parity check on {len(checked[1]) - len(edges)} held-out rows and {len(edges)} edge rows")
        features, rows, edge_count = checked
        report, expected = check_parity(pipeline, model.SerializeToString(), rows, tolerance, edges=edge_count)
        attempts.append(Attempt(precision, report))
        if report.passed:
            return Converted(model, precision, report, tuple(attempts), features, rows, edge_count, expected)
        progress(f"{precision.name} refused: {report.problems[0]}")
    raise ParityError(report, _explain(pipeline, rows, report, features, tolerance, attempts))


def _explain(
    pipeline: BaseEstimator,
    rows: pd.DataFrame,
    report: ParityReport,
    features: list[Feature],
    tolerance: Tolerance,
    attempts: list[Attempt],
) -> str:
    """Which precisions were tried, and for the worst failing row: its imputed features and its knife edges."""
    failing = next(item for item in report.outputs if item.failing_rows)
    row = rows.iloc[[failing.worst_row]]
    imputed = [
        column
        for column, feature in zip(rows.columns, features, strict=True)
        if feature.accepts_missing and _is_missing(row[column].iloc[0])
    ]
    edges = on_knife_edge(pipeline, row, tolerance)
    tried = ", ".join(attempt.precision.name for attempt in attempts)
    parts = [f"tried precisions {tried}, none agrees"]
    values = ", ".join(f"{key}={_plain(value)!r}" for key, value in row.iloc[0].items())
    parts.append(f"row {failing.worst_row}: {values}")
    parts.append(f"imputed (missing) in that row: {', '.join(imputed) or 'none'}")
    parts.append(
        "on a split threshold (a one-ulp nudge changes scikit-learn's answer): " + (", ".join(edges) or "none found")
    )
    parts.append(
        "ways forward: drop a scaler in front of trees, round the on-threshold columns at the source,"
        " or accept the difference explicitly with --max-label-mismatches / --atol"
    )
    return "; ".join(parts)


def on_knife_edge(pipeline: BaseEstimator, row: pd.DataFrame, tolerance: Tolerance) -> list[str]:
    """Numeric columns where moving the value one float32 step either way changes scikit-learn's answer."""
    base = _answer(pipeline, row)
    found = []
    for column in row.columns:
        value = row[column].iloc[0]
        if row[column].dtype.kind != "f" or not np.isfinite(value):
            continue
        for direction in (-np.inf, np.inf):
            nudged = row.copy()
            nudged[column] = np.nextafter(np.float32(value), np.float32(direction))
            if not _same(base, _answer(pipeline, nudged), tolerance):
                found.append(f"{column}={float(value)!r}")
                break
    return found


def _answer(pipeline: BaseEstimator, row: pd.DataFrame) -> npt.NDArray[Any]:
    if hasattr(pipeline, "predict_proba"):
        return np.asarray(pipeline.predict(row))
    return np.asarray(pipeline.predict(row), dtype=np.float64)


def _same(left: npt.NDArray[Any], right: npt.NDArray[Any], tolerance: Tolerance) -> bool:
    if left.dtype.kind in "fc":
        return bool(np.allclose(left, right, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True))
    return bool(np.array_equal(left.astype(str), right.astype(str)))


def _plain(value: Any) -> Any:
    """numpy scalars as the Python values they hold: 1.1 rather than np.float32(1.1)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    return value == MISSING_STRING if isinstance(value, str) else bool(pd.isna(value))
