"""FunctionTransformer with the numpy functions people put in pipelines: log1p, log, sqrt, exp, expm1, abs.

skl2onnx converts a FunctionTransformer only when it is the identity. These element-wise functions have
exact ONNX counterparts; anything else (a lambda, keyword arguments) is still refused, naming the function.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np

# numpy function -> the ONNX ops applied in turn; ("Add", 1.0) adds a constant of the input's type.
FUNCTIONS: dict[Any, tuple[str | tuple[str, float], ...]] = {
    np.log1p: (("Add", 1.0), "Log"),
    np.log: ("Log",),
    np.sqrt: ("Sqrt",),
    np.exp: ("Exp",),
    np.expm1: ("Exp", ("Sub", 1.0)),
    np.abs: ("Abs",),
}


def _describe(function: Any) -> str:
    return getattr(function, "__name__", repr(function))


def _check(transformer: Any) -> None:
    if transformer.func is not None and transformer.func not in FUNCTIONS:
        known = ", ".join(f"np.{_describe(function)}" for function in FUNCTIONS)
        raise RuntimeError(
            f"FunctionTransformer(func={_describe(transformer.func)}) is not convertible; known: {known}"
        )
    if transformer.kw_args:
        raise RuntimeError(f"FunctionTransformer with kw_args {transformer.kw_args!r} is not convertible")


def shapes(operator: Any) -> None:
    """One output with the inputs' columns side by side, of the first input's type."""
    _check(operator.raw_operator)
    columns = [variable.type.shape[1] for variable in operator.inputs]
    operator.outputs[0].type = copy.deepcopy(operator.inputs[0].type)
    total = None if None in columns else sum(columns)
    operator.outputs[0].type.shape = [operator.inputs[0].get_first_dimension(), total]


def convert(scope: Any, operator: Any, container: Any) -> None:
    """Concatenate the inputs, then apply the function's ops in turn."""
    from onnx import TensorProto
    from skl2onnx.common._apply_operation import apply_concat, apply_identity
    from skl2onnx.common.data_types import guess_numpy_type

    transformer = operator.raw_operator
    _check(transformer)
    current = operator.inputs[0].full_name
    if len(operator.inputs) > 1:
        current = scope.get_unique_variable_name("concatenated")
        apply_concat(scope, [variable.full_name for variable in operator.inputs], current, container, axis=1)
    dtype = guess_numpy_type(operator.inputs[0].type)
    steps = FUNCTIONS.get(transformer.func, ())
    if steps and dtype == np.float32:
        # numpy's float32 functions are (nearly) correctly rounded; float32 ONNX ops are not (log(1 + x)
        # loses low bits), and one ulp moves a row across a tree's threshold. Double, then round once.
        current = _cast(scope, container, current, TensorProto.DOUBLE)
        dtype = np.float64
    for step in steps:
        result = scope.get_unique_variable_name("function")
        if isinstance(step, tuple):
            op_type, constant = step
            name = scope.get_unique_variable_name("constant")
            container.add_initializer(name, _onnx_type(dtype), [], [constant])
            container.add_node(op_type, [current, name], result, name=scope.get_unique_operator_name(op_type))
        else:
            container.add_node(step, current, result, name=scope.get_unique_operator_name(step))
        current = result
    if dtype != guess_numpy_type(operator.inputs[0].type):
        current = _cast(scope, container, current, TensorProto.FLOAT)
    apply_identity(scope, current, operator.outputs[0].full_name, container)


def _cast(scope: Any, container: Any, source: str, to: int) -> str:
    result: str = scope.get_unique_variable_name("cast")
    container.add_node("Cast", source, result, to=to, name=scope.get_unique_operator_name("Cast"))
    return result


def _onnx_type(dtype: Any) -> int:
    from onnx import TensorProto

    return TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT


@functools.cache
def register_functions() -> None:
    """Replace skl2onnx's identity-only FunctionTransformer converter with this one, once."""
    from skl2onnx import update_registered_converter
    from sklearn.preprocessing import FunctionTransformer

    update_registered_converter(FunctionTransformer, "SklearnFunctionTransformer", shapes, convert, overwrite=True)
