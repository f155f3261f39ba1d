"""scikit-learn's tree ensembles converted the way scikit-learn scores them: skl2onnx's converters, corrected.

Three corrections, each found by the parity gate on mixed data (tests/test_fidelity.py):
- Missing values: since scikit-learn 1.3 a tree trained on NaNs sends them down `missing_go_to_left`;
  skl2onnx writes no routing, so ONNX Runtime sent every NaN right (up to 77 of 300 rows wrong).
- Attribute types: skl2onnx 1.20 hands onnx HistGradientBoosting's routing as booleans inside an integer
  list (protobuf warns "Expected an int, got a boolean" and will refuse it) and node ids as numpy.uint32.
- In double (the `float64-trees` precision): thresholds and leaf values as ai.onnx.ml opset 3's
  `*_as_tensor` attributes, summed in double; the label as the first largest probability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

Converter = Callable[..., None]

TREES: tuple[type, ...] = (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
"""Every type converted here; each is converted and parity-checked at both precisions by the fidelity test."""

AS_TENSOR = ("nodes_values", "nodes_hitrates", "class_weights", "target_weights", "base_values")
"""ai.onnx.ml opset 3's double-precision twins of the tree ensembles' float attributes."""
INTEGRAL = (bool, np.bool_, np.integer)


def tree_converters(double: bool) -> dict[type, Converter]:
    """Custom conversion functions for convert_sklearn: every type of TREES, in float32 or in double."""
    return {kind: (_in_double if double else _in_float)(_stock(kind)) for kind in TREES}


def _stock(kind: type) -> Any:
    """The function behind skl2onnx's registered converter (it takes op_version; the registered wrapper does not)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import get_converter

    registered = get_converter(sklearn_operator_name_map[kind])
    return getattr(registered, "_fct", registered)


def _in_float(convert: Any) -> Converter:
    def converter(scope: Any, operator: Any, container: Any) -> None:
        convert(scope, operator, _TreeContainer(container, operator.raw_operator, double=False))

    return converter


def _in_double(convert: Any) -> Converter:
    """Cast the input to double, convert at ai.onnx.ml opset 3 with double attributes, relabel classifiers."""
    from skl2onnx.common import tree_ensemble
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.proto import onnx_proto

    def converter(scope: Any, operator: Any, container: Any) -> None:
        source = operator.inputs[0]
        double = scope.declare_local_variable("double_input", DoubleTensorType(source.type.shape))
        container.add_node(
            "Cast", source.full_name, double.full_name, to=onnx_proto.TensorProto.DOUBLE,
            name=scope.get_unique_operator_name("CastToDouble"),
        )  # fmt: skip
        classifier = hasattr(operator.raw_operator, "classes_") and len(operator.outputs) == 2
        outputs = list(operator.outputs)
        if classifier:
            # ONNX Runtime picks its label from the double sums but breaks an exact tie its own way (the
            # second class of a binary forest at 0.5 / 0.5); scikit-learn takes the first largest
            # probability. So the label is recomputed from the probabilities: ArgMax keeps the first.
            outputs[0] = scope.declare_local_variable("tree_label", operator.outputs[0].type.__class__())
        # skl2onnx moves each double threshold so that any double x compares as scikit-learn's float32(x)
        # would; its search never ends on a missing-value split's +inf threshold (NaN != NaN). These double
        # inputs are float32 values already, so scikit-learn's own threshold is exact: use it unchanged.
        # skl2onnx reads it through this module function only; swapped back when the conversion ends.
        stock_threshold = tree_ensemble.sklearn_threshold
        tree_ensemble.sklearn_threshold = _unchanged_double_threshold(stock_threshold)
        try:
            convert(
                scope,
                _Rewired(operator, [double, *operator.inputs[1:]], outputs),  # skl2onnx's Operator is not writable
                _TreeContainer(container, operator.raw_operator, double=True),
                op_version=3,  # the ai.onnx.ml opset whose *_as_tensor attributes hold doubles
            )
        finally:
            tree_ensemble.sklearn_threshold = stock_threshold
        if classifier:
            _first_largest_label(scope, operator, container)

    return converter


class _TreeContainer:
    """A converter's container whose add_node corrects a tree ensemble node's attributes (module docstring)."""

    def __init__(self, container: Any, estimator: Any, double: bool) -> None:
        self._container = container
        self._trees = _sklearn_trees(estimator)
        self._double = double

    def add_node(self, *args: Any, **attributes: Any) -> Any:
        attributes = {key: _plain(value) for key, value in attributes.items()}
        if self._trees and "nodes_missing_value_tracks_true" in attributes:
            attributes["nodes_missing_value_tracks_true"] = [
                int(self._trees[tree].missing_go_to_left[node]) if mode != "LEAF" else 0
                for tree, node, mode in zip(
                    attributes["nodes_treeids"], attributes["nodes_nodeids"], attributes["nodes_modes"], strict=True
                )
            ]
        if self._double:
            from onnx import numpy_helper

            for key in AS_TENSOR:
                value = attributes.get(key)
                if isinstance(value, np.ndarray) and value.dtype == np.float64:
                    attributes[f"{key}_as_tensor"] = numpy_helper.from_array(attributes.pop(key), f"{key}_as_tensor")
        return self._container.add_node(*args, **attributes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)


def _sklearn_trees(estimator: Any) -> list[Any]:
    """The Tree objects in skl2onnx's tree-id order, where they carry missing-value routing; else []."""
    trees = (
        [estimator.tree_] if hasattr(estimator, "tree_") else [e.tree_ for e in getattr(estimator, "estimators_", [])]
    )
    return trees if trees and all(hasattr(tree, "missing_go_to_left") for tree in trees) else []


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple) and any(isinstance(item, INTEGRAL) for item in value):
        return [int(item) if isinstance(item, INTEGRAL) else item for item in value]
    return value


def _unchanged_double_threshold(stock: Callable[..., Any]) -> Callable[..., Any]:
    def threshold(value: float, dtype: Any, mode: str) -> Any:
        return np.float64(value) if dtype == np.float64 else stock(value, dtype, mode)

    return threshold


def _first_largest_label(scope: Any, operator: Any, container: Any) -> None:
    """label = classes_[argmax(probabilities)], the first class on a tie (as scikit-learn's predict)."""
    from onnx import TensorProto

    classes = np.asarray(operator.raw_operator.classes_)
    name = scope.get_unique_variable_name("classes")
    if classes.dtype.kind in "OUS":
        container.add_initializer(name, TensorProto.STRING, [len(classes)], [str(c) for c in classes])
    else:
        container.add_initializer(name, TensorProto.INT64, [len(classes)], classes.astype(np.int64).tolist())
    index = scope.get_unique_variable_name("first_largest")
    container.add_node(
        "ArgMax", operator.outputs[1].full_name, index, axis=1, keepdims=0, select_last_index=0,
        name=scope.get_unique_operator_name("ArgMax"), op_version=12,
    )  # fmt: skip
    container.add_node(
        "Gather", [name, index], operator.outputs[0].full_name, axis=0, name=scope.get_unique_operator_name("Gather")
    )


class _Rewired:
    """An operator seen with other input and output variables (everything else is the original's)."""

    def __init__(self, operator: Any, inputs: list[Any], outputs: list[Any]) -> None:
        self._operator = operator
        self.inputs = inputs
        self.outputs = outputs
        self.input_full_names = [variable.full_name for variable in inputs]
        self.output_full_names = [variable.full_name for variable in outputs]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._operator, name)
