"""Open Inference Protocol (KServe V2) infer requests and responses, as numpy feeds. All validation is here.

Every rejection says what was received and what was expected, and raises a ServeError with a 4xx status.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from serve import binary
from serve.batching import Column, Inputs
from serve.datatypes import V2_TO_NUMPY
from serve.errors import InvalidRequestError, PayloadTooLargeError
from serve.model import Feed, Model, TensorSpec

# numpy kinds a JSON array may arrive as, per target kind: JSON has no int/float split worth keeping,
# but booleans and strings never pass for numbers.
ACCEPTED_KINDS: dict[str, str] = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}
KIND_NAMES: dict[str, str] = {"f": "numbers", "i": "integers", "u": "integers", "b": "booleans"}
# Python types a small tensor's values may have, checked one by one (faster than numpy below ~64 values).
PYTHON_TYPES: dict[str, tuple[type, ...]] = {"f": (float, int), "i": (int,), "u": (int,)}
SMALL_TENSOR = 64
COLUMN = (-1, 1)
"""The shape of a one-feature input with a dynamic batch: what the exporter writes for every column."""


def _bounds(dtype: np.dtype[Any]) -> tuple[float, float]:
    # Exact integers for integer types: a float bound (2.0**63) would let 2**63 through into an int64.
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return float(info.min), float(info.max)
    limits = np.iinfo(dtype)
    return int(limits.min), int(limits.max)


BOUNDS: dict[str, tuple[float, float]] = {
    datatype: _bounds(dtype) for datatype, dtype in V2_TO_NUMPY.items() if dtype.kind in "fiu"
}
# Per numeric datatype: the Python types its plain JSON values may have, and its range. A value of such a
# type inside the range converts exactly and is never NaN or infinite (JSON has no such literals).
PLAIN_NUMBERS: dict[str, tuple[tuple[type, ...], float, float]] = {
    datatype: (PYTHON_TYPES[V2_TO_NUMPY[datatype].kind], low, high) for datatype, (low, high) in BOUNDS.items()
}
# Numeric datatypes whose binary data numpy can view in place: the wire is little-endian, so only on a
# little-endian machine (elsewhere the checked path swaps bytes).
BINARY_NUMBERS: dict[str, np.dtype[Any]] = (
    {datatype: dtype for datatype, dtype in V2_TO_NUMPY.items() if dtype.kind in "fiu"}
    if sys.byteorder == "little"
    else {}
)
# struct's codes for the same numeric datatypes: a small binary tensor unpacks straight into Python
# numbers, which the batcher converts with the rest of its batch. A numpy view, its finiteness check and
# its reshape cost ~2 us per tensor: measured, the 1-row penguin parse went from 19 to 11 us.
STRUCT_CODES: dict[str, str] = {
    "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b", "INT16": "h", "INT32": "i",
    "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d",
}  # fmt: skip


class InferRequest(NamedTuple):
    """A validated infer request. A tuple, not a dataclass: it is built once per request on the hot path."""

    id: str | None
    feed: Inputs
    rows: int
    outputs: tuple[tuple[str, bool], ...]
    """(output name, send as binary) in the order the response lists them."""
    timeout_s: float | None


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidRequestError("empty request body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson rejects NaN and Infinity literals too: JSON has no such numbers.
        raise InvalidRequestError(f"malformed JSON: {exc}") from None


def parse_infer_request(document: Any, model: Model, tail: bytes, max_rows: int) -> InferRequest:
    """Validate a V2 infer request against the model's inputs and build its feed."""
    common = _common_feed(document, model, tail)
    feed: Inputs
    feed, rows = _checked_feed(document, model, tail) if common is None else common
    check_rows(rows, max_rows)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequestError(f"'id' must be a string, got {_kind(request_id)}")
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise InvalidRequestError(f"'parameters' must be an object, got {_kind(parameters)}")
    return InferRequest(
        request_id,
        feed,
        rows,
        _requested_outputs(model, document.get("outputs"), bool(parameters.get("binary_data_output", False))),
        _timeout(parameters.get("timeout")),
    )


def _common_feed(document: Any, model: Model, tail: bytes) -> tuple[Inputs, int] | None:
    """The columns of a plain request (every input once, [n, 1] shapes, flat JSON data or binary data
    sizes and nothing else), or None.

    The common case pays for no error reporting: JSON columns stay the lists they arrived as (the
    batcher converts a whole batch's columns at once), small binary tensors become such lists too,
    larger binary numbers are views of the body. Anything unusual returns None and the request is
    parsed again by `_checked_feed`, which accepts a superset of these requests and explains rejections.
    """
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
        if type(name) is not str:
            return None
        spec = specs.get(name)
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
            if type(data) is not list or len(data) != count or count > SMALL_TENSOR:
                return None
            plain = PLAIN_NUMBERS.get(spec.datatype)
            if plain is not None:
                accepted, low, high = plain
                for value in data:
                    if type(value) not in accepted or not low <= value <= high:
                        # null is a missing value (numpy makes it NaN), where the model imputes one
                        if value is not None or not _accepts_missing(model, spec):
                            return None
            elif spec.datatype == "BYTES":
                for value in data:
                    if type(value) is not str:
                        return None
            else:
                return None
        if column is None:
            return None
        feed[name] = column
        rows = count
    if offset != len(tail):
        return None
    return feed, rows


def _plain_binary_column(
    model: Model, spec: TensorSpec, count: int, tail: bytes, offset: int, size: int
) -> Column | None:
    """`count` values of one input from `size` bytes of the tail, or None when not plain."""
    if count <= SMALL_TENSOR and spec.datatype in STRUCT_CODES:
        unpacker = _unpacker(spec.datatype, count)
        if size != unpacker.size:
            return None
        values = unpacker.unpack_from(tail, offset)
        _, low, high = PLAIN_NUMBERS[spec.datatype]
        for value in values:
            # NaN (value != value) is a missing value, where the model imputes one; infinities never.
            if not low <= value <= high and (value == value or not _accepts_missing(model, spec)):
                return None
        return list(values)
    dtype = BINARY_NUMBERS.get(spec.datatype)
    if dtype is not None:
        if size != count * dtype.itemsize:
            return None
        array = np.frombuffer(tail, dtype, count, offset)
        if dtype.kind == "f" and not np.isfinite(array).all() and not _only_missing(model, spec, array):
            return None
        return array.reshape(COLUMN)
    if spec.datatype == "BYTES":
        return binary.decode_strings(tail[offset : offset + size], count)
    return None  # BOOL and the like: rare enough for the checked path


@functools.lru_cache(maxsize=len(STRUCT_CODES) * SMALL_TENSOR)
def _unpacker(datatype: str, count: int) -> struct.Struct:
    return struct.Struct(f"<{count}{STRUCT_CODES[datatype]}")


def _checked_feed(document: Any, model: Model, tail: bytes) -> tuple[Feed, int]:
    """Validate every part of the request, raising an error that names the first problem."""
    if not isinstance(document, dict):
        raise InvalidRequestError(f"expected a JSON object with 'inputs', got {_kind(document)}")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequestError(f"'inputs' must be a non-empty list of tensors, got {_kind(inputs)}")
    feed: Feed = {}
    offset = 0
    rows: int | None = None
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise InvalidRequestError(f"inputs[{position}] must be a tensor object, got {_kind(tensor)}")
        spec = _input_spec(model, tensor.get("name"), feed)
        shape = _check_shape(spec, tensor.get("shape"), tensor.get("datatype"))
        count = math.prod(shape)
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(tail):
                raise InvalidRequestError(
                    f"input {spec.name!r}: binary_data_size {size!r} does not fit the {len(tail) - offset} bytes left"
                )
            array = binary.decode_tensor(tail[offset : offset + size], spec.datatype, count, spec.name)
            offset += size
            if array.dtype.kind == "f":
                check_missing_values(model, spec, array)
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
    missing = [spec.name for spec in model.inputs if spec.name not in feed]
    if missing:
        raise InvalidRequestError(
            f"missing input(s) {missing} for model {model.name!r}; it needs {_names(model.inputs)}"
        )
    assert rows is not None
    return feed, rows


def check_rows(rows: int, max_rows: int) -> None:
    if rows < 1:
        raise InvalidRequestError("the request has 0 rows; expected at least 1")
    if rows > max_rows:
        raise PayloadTooLargeError(f"the request has {rows} rows; the limit is {max_rows} per request")


def _accepts_missing(model: Model, spec: TensorSpec) -> bool:
    """Whether NaN may stand for a missing value in this input: a float one that the model imputes."""
    return spec.dtype.kind == "f" and bool(model.features.get(spec.name, {}).get("accepts_missing", False))


def _only_missing(model: Model, spec: TensorSpec, array: npt.NDArray[Any]) -> bool:
    """Whether an array's non-finite values are all NaN, in an input the model imputes."""
    return _accepts_missing(model, spec) and not np.isinf(array).any()


def check_missing_values(model: Model, spec: TensorSpec, array: npt.NDArray[Any]) -> None:
    """NaN means "missing": allowed only where the model imputes; infinities never."""
    if np.isfinite(array).all():
        return
    if np.isinf(array).any():
        raise InvalidRequestError(f"input {spec.name!r} contains an infinite value; expected finite numbers")
    if not _accepts_missing(model, spec):
        raise InvalidRequestError(
            f"input {spec.name!r} contains NaN (a missing value), but model {model.name!r} has no imputer for it"
        )


def render_infer_response(
    model: Model, request: InferRequest, outputs: Mapping[str, npt.NDArray[Any]]
) -> tuple[bytes, int | None]:
    """The V2 response body, and the JSON header's length when binary outputs follow it."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, as_binary in request.outputs:
        array = outputs[name]
        datatype = model.output_by_name[name].datatype
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": array.shape}
        if as_binary:
            raw = binary.encode_tensor(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            # reshape(-1) is C-contiguous, which orjson needs; strings are objects, which it does not take.
            flat = array.reshape(-1)
            entry["data"] = flat.tolist() if datatype == "BYTES" else flat
        tensors.append(entry)
    document: dict[str, Any] = {"model_name": model.name, "model_version": model.version_text, "outputs": tensors}
    if request.id is not None:
        document["id"] = request.id
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _input_spec(model: Model, name: Any, seen: Feed) -> TensorSpec:
    spec = model.input_by_name.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidRequestError(
            f"unexpected input {name!r} for model {model.name!r}; expected {_names(model.inputs)}"
        )
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
    if len(shape) != len(expected) or any(
        dim < 0 or (want >= 0 and dim != want) for dim, want in zip(shape, expected, strict=True)
    ):
        raise InvalidRequestError(
            f"input {spec.name!r}: shape {shape} does not match the model's {expected} (-1 = any)"
        )
    return shape


def _decode_json(model: Model, spec: TensorSpec, data: Any, count: int) -> npt.NDArray[Any]:
    if not isinstance(data, list):
        raise InvalidRequestError(f"input {spec.name!r}: 'data' must be a list, got {_kind(data)}")
    plain = PLAIN_NUMBERS.get(spec.datatype)
    if plain is not None and len(data) == count <= SMALL_TENSOR:
        # Fast path for the common small, flat request: plain Python numbers inside the datatype's range
        # convert exactly and cannot be NaN or infinite (JSON has no such literals), so no numpy check follows.
        accepted, low, high = plain
        for value in data:
            if type(value) not in accepted or not low <= value <= high:
                break
        else:
            return np.array(data, dtype=spec.dtype)
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
            array = _with_missing(data, spec)
        if array.dtype.kind not in ACCEPTED_KINDS[kind] and array.size:
            example = next((value for value in _flatten(data) if not _is_kind(value, kind)), data[:3])
            raise InvalidRequestError(
                f"input {spec.name!r} is {spec.datatype}: expected {KIND_NAMES[kind]}, got {example!r}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(spec.dtype)
        if kind == "f":
            check_missing_values(model, spec, array)
    if array.size != count:
        raise InvalidRequestError(f"input {spec.name!r} has {array.size} values; its shape needs {count}")
    return array


def _with_missing(data: list[Any], spec: TensorSpec) -> npt.NDArray[Any]:
    """JSON has no NaN: null stands for a missing number (allowed where the model imputes)."""
    flat = _flatten(data)
    # set(map(type, ...)) runs at C speed; numpy turns None into NaN for a float dtype, but it would also
    # parse "1.5" or True, so the types are checked first.
    if set(map(type, flat)) <= {float, int, type(None)}:
        return np.array(flat, dtype=np.float64)
    return np.array(flat, dtype=object)  # reported as "expected numbers" by the caller


def _requested_outputs(model: Model, outputs: Any, binary_default: bool) -> tuple[tuple[str, bool], ...]:
    if outputs is None:
        return _every_output(model.output_names, binary_default)
    if not isinstance(outputs, list) or not outputs:
        raise InvalidRequestError(f"'outputs' must be a non-empty list when given, got {_kind(outputs)}")
    requested = []
    for position, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if name not in model.output_by_name:
            raise InvalidRequestError(
                f"outputs[{position}] asks for {name!r}; model {model.name!r} has outputs {_names(model.outputs)}"
            )
        parameters = output.get("parameters") or {}
        requested.append((name, bool(parameters.get("binary_data", binary_default))))
    return tuple(requested)


@functools.lru_cache(maxsize=1024)
def _every_output(names: tuple[str, ...], as_binary: bool) -> tuple[tuple[str, bool], ...]:
    """The usual request names no outputs: the same tuple for each, built once."""
    return tuple((name, as_binary) for name in names)


def _timeout(value: Any) -> float | None:
    """tritonclient's `timeout` request parameter, in microseconds."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidRequestError(f"parameters.timeout must be a positive number of microseconds, got {value!r}")
    return value / 1e6


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


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {orjson.dumps(value, default=str)[:80].decode()}"


def _names(specs: tuple[TensorSpec, ...]) -> list[str]:
    return [spec.name for spec in specs]
