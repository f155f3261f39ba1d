"""Reading request bodies at the ASGI level, within a byte limit, compressed ones included."""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import Message, Receive

from serve.errors import InvalidRequestError, PayloadTooLargeError, RequestTimeoutError

# Content-Encoding -> zlib wbits (tritonclient can send gzip or deflate bodies).
DECODERS: dict[str, int] = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(receive: Receive, headers: dict[bytes, bytes], max_bytes: int, timeout_s: float = 30.0) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `max_bytes` (before reading it all).

    A body that arrives in pieces must be complete within `timeout_s` (408 otherwise): a client
    trickling bytes cannot hold a request open. One-message bodies, the usual case, set no timer.
    """
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError(f"Content-Length must be a byte count, got {declared.decode(errors='replace')!r}")
        if int(declared) > max_bytes:
            raise PayloadTooLargeError(f"the body has {int(declared)} bytes; the limit is {max_bytes}")
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body = message.get("body", b"")
        if len(body) > max_bytes:
            raise PayloadTooLargeError(f"the body exceeds the limit of {max_bytes} bytes")
    else:
        try:
            async with asyncio.timeout(timeout_s):
                body = await _read_rest(receive, message, max_bytes)
        except TimeoutError:
            raise RequestTimeoutError(f"the body did not arrive within {timeout_s:g} s") from None
    encoding = headers.get(b"content-encoding")
    return (
        body
        if encoding is None or encoding == b"identity"
        else _decompress(body, encoding.decode("latin-1"), max_bytes)
    )


async def _read_rest(receive: Receive, message: Message, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    received = 0
    while True:
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("the client disconnected while sending the body")
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLargeError(f"the body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def _decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Inflate with the same limit on the output, so a small bomb cannot become a large body."""
    wbits = DECODERS.get(encoding.lower())
    if wbits is None:
        raise InvalidRequestError(f"unsupported Content-Encoding {encoding!r}; expected one of {sorted(DECODERS)}")
    decoder = zlib.decompressobj(wbits)
    try:
        data = decoder.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidRequestError(f"the body is not valid {encoding}: {exc}") from None
    if len(data) > max_bytes or decoder.unconsumed_tail:
        raise PayloadTooLargeError(f"the body inflates beyond the limit of {max_bytes} bytes")
    return data
