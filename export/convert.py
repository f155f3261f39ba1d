"""Convert a fitted scikit-learn pipeline to ONNX: one input per column, batch dimension None.

Input layout (the contract with serve/ and any other runtime): every feature is its own input named
after the column, shape [None, 1]; numeric columns are tensor(float), categorical ones tensor(string).
A records request `{"age": 35, "sex": "F"}` maps key by key, and a V2 client sends one tensor per column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import onnx
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

from export.features import column_kind
from export.lean import lean
from export.precision import PRECISIONS, Precision

# Pinned upper bounds (skl2onnx uses the lowest opset that each operator needs, up to these); the card
# records the opsets actually used.
TARGET_OPSET = 17
TARGET_OPSET_ML = 3

# scikit-learn >= 1.3 scales float32 input as (x - mean) / scale in float32; skl2onnx's default multiplies
# by 1/scale, which differs by one ulp and flips tree splits that sit on a threshold. "div" matches exactly.
CONVERTER_OPTIONS: dict[Any, dict[str, Any]] = {StandardScaler: {"div": "div"}}


class UnconvertibleStepError(Exception):
    """A pipeline step that skl2onnx cannot convert."""


def initial_types(frame: pd.DataFrame) -> list[tuple[str, Any]]:
    """One [None, 1] input per column: float for numeric columns, string for categorical ones."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [
        (
            str(name),
            FloatTensorType([None, 1]) if column_kind(frame[name]) == "numeric" else StringTensorType([None, 1]),
        )
        for name in frame.columns
    ]


def with_column_inputs(pipeline: BaseEstimator, frame: pd.DataFrame) -> BaseEstimator:
    """Give a matrix-input pipeline the per-column layout: a passthrough ColumnTransformer in front.

    A pipeline that starts with a ColumnTransformer already takes named columns; anything else was
    fitted on one matrix, which skl2onnx would expose as a single input.
    """
    first = pipeline.steps[0][1] if isinstance(pipeline, Pipeline) else pipeline
    if isinstance(first, ColumnTransformer):
        return pipeline
    columns = ColumnTransformer([("columns", "passthrough", list(frame.columns))], verbose_feature_names_out=False)
    columns.set_output(transform="pandas")  # the inner pipeline keeps seeing the names it was fitted with
    return Pipeline([("columns", columns.fit(frame)), ("pipeline", pipeline)])


def convert_pipeline(
    pipeline: BaseEstimator,
    frame: pd.DataFrame,
    precision: Precision = PRECISIONS[0],
    progress: Callable[[str], None] = lambda message: None,
) -> onnx.ModelProto:
    """Convert with zipmap off (plain label + probabilities tensors), the pinned opsets and `precision`,
    then lean (export/lean.py): what is published and gated is the lean graph."""
    from skl2onnx import convert_sklearn

    from export.boosters import register_boosters
    from export.functions import register_functions

    register_boosters()
    register_functions()
    options: dict[Any, dict[str, Any]] = {id(pipeline): {"zipmap": False}} if hasattr(pipeline, "predict_proba") else {}
    options.update(CONVERTER_OPTIONS)
    try:
        model = convert_sklearn(
            pipeline,
            initial_types=initial_types(frame),
            target_opset={"": TARGET_OPSET, "ai.onnx.ml": TARGET_OPSET_ML},
            options=options,
            custom_conversion_functions=precision.converters(),
        )
    except Exception as exc:
        raise UnconvertibleStepError(_describe_failure(pipeline, exc)) from exc
    assert isinstance(model, onnx.ModelProto)
    leaned = lean(model)
    if leaned.nodes_after < leaned.nodes_before:
        progress(f"graph leaned from {leaned.nodes_before} to {leaned.nodes_after} nodes")
    return leaned.model


def _describe_failure(pipeline: BaseEstimator, exc: Exception) -> str:
    """Name the step that skl2onnx choked on: an unregistered type, else the one the error names."""
    from skl2onnx._supported_operators import sklearn_operator_name_map

    steps = list(_leaf_steps("", pipeline))
    culprit = next((path for path, step in steps if type(step) not in sklearn_operator_name_map), None)
    if culprit is None:
        culprit = next((path for path, step in steps if type(step).__name__ in str(exc)), None)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if culprit is None:
        return f"skl2onnx could not convert the pipeline: {first_line}"
    return f"skl2onnx cannot convert step {culprit!r}: {first_line}"


def _leaf_steps(prefix: str, estimator: Any) -> Iterator[tuple[str, Any]]:
    """Walk Pipelines, ColumnTransformers and FeatureUnions down to their leaf estimators."""
    children: list[tuple[str, Any]] = []
    if isinstance(estimator, Pipeline):
        children = list(estimator.steps)
    elif isinstance(estimator, ColumnTransformer):
        # The declared list, not transformers_: fitting turns "passthrough" into an identity FunctionTransformer.
        children = [(name, step) for name, step, _ in estimator.transformers]
    elif isinstance(estimator, FeatureUnion):
        children = list(estimator.transformer_list)
    if not children:
        yield (prefix or type(estimator).__name__, estimator)
        return
    for name, child in children:
        if isinstance(child, str):  # "drop" / "passthrough"
            continue
        yield from _leaf_steps(f"{prefix}/{name}" if prefix else name, child)
    return
