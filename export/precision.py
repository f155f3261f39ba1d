"""Numeric precisions the exporter converts with, tried in order until the parity gate passes.

`float32` is skl2onnx's default: every operator computes in float32. It fails where the library's own
arithmetic is double and a result sits on a knife edge: a random forest whose class probabilities tie
exactly (scikit-learn sums the trees in double and takes the first class; float32 sums break the tie
either way), or a value a hair from a LightGBM split (a double threshold rounded to float32). In
`float64-trees`, each scikit-learn tree ensemble gets a double copy of its input and keeps its double
thresholds and leaf values, so ONNX Runtime compares and sums as scikit-learn does; LightGBM's
thresholds are rounded down to float32, which compares float32 values exactly as LightGBM's doubles do.
The rest of the graph stays float32.

Inputs stay FP32 on the wire in every precision: the exporter casts numeric columns to float32 before
scikit-learn sees them, so a double input would carry no information the model ever used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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

Converter = Callable[[Any, Any, Any], None]

# The scikit-learn trees whose skl2onnx converters write double thresholds and leaf values (ai.onnx.ml
# opset 3's *_as_tensor attributes) when their input is double, and emit nothing after the tree node that
# would then mix types: each was converted and parity-checked in double here (tests/test_fidelity.py).
DOUBLE_TREES: tuple[type, ...] = (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)


@dataclass(frozen=True)
class Precision:
    """One way to convert: a name for the card and the converters it swaps in."""

    name: str
    description: str
    converters: Callable[[], dict[type, Converter]] = field(default=lambda: _hist_gradient_boosting())
    """Custom conversion functions for skl2onnx's convert_sklearn, keyed by estimator type."""


def _stock(kind: type) -> Any:
    """The function behind skl2onnx's registered converter for `kind` (it takes op_version; the wrapper does not)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import get_converter

    registered = get_converter(sklearn_operator_name_map[kind])
    return getattr(registered, "_fct", registered)


def _hist_gradient_boosting() -> dict[type, Converter]:
    """skl2onnx 1.20 hands onnx HistGradientBoosting's missing-value routing as booleans inside an integer
    list (protobuf warns "Expected an int, got a boolean" and will refuse it) and node ids as numpy.uint32;
    give it plain ints."""
    return {kind: _plain_ints(_stock(kind)) for kind in (HistGradientBoostingClassifier, HistGradientBoostingRegressor)}


def _plain_ints(convert: Any) -> Any:
    def converter(scope: Any, operator: Any, container: Any, **kwargs: Any) -> None:
        convert(scope, operator, _PlainIntContainer(container), **kwargs)

    return converter


class _PlainIntContainer:
    """A converter's container whose add_node turns booleans and numpy integers in list attributes into ints."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def add_node(self, *args: Any, **attributes: Any) -> Any:
        plain = {key: _plain(value) for key, value in attributes.items()}
        return self._container.add_node(*args, **plain)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)


INTEGRAL = (bool, np.bool_, np.integer)


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple) and any(isinstance(item, INTEGRAL) for item in value):
        return [int(item) if isinstance(item, INTEGRAL) else item for item in value]
    return value


# ai.onnx.ml opset 3's double-precision twins of the tree ensembles' float attributes.
AS_TENSOR = ("nodes_values", "nodes_hitrates", "class_weights", "target_weights", "base_values")


def _as_tensors(convert: Any) -> Any:
    """The converter's double arrays written as *_as_tensor attributes (its own add_node rounds them to float)."""

    def converter(scope: Any, operator: Any, container: Any, **kwargs: Any) -> None:
        convert(scope, operator, _DoubleAttributeContainer(container), **kwargs)

    return converter


class _DoubleAttributeContainer(_PlainIntContainer):
    def add_node(self, *args: Any, **attributes: Any) -> Any:
        from onnx import numpy_helper

        for key in AS_TENSOR:
            value = attributes.get(key)
            if isinstance(value, np.ndarray) and value.dtype == np.float64:
                attributes[f"{key}_as_tensor"] = numpy_helper.from_array(attributes.pop(key), f"{key}_as_tensor")
        return super().add_node(*args, **attributes)


def _double_trees() -> dict[type, Converter]:
    return {kind: _in_double(_as_tensors(_stock(kind))) for kind in DOUBLE_TREES}


def _in_double(convert: Any) -> Converter:
    """Wrap a tree converter: cast its input to double, then let it write ai.onnx.ml opset 3 attributes."""
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.proto import onnx_proto

    def converter(scope: Any, operator: Any, container: Any) -> None:
        source = operator.inputs[0]
        double = scope.declare_local_variable("double_input", DoubleTensorType(source.type.shape))
        container.add_node(
            "Cast",
            source.full_name,
            double.full_name,
            to=onnx_proto.TensorProto.DOUBLE,
            name=scope.get_unique_operator_name("CastToDouble"),
        )
        classifier = hasattr(operator.raw_operator, "classes_") and len(operator.outputs) == 2
        outputs = list(operator.outputs)
        if classifier:
            # ONNX Runtime picks its label from the double sums but breaks an exact tie its own way (the
            # second class of a binary forest at 0.5 / 0.5); scikit-learn takes the first largest
            # probability. So the label is recomputed from the probabilities: ArgMax keeps the first.
            outputs[0] = scope.declare_local_variable("tree_label", operator.outputs[0].type.__class__())
        # skl2onnx's Operator refuses to have an input replaced; the converter only reads these.
        # op_version 3: the ai.onnx.ml opset whose *_as_tensor attributes hold double thresholds and weights.
        convert(scope, _Rewired(operator, [double, *operator.inputs[1:]], outputs), container, op_version=3)
        if classifier:
            _first_largest_label(scope, operator, container)

    return converter


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
    return {**_hist_gradient_boosting(), **_double_trees(), **_exact_lightgbm()}


PRECISIONS: tuple[Precision, ...] = (
    Precision("float32", "float32 arithmetic throughout (skl2onnx's default)"),
    Precision(
        "float64-trees",
        "tree ensembles compare (and scikit-learn's sum) as in double; the rest in float32",
        _exact_trees,
    ),
)
BY_NAME: dict[str, Precision] = {precision.name: precision for precision in PRECISIONS}
