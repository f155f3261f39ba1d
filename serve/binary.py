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
SHORT_WALK_FROM = 8
"""Elements from which `_short_ascii_strings` pays: its proof costs ~0.5 us whatever the count. Measured
against the full walk: 2.4 against 1.8 us for one string, even at 8 (4.5 us), 35 against 46 us at 100."""


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
        # Class labels repeat: encode each distinct value once per call, then look every item up in C.
        items = array.ravel().tolist()
        encoded: dict[Any, bytes] = {}
        for item in set(items):
            raw = item if isinstance(item, bytes) else str(item).encode()
            encoded[item] = _LENGTH.pack(len(raw)) + raw
        return b"".join(map(encoded.__getitem__, items))
    return np.ascontiguousarray(array, dtype=V2_TO_NUMPY[datatype].newbyteorder("<")).tobytes()


def decode_strings(chunk: bytes, count: int) -> list[str] | None:
    """Exactly `count` BYTES elements as strings, or None if `chunk` is not that (see `_bytes_error` for why)."""
    if count >= SHORT_WALK_FROM and chunk.isascii():
        values = _short_ascii_strings(chunk, count)
        if values is not None:
            return values
    return _length_prefixed_strings(chunk, count)


def _short_ascii_strings(chunk: bytes, count: int) -> list[str] | None:
    """The usual case (category names: ASCII, under 256 characters) in fewer steps, or None for the full walk.

    Such an element's length prefix is one byte and three NULs. The walk reads only that byte, not a
    struct unpack per element; one count of NULs afterwards proves the other three were NULs, since the
    chunk then holds exactly theirs, the zero lengths' own and the strings'. For 100 short strings: 29 us
    for the walk, 35 with the proof, against 46 for the full walk (measured in process). Byte offsets are
    character offsets in ASCII: one decode, then slices.
    """
    source = chunk.decode("ascii")
    values: list[str] = []
    append = values.append
    offset = 0
    try:
        for _ in range(count):
            start = offset + 4
            offset = start + chunk[offset]
            append(source[start:offset])
    except IndexError:  # a prefix past the end
        return None
    if offset != len(chunk) or chunk.count(0) != 3 * count + values.count("") + "".join(values).count("\0"):
        return None
    return values


def _length_prefixed_strings(chunk: bytes, count: int) -> list[str] | None:
    """Any BYTES elements, by the book: each 4-byte length read whole. An element running past the end
    shows up as a length prefix that cannot be read or an offset that does not land on the end; what is
    wrong is explained only on refusal, by `_bytes_error` (a loop that checked and explained as it went
    cost 25 against 14 us for 100 short strings, measured on a faster day)."""
    source: str | bytes = chunk.decode("ascii") if chunk.isascii() else chunk
    values: list[Any] = []
    append = values.append
    unpack = _LENGTH.unpack_from
    offset = 0
    try:
        for _ in range(count):
            start = offset + 4
            offset = start + unpack(chunk, offset)[0]
            append(source[start:offset])
        if offset != len(chunk):
            return None
        return values if source is not chunk else [raw.decode() for raw in values]
    except (struct.error, UnicodeDecodeError):
        return None


def _decode_bytes(chunk: bytes, count: int, name: str) -> npt.NDArray[Any]:
    values = decode_strings(chunk, count)
    if values is None:
        raise _bytes_error(chunk, count, name)
    return np.array(values, dtype=object)


def _bytes_error(chunk: bytes, count: int, name: str) -> InvalidRequestError:
    """What is wrong with BYTES data that `decode_strings` refused: walk it again, element by element."""
    offset, size, seen = 0, len(chunk), 0
    while offset < size and seen < count:
        if offset + 4 > size:
            return InvalidRequestError(f"input {name!r}: BYTES element {seen} has a truncated length prefix")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > size:
            return InvalidRequestError(
                f"input {name!r}: BYTES element {seen} claims {length} bytes, only {size - offset} remain"
            )
        try:
            chunk[offset : offset + length].decode()
        except UnicodeDecodeError:
            return InvalidRequestError(f"input {name!r}: BYTES element {seen} is not valid UTF-8")
        offset += length
        seen += 1
    return InvalidRequestError(
        f"input {name!r}: binary data holds {seen} BYTES elements in {size} bytes, the shape needs {count}"
    )
