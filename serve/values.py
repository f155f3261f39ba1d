"""The rules every input value is held to, once, for every way in (V2 JSON, binary, records).

A number must have its datatype's Python type and range; NaN (JSON null) means "missing" and is allowed
only in a float input the model imputes; infinities never. Both parsing paths call these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from serve.datatypes import V2_TO_NUMPY
from serve.errors import InvalidRequestError, PayloadTooLargeError
from serve.model import Model

# Python types a plain value may have, per numpy kind (the JSON parser and struct give nothing else).
PYTHON_TYPES: dict[str, tuple[type, ...]] = {"f": (float, int), "i": (int,), "u": (int,)}


def _bounds(dtype: np.dtype[Any]) -> tuple[float, float]:
    # Exact integers for integer types: a float bound (2.0**63) would let 2**63 through into an int64.
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return float(info.min), float(info.max)
    limits = np.iinfo(dtype)
    return int(limits.min), int(limits.max)


# Per numeric datatype: the Python types its plain values may have, and its range. Such a value inside
# the range converts exactly and is neither NaN nor infinite.
PLAIN_NUMBERS: dict[str, tuple[tuple[type, ...], float, float]] = {
    datatype: (PYTHON_TYPES[dtype.kind], *_bounds(dtype))
    for datatype, dtype in V2_TO_NUMPY.items()
    if dtype.kind in "fiu"
}
Problem = Literal["infinite", "missing"]
PROBLEMS: dict[Problem, str] = {
    "infinite": "input {input!r} contains an infinite value; expected finite numbers",
    "missing": "input {input!r} contains NaN (a missing value), but model {model!r} has no imputer for it",
}


def plain_values(values: Iterable[Any], datatype: str, missing_ok: bool) -> bool:
    """Whether every value converts to `datatype` exactly: a plain number in range, or (where `missing_ok`)
    None or NaN for a missing one. A list that passes needs no numpy check after its conversion."""
    accepted, low, high = PLAIN_NUMBERS[datatype]
    for value in values:
        # `value != value` is NaN; None fails the type test before any comparison.
        if (type(value) not in accepted or not low <= value <= high) and not (
            missing_ok and (value is None or value != value)
        ):
            return False
    return True


def nonfinite_problem(array: npt.NDArray[Any], missing_ok: bool) -> Problem | None:
    """What is wrong with a float array's non-finite values, if anything."""
    if np.isfinite(array).all():
        return None
    if np.isinf(array).any():
        return "infinite"
    return None if missing_ok else "missing"


def check_finite(array: npt.NDArray[Any], name: str, model: Model, sent: list[Any] | None = None) -> None:
    """Raise the `nonfinite_problem` of a float input, naming it. `sent`: the JSON data (lists, nested as the
    shape) `array` was made from. JSON has no infinities, so an infinite value there is a number beyond the
    datatype's range, and is named as such."""
    problem = nonfinite_problem(array, name in model.missing_ok)
    if problem == "infinite" and sent is not None:
        top = float(np.finfo(array.dtype).max)
        # The value where `array` is infinite, by position: one just over the largest finite value may round
        # down to it (FP32 takes 3.4028235e38), so "the first value above the maximum" is not always it.
        first = int(np.flatnonzero(np.isinf(array.reshape(-1)))[0])
        value = np.asarray(sent, dtype=object).reshape(-1)[first]
        if type(value) in (int, float) and not math.isinf(value):  # Python data (not parsed JSON) may hold inf
            datatype = model.input_by_name[name].datatype
            raise InvalidRequestError(
                f"input {name!r} is {datatype}: {value!r} is beyond its range (-{top:.7g} to {top:.7g})"
            )
    if problem is not None:
        raise InvalidRequestError(PROBLEMS[problem].format(input=name, model=model.name))


def check_rows(rows: int, max_rows: int) -> None:
    if rows < 1:
        raise InvalidRequestError("the request has 0 rows; expected at least 1")
    if rows > max_rows:
        raise PayloadTooLargeError(f"the request has {rows} rows; the limit is {max_rows} per request")
