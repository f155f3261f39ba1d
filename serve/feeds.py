"""A V2 request's input tensors as the model's feed, by one of two paths over the same value rules.

`plain_feed` takes the common request (every input once, [n, 1] shapes, flat data or binary sizes and
nothing else) without building an error message; anything else, or any value it doubts, makes it
return None, and `checked_feed` parses the request again, accepting a superset and naming the first
problem. Both hold values to serve/values.py, so they cannot disagree on what is valid.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from serve import binary
from serve.columns import Column, Feed, Inputs
from serve.datatypes import V2_TO_NUMPY
from serve.errors import InvalidRequestError, describe
from serve.model import Model, TensorSpec
from serve.values import PLAIN_NUMBERS, check_finite, nonfinite_problem, plain_values

# numpy kinds a JSON array may arrive as, per target kind: JSON has no int/float split worth keeping,
# but booleans and strings never pass for numbers.
ACCEPTED_KINDS: dict[str, str] = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}
KIND_NAMES: dict[str, str] = {"f": "numbers", "i": "integers", "u": "integers", "b": "booleans"}
SMALL_TENSOR = 64
"""Up to this many values, checking Python values one by one beats numpy's conversion and checks."""
COLUMN = (-1, 1)
"""The shape of a one-feature input with a dynamic batch: what the exporter writes for every column."""
# Numeric datatypes whose binary data numpy can view in place: the wire is little-endian, so only on a
# little-endian machine (elsewhere the checked path swaps bytes).
BINARY_NUMBERS: dict[str, np.dtype[Any]] = (
    {datatype: dtype for datatype, dtype in V2_TO_NUMPY.items() if dtype.kind in "fiu"}
    if sys.byteorder == "little"
    else {}
)
# struct's codes: a small binary tensor unpacks straight into Python numbers, which the batch converts
# with the rest. A numpy view, its finiteness check and its reshape cost ~2 us per tensor: measured, the
# 1-row penguin parse went from 19 to 11 us.
STRUCT_CODES: dict[str, str] = {
    "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b", "INT16": "h", "INT32": "i",
    "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d",
}  # fmt: skip


def plain_feed(document: Any, model: Model, tail: bytes) -> tuple[Inputs, int] | None:
    """The columns and row count of a plain request, or None. JSON columns stay the lists they arrived as."""
    inputs = document.get("inputs") if type(document) is dict else None
    specs = model.input_by_name
    if type(inputs) is not list or len(inputs) != len(specs):
        return None
    feed: dict[str, Column] = {}
    rows = offset = 0
    for tensor in inputs:
        # Exactly name, datatype, shape and data (or, in a binary request, parameters).
        if type(tensor) is not dict or len(tensor) != 4:
            return None
        name = tensor.get("name")
        spec = specs.get(name) if type(name) is str else None
        shape = tensor.get("shape")
        if (
            spec is None
            or spec.shape != COLUMN
            or name in feed
            or tensor.get("datatype") != spec.datatype
            or type(shape) is not list
            or len(shape) != 2
            or type(shape[1]) is not int  # not True, which equals 1
            or shape[1] != 1
        ):
            return None
        count = shape[0]
        if type(count) is not int or count <= 0 or rows not in (0, count):
            return None
        column: Column | None
        if tail:
            parameters = tensor.get("parameters")
            size = parameters.get("binary_data_size") if type(parameters) is dict and len(parameters) == 1 else None
            if type(size) is not int or not 0 <= size <= len(tail) - offset:
                return None
            column = _plain_binary_column(model, spec, count, tail, offset, size)
            offset += size
        else:
            column = data = tensor.get("data")
            if (
                type(data) is not list
                or len(data) != count
                or count > SMALL_TENSOR
                or not _plain_list(model, spec, data)
            ):
                return None
        if column is None:
            return None
        feed[spec.name] = column
        rows = count
    if offset != len(tail):
        return None
    return feed, rows


def _plain_list(model: Model, spec: TensorSpec, data: list[Any]) -> bool:
    if spec.datatype in PLAIN_NUMBERS:
        return plain_values(data, spec.datatype, spec.name in model.missing_ok)
    return spec.datatype == "BYTES" and set(map(type, data)) == {str}


def _plain_binary_column(
    model: Model, spec: TensorSpec, count: int, tail: bytes, offset: int, size: int
) -> Column | None:
    """`count` values of one input from `size` bytes of the tail, or None when not plain."""
    missing_ok = spec.name in model.missing_ok
    if count <= SMALL_TENSOR and spec.datatype in STRUCT_CODES:
        unpacker = _unpacker(spec.datatype, count)
        if size != unpacker.size:
            return None
        values = unpacker.unpack_from(tail, offset)
        return list(values) if plain_values(values, spec.datatype, missing_ok) else None
    dtype = BINARY_NUMBERS.get(spec.datatype)
    if dtype is not None:
        if size != count * dtype.itemsize:
            return None
        array = np.frombuffer(tail, dtype, count, offset)
        if dtype.kind == "f" and nonfinite_problem(array, missing_ok) is not None:
            return None
        return array.reshape(COLUMN)
    if spec.datatype == "BYTES":
        return binary.decode_strings(tail[offset : offset + size], count)
    return None  # BOOL and the like: rare enough for the checked path


@functools.lru_cache(maxsize=len(STRUCT_CODES) * SMALL_TENSOR)
def _unpacker(datatype: str, count: int) -> struct.Struct:
    return struct.Struct(f"<{count}{STRUCT_CODES[datatype]}")


def checked_feed(document: Any, model: Model, tail: bytes) -> tuple[Feed, int]:
    """Validate every part of the request, raising an error that names the first problem."""
    if not isinstance(document, dict):
        raise InvalidRequestError(f"expected a JSON object with 'inputs', got {describe(document)}")
    if "inputs" not in document:
        raise InvalidRequestError(
            f"the request has no 'inputs' (a non-empty list of tensors); it has {describe(list(document))}"
        )
    inputs = document["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequestError(f"'inputs' must be a non-empty list of tensors, got {describe(inputs)}")
    feed: Feed = {}
    offset = 0
    rows: int | None = None
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise InvalidRequestError(f"inputs[{position}] must be a tensor object, got {describe(tensor)}")
        if "name" not in tensor:
            raise InvalidRequestError(f"inputs[{position}] has no 'name'; expected one of {model.input_names}")
        spec = _input_spec(model, position, tensor["name"], feed)
        shape = _check_shape(spec, tensor.get("shape"), tensor.get("datatype"))
        count = math.prod(shape)
        parameters = tensor.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequestError(
                f"input {spec.name!r}: 'parameters' must be an object, got {describe(parameters)}"
            )
        size = (parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(tail):
                raise InvalidRequestError(
                    f"input {spec.name!r}: binary_data_size {size!r} does not fit the {len(tail) - offset} bytes left"
                )
            array = binary.decode_tensor(tail[offset : offset + size], spec.datatype, count, spec.name)
            offset += size
            if array.dtype.kind == "f":
                check_finite(array, spec.name, model)
        elif "data" in tensor:
            array = _decode_json(model, spec, tensor["data"], count)
        else:
            raise InvalidRequestError(f"input {spec.name!r} has neither 'data' nor parameters.binary_data_size")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidRequestError(f"input {spec.name!r} has {shape[0]} rows but earlier inputs have {rows}")
        feed[spec.name] = array.reshape(shape)
    if offset != len(tail):
        raise InvalidRequestError(f"the body carries {len(tail)} bytes of binary data but inputs claim {offset}")
    missing = [name for name in model.input_names if name not in feed]
    if missing:
        raise InvalidRequestError(f"missing input(s) {missing} for model {model.name!r}; it needs {model.input_names}")
    assert rows is not None
    return feed, rows


def _input_spec(model: Model, position: int, name: Any, seen: Feed) -> TensorSpec:
    if not isinstance(name, str):
        raise InvalidRequestError(
            f"inputs[{position}]: 'name' must be one of {model.input_names}, got {describe(name)}"
        )
    spec = model.input_by_name.get(name)
    if spec is None:
        raise InvalidRequestError(f"unexpected input {name!r} for model {model.name!r}; expected {model.input_names}")
    if name in seen:
        raise InvalidRequestError(f"input {name!r} appears more than once")
    return spec


def _check_shape(spec: TensorSpec, shape: Any, datatype: Any) -> list[int]:
    if datatype != spec.datatype:
        raise InvalidRequestError(
            f"input {spec.name!r}: datatype {datatype!r} does not match the model's {spec.datatype!r}"
        )
    if not isinstance(shape, list) or not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):
        raise InvalidRequestError(f"input {spec.name!r}: shape must be a list of integers, got {shape!r}")
    expected = list(spec.shape)
    if any(dim < 0 for dim in shape):
        raise InvalidRequestError(
            f"input {spec.name!r}: shape {shape} has a negative size; a request gives its real sizes (the model's "
            f"{expected} takes any size where it says -1)"
        )
    if len(shape) != len(expected) or any(want >= 0 and dim != want for dim, want in zip(shape, expected, strict=True)):
        raise InvalidRequestError(
            f"input {spec.name!r}: shape {shape} does not match the model's {expected} (-1 = any)"
        )
    return shape


def _decode_json(model: Model, spec: TensorSpec, data: Any, count: int) -> npt.NDArray[Any]:
    if not isinstance(data, list):
        raise InvalidRequestError(f"input {spec.name!r}: 'data' must be a list, got {describe(data)}")
    if spec.datatype in PLAIN_NUMBERS and len(data) == count <= SMALL_TENSOR and _plain_list(model, spec, data):
        return np.array(data, dtype=spec.dtype)  # exact, finite or allowed-missing: no numpy check follows
    if spec.datatype == "BYTES":
        flat = _flatten(data)
        if not set(map(type, flat)) <= {str}:
            bad = next(value for value in flat if not isinstance(value, str))
            raise InvalidRequestError(f"input {spec.name!r} is BYTES: expected strings, got {bad!r}")
        array = np.array(flat, dtype=object)
    else:
        try:
            array = np.array(data)
        except (ValueError, OverflowError) as exc:  # ragged nesting, or an integer beyond int64
            raise InvalidRequestError(
                f"input {spec.name!r}: 'data' is not a regular array of numbers ({exc})"
            ) from None
        kind = spec.dtype.kind
        if array.dtype == object and kind == "f":
            array = _with_missing(data)
        if array.dtype.kind not in ACCEPTED_KINDS[kind] and array.size:
            example = next((value for value in _flatten(data) if not _is_kind(value, kind)), data[:3])
            raise InvalidRequestError(
                f"input {spec.name!r} is {spec.datatype}: expected {KIND_NAMES[kind]}, got {example!r}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(spec.dtype)
        if kind == "f":
            check_finite(array, spec.name, model, data)  # a number beyond the datatype's range is infinite by now
    if array.size != count:
        raise InvalidRequestError(f"input {spec.name!r} has {array.size} values; its shape needs {count}")
    return array


def _with_missing(data: list[Any]) -> npt.NDArray[Any]:
    """JSON has no NaN: null stands for a missing number (allowed where the model imputes)."""
    flat = _flatten(data)
    # set(map(type, ...)) runs at C speed; numpy turns None into NaN for a float dtype, but it would also
    # parse "1.5" or True, so the types are checked first.
    if set(map(type, flat)) <= {float, int, type(None)}:
        return np.array(flat, dtype=np.float64)
    return np.array(flat, dtype=object)  # reported as "expected numbers" by the caller


def _flatten(data: list[Any]) -> list[Any]:
    if list not in set(map(type, data)):  # C speed; the common flat list returns here
        return data
    flat: list[Any] = []
    for value in data:
        flat.extend(_flatten(value) if isinstance(value, list) else [value])
    return flat


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "b":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (kind == "f" and isinstance(value, float))
