"""What every answered inference request leaves behind, whichever front end took it: its count and
latency in the metrics, and (when on) one JSON access-log line."""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass

import orjson

from serve.metrics import UNRESOLVED, Metrics
from serve.repository import ModelEntry

access_logger = logging.getLogger("tabserve.access")
MAX_REQUEST_ID = 128
_request_ids = itertools.count(1)
_PROCESS_TAG = f"{os.getpid():x}"


@dataclass(slots=True)
class RequestContext:
    """What one inference request learns on its way, for its metrics and its access-log line."""

    protocol: str
    """"rest" or "grpc"."""
    entry: ModelEntry | None = None
    """The model version it resolved to, once it has."""
    rows: int | None = None
    batch_rows: int | None = None
    """Rows in the batch it was scored in (0: answered from the cache)."""
    explain: bool = False
    """An explanation, not an inference: counted apart, so inference's latency stays inference's."""


def request_id(presented: bytes | str | None, generate: bool) -> str | None:
    """The client's request id (up to 128 printable ASCII characters), echoed; else, when there is an access
    log for it to point into, a new one unique to this process."""
    if presented is not None:
        text = presented.decode("latin-1") if isinstance(presented, bytes) else presented
        if 0 < len(text) <= MAX_REQUEST_ID and text.isascii() and text.isprintable():
            return text
    return f"{_PROCESS_TAG}-{next(_request_ids)}" if generate else None


def http_request_id(headers: list[tuple[bytes, bytes]], generate: bool = False) -> str | None:
    """`request_id` of the X-Request-ID among an ASGI scope's `headers`. A refusal before any endpoint (auth,
    the in-flight limit) generates none: it writes no access-log line for one to point into."""
    for key, value in headers:  # a loop, not next() over a generator: this runs on every inference request
        if key == b"x-request-id":
            return request_id(bytes(value), generate)
    return request_id(None, generate)


def finish(
    context: RequestContext, metrics: Metrics, status: int, seconds: float, log: tuple[str, str, str | None] | None
) -> None:
    """Count the answer; with `log` = (method, path, request id), write its access-log line.

    One JSON line; never the body, never a header or metadata value other than the request id.
    """
    entry = context.entry
    if context.explain:
        metrics.explain_answered(entry.model.name if entry else "", status, seconds)
    elif entry is not None:
        entry.metrics.requests[context.protocol](status, seconds)
    else:  # no model resolved (404 and the like)
        metrics.requests_for(UNRESOLVED, context.protocol)(status, seconds)
    if log is None:
        return
    method, path, identifier = log
    record = {
        "request_id": identifier,
        "protocol": context.protocol,
        "method": method,
        "path": path,
        "model": entry.model.name if entry else None,
        "version": entry.model.version if entry else None,
        "rows": context.rows,
        "batch_rows": context.batch_rows,
        "status": status,
        **({"explain": True} if context.explain else {}),
        "latency_ms": round(seconds * 1000, 3),
    }
    access_logger.info(orjson.dumps(record).decode())
