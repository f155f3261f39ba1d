"""Numeric precisions the exporter converts with, tried in order until the parity gate passes.

`float32` is skl2onnx's default: every operator computes in float32. It fails where the library's own
arithmetic is double and a result sits on a knife edge: a random forest whose class probabilities tie
exactly (scikit-learn sums the trees in double and takes the first class; float32 sums break the tie
either way), a value a hair from a HistGradientBoosting or LightGBM split (a double threshold rounded to
float32). In `float64-trees`, each scikit-learn tree ensemble gets a double copy of its input and keeps
its double thresholds and leaf values, so ONNX Runtime compares and sums as scikit-learn does
(export/trees.py); LightGBM's thresholds are rounded down to float32, which compares float32 values
exactly as LightGBM's doubles do. The rest of the graph stays float32.

Inputs stay FP32 on the wire in every precision: the exporter casts numeric columns to float32 before
scikit-learn sees them, so a double input would carry no information the model ever used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export.trees import Converter, tree_converters


@dataclass(frozen=True)
class Precision:
    """One way to convert: a name for the card and the converters it swaps in."""

    name: str
    description: str
    converters: Callable[[], dict[type, Converter]] = field(default=lambda: tree_converters(double=False))
    """Custom conversion functions for skl2onnx's convert_sklearn, keyed by estimator type."""


def _exact_lightgbm() -> dict[type, Converter]:
    """LightGBM compares a float32 value x with a double threshold t; x <= t exactly when x <= the largest
    float32 not above t. onnxmltools rounds t to the nearest float32 instead, which sends the values between
    t and its rounding the wrong way: so hand it the thresholds already rounded down."""
    from export import boosters

    if not boosters.register_boosters():
        return {}
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters import LightGbm

    def converter(scope: Any, operator: Any, container: Any) -> None:
        stock_dump = LightGbm.dump_booster_model

        def dump_rounded(*args: Any, **kwargs: Any) -> Any:
            text, info = stock_dump(*args, **kwargs)
            for tree in text["tree_info"]:
                _round_thresholds_down(tree["tree_structure"])
            return text, info

        # The converter reads the booster only through this module function; swapped for this one call.
        LightGbm.dump_booster_model = dump_rounded
        try:
            LightGbm.convert_lightgbm(scope, operator, container)
        finally:
            LightGbm.dump_booster_model = stock_dump

    return {LGBMClassifier: converter, LGBMRegressor: converter}


def _round_thresholds_down(node: dict[str, Any]) -> None:
    """Numeric `<=` splits get the largest float32 not above their threshold (iteratively: trees are deep)."""
    stack = [node]
    while stack:
        current = stack.pop()
        threshold = current.get("threshold")
        if current.get("decision_type") == "<=" and isinstance(threshold, int | float):
            rounded = np.float32(threshold)
            if float(rounded) > threshold:
                rounded = np.nextafter(rounded, np.float32(-np.inf))
            current["threshold"] = float(rounded)
        stack.extend(current[key] for key in ("left_child", "right_child") if key in current)


def _exact_trees() -> dict[type, Converter]:
    return {**tree_converters(double=True), **_exact_lightgbm()}


PRECISIONS: tuple[Precision, ...] = (
    Precision("float32", "float32 arithmetic throughout (skl2onnx's default)"),
    Precision(
        "float64-trees",
        "tree ensembles compare (and scikit-learn's sum) as in double; the rest in float32",
        _exact_trees,
    ),
)
