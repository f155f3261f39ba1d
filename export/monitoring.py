"""Reference statistics for monitoring, measured at export: what a server compares requests with.

Training inputs per feature (range, missing share, quantile bins or category frequencies) and the
pipeline's predictions on the held-out rows; the binning rule is `contract.find_bin`'s docstring.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from contract import (
    REFERENCE_QUANTILES,
    BinsReference,
    CategoricalReference,
    ClassesReference,
    FeatureReference,
    MonitoringCard,
    NumericReference,
    Task,
)
from export.features import MISSING_STRING, Feature


def measure_reference(
    training_frame: pd.DataFrame,
    features: list[Feature],
    predictions: npt.NDArray[Any],
    task: Task,
    classes: list[Any] | None,
) -> MonitoringCard:
    """The card's `monitoring`: one reference per input from the prepared training rows, and one of the
    held-out `predictions` (labels, counted over the card's `classes`, or regression values, binned)."""
    references: dict[str, FeatureReference] = {}
    for feature in features:
        # Keyed by input name (what a request carries); the values come from the training column.
        column = training_frame[feature.column or feature.name]
        if feature.kind == "numeric":
            references[feature.name] = _numeric_reference(column.to_numpy(dtype=np.float32))
        else:
            references[feature.name] = _categorical_reference(column)
    prediction: ClassesReference | BinsReference
    if task == "classification":
        prediction = _classes_reference(predictions, classes or [])
    else:
        values = np.asarray(predictions, dtype=np.float32).ravel()  # the ONNX graph outputs float32
        edges, shares = _bins(values)
        prediction = BinsReference(rows=len(values), kind="bins", edges=edges, shares=shares)
    return MonitoringCard(rows=len(training_frame), features=references, prediction=prediction)


def _quantile_edges(values: npt.NDArray[np.float32]) -> list[float]:
    """Interior bin edges of non-missing float32 `values` (see contract.find_bin); [] when none are finite."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return []
    edges = np.unique(np.quantile(finite, REFERENCE_QUANTILES).astype(np.float32))
    # An edge at the minimum would leave bin 0 (v < edges[0]) empty by construction.
    return [float(edge) for edge in edges[edges != finite.min()]]


def _bin_shares(values: npt.NDArray[np.float32], edges: list[float]) -> list[float]:
    """Share of `values` (non-missing) in each of the len(edges) + 1 bins; [] when there are no values."""
    if not values.size:
        return []
    # float32 edges compared with float32 values: the same comparisons a server makes with doubles.
    bins = np.searchsorted(np.asarray(edges, dtype=np.float32), values, side="right")
    return [float(count) / values.size for count in np.bincount(bins, minlength=len(edges) + 1)]


def _bins(values: npt.NDArray[np.float32]) -> tuple[list[float], list[float]]:
    present = values[~np.isnan(values)]
    edges = _quantile_edges(present)
    return edges, _bin_shares(present, edges)


def _numeric_reference(values: npt.NDArray[np.float32]) -> NumericReference:
    present = values[~np.isnan(values)]
    finite = present[np.isfinite(present)]
    edges, shares = _bins(values)
    return NumericReference(
        kind="numeric",
        minimum=float(finite.min()) if finite.size else None,
        maximum=float(finite.max()) if finite.size else None,
        missing_rate=_share(values.size - present.size, values.size),
        edges=edges,
        shares=shares,
    )


def _categorical_reference(column: pd.Series) -> CategoricalReference:
    counts = Counter(str(value) for value in column if value != MISSING_STRING)
    present = sum(counts.values())
    return CategoricalReference(
        kind="categorical",
        missing_rate=_share(len(column) - present, len(column)),
        frequencies={category: counts[category] / present for category in sorted(counts)},
    )


def _classes_reference(labels: npt.NDArray[Any], classes: list[Any]) -> ClassesReference:
    # str(): JSON keys are strings, and str of a numpy label equals str of the card's plain one (1, "1").
    counts = Counter(str(label) for label in np.asarray(labels).ravel().tolist())
    total = sum(counts.values())
    shares = {str(label): _share(counts.pop(str(label), 0), total) for label in classes}
    # A label outside `classes` cannot come from a fitted classifier; keep it visible rather than drop it.
    shares.update({label: _share(count, total) for label, count in sorted(counts.items())})
    return ClassesReference(rows=total, kind="classes", shares=shares)


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0
