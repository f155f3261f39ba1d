"""Triton's binary tensor data extension: a JSON header, then raw tensor bytes, split by a header length.

Numeric tensors are little-endian, row-major; BYTES elements are each a 4-byte little-endian length
followed by the bytes (docs: triton-inference-server/server docs/protocol/extension_binary_data.md).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from serve.datatypes import V2_TO_NUMPY
from serve.errors import InvalidRequestError

HEADER = b"inference-header-content-length"  # as ASGI delivers header names: lower-case bytes
_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """Separate the JSON header from the binary tail; no header length means all JSON."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit():
        raise InvalidRequestError(f"Inference-Header-Content-Length must be a byte count, got {header_length!r}")
    length = int(header_length)
    if length > len(body):
        raise InvalidRequestError(
            f"Inference-Header-Content-Length is {length} but the body has only {len(body)} bytes"
        )
    return body[:length], body[length:]


def decode_tensor(chunk: bytes, datatype: str, count: int, name: str) -> npt.NDArray[Any]:
    """Raw bytes of one input as a flat array of `count` elements."""
    if datatype == "BYTES":
        return _decode_bytes(chunk, count, name)
    dtype = V2_TO_NUMPY[datatype].newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise InvalidRequestError(
            f"input {name!r}: binary_data_size is {len(chunk)} bytes, but {count} {datatype} values take "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(chunk, dtype=dtype)


def encode_tensor(array: npt.NDArray[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        # Class labels repeat: encode each distinct value once per call.
        encoded: dict[Any, bytes] = {}
        for item in array.ravel().tolist():
            if item not in encoded:
                raw = item if isinstance(item, bytes) else str(item).encode()
                encoded[item] = _LENGTH.pack(len(raw)) + raw
        return b"".join([encoded[item] for item in array.ravel().tolist()])
    return np.ascontiguousarray(array, dtype=V2_TO_NUMPY[datatype].newbyteorder("<")).tobytes()


def _decode_bytes(chunk: bytes, count: int, name: str) -> npt.NDArray[Any]:
    values: list[str] = []
    append = values.append
    unpack = _LENGTH.unpack_from
    decoded: dict[bytes, str] = {}  # categories repeat: decode each distinct value once
    offset, size = 0, len(chunk)
    while offset < size and len(values) < count:
        if offset + 4 > size:
            raise InvalidRequestError(f"input {name!r}: BYTES element {len(values)} has a truncated length prefix")
        (length,) = unpack(chunk, offset)
        offset += 4
        end = offset + length
        if end > size:
            raise InvalidRequestError(
                f"input {name!r}: BYTES element {len(values)} claims {length} bytes, only {size - offset} remain"
            )
        raw = chunk[offset:end]
        text = decoded.get(raw)
        if text is None:
            try:
                text = decoded[raw] = raw.decode()
            except UnicodeDecodeError:
                raise InvalidRequestError(f"input {name!r}: BYTES element {len(values)} is not valid UTF-8") from None
        append(text)
        offset = end
    if len(values) != count or offset != size:
        raise InvalidRequestError(
            f"input {name!r}: binary data holds {len(values)} BYTES elements in {size} bytes, the shape needs {count}"
        )
    return np.array(values, dtype=object)
