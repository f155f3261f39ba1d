"""The inference endpoints as plain ASGI apps: V2 infer, records, and the seed article's /predict.

They are the hot path, so they run without Starlette's middleware and Request objects (measured:
Starlette's routing and middleware cost ~25 us of a ~56 us minimal JSON request on this stack). The
same objects are also mounted as Starlette routes, so behaviour does not depend on which way a
request arrives. Each renders its own errors in the one JSON shape.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from serve import binary, protocol, records
from serve.batching import Inputs, Outputs
from serve.body import read_body
from serve.cache import MAX_CACHED_ROWS, ResponseCache, canonical_key
from serve.errors import ServeError
from serve.http import ON_DISCONNECT
from serve.metrics import UNRESOLVED
from serve.repository import ModelEntry, ModelRepository
from serve.settings import Settings

logger = logging.getLogger("tabserve.inference")
access_logger = logging.getLogger("tabserve.access")
JSON = b"application/json"
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]


class ClientDisconnectedError(ServeError):
    status = 499  # type: ignore[assignment]  # nginx's "client closed request": nobody reads this answer


class InferenceEndpoint:
    """ASGI adapter: call `handle`, send one response, count it; ServeErrors become JSON errors."""

    def __init__(self, handle: Callable[[Scope, Receive], Awaitable[Reply]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            status, body, headers = await self.handle(scope, receive)
        except ServeError as exc:
            status, body = int(exc.status), orjson.dumps({"error": exc.message})
            headers = [(b"content-type", JSON), *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            status, body = 500, b'{"error":"internal server error; see the server log"}'
            headers = [(b"content-type", JSON)]
        headers.append((b"content-length", str(len(body)).encode()))
        logged = scope["state"]["settings"].access_log
        request_id = _request_id(scope, generate=logged)
        if request_id is not None:
            headers.append((b"x-request-id", request_id))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - started
        entry: ModelEntry | None = scope.get("tabserve.entry")
        if entry is not None:
            entry.metrics.request(status, seconds)
        else:  # no model resolved (404 and the like)
            scope["state"]["metrics"].requests_for(UNRESOLVED)(status, seconds)
        if logged:
            _log_access(scope, request_id, entry, status, seconds)


def _context(scope: Scope) -> tuple[Settings, ModelRepository, dict[bytes, bytes]]:
    state = scope["state"]
    return state["settings"], state["repository"], dict(scope["headers"])


def _entry(repository: ModelRepository, scope: Scope) -> ModelEntry:
    params = scope["path_params"]
    entry = scope["tabserve.entry"] = repository.get(params["model_name"], params.get("model_version"))
    return entry


_request_ids = itertools.count(1)
_PROCESS_TAG = f"{os.getpid():x}"


def _request_id(scope: Scope, generate: bool) -> bytes | None:
    """The client's X-Request-ID (up to 128 printable characters), echoed; else, when there is an access
    log for it to point into, a new one unique to this process."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii() and value.decode().isprintable():
            return bytes(value)
    return f"{_PROCESS_TAG}-{next(_request_ids)}".encode() if generate else None


def _log_access(scope: Scope, request_id: bytes | None, entry: ModelEntry | None, status: int, seconds: float) -> None:
    """One JSON line; never the body, never a header value other than the request id."""
    record = {
        "request_id": request_id.decode() if request_id else None,
        "method": scope["method"],
        "path": scope["path"],
        "model": entry.model.name if entry else None,
        "version": entry.model.version if entry else None,
        "rows": scope.get("tabserve.rows"),
        "batch_rows": scope.get("tabserve.batch_rows"),
        "status": status,
        "latency_ms": round(seconds * 1000, 3),
    }
    access_logger.info(orjson.dumps(record).decode())


async def _infer(scope: Scope, receive: Receive) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/infer: JSON or Triton's binary tensor data."""
    settings, repository, headers = _context(scope)
    entry = _entry(repository, scope)
    body = await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    length = headers.get(binary.HEADER)
    header, tail = binary.split_body(body, None if length is None else length.decode(errors="replace"))
    parsed = protocol.parse_infer_request(protocol.parse_json(header), entry.model, tail, settings.max_request_rows)
    outputs = await score(scope, settings, entry, parsed.feed, parsed.rows, parsed.timeout_s)
    scope["tabserve.batch_rows"] = outputs.batch_rows
    content, header_length = protocol.render_infer_response(entry.model, parsed, outputs)
    if header_length is None:
        return 200, content, [(b"content-type", JSON)]
    return 200, content, [(b"content-type", b"application/octet-stream"),
                          (binary.HEADER, str(header_length).encode())]  # fmt: skip


async def _predict_records(scope: Scope, receive: Receive) -> Reply:
    """POST /v1/models/{name}[/versions/{version}]:predict with {"instances": [{...}, ...]}."""
    settings, repository, headers = _context(scope)
    entry = _entry(repository, scope)
    document = protocol.parse_json(
        await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    )
    feed, rows = records.parse_instances(document, entry.model, settings.max_request_rows)
    outputs = await score(scope, settings, entry, feed, rows, None)
    scope["tabserve.batch_rows"] = outputs.batch_rows
    return 200, _dumps(records.render_predictions(entry.model, outputs)), [(b"content-type", JSON)]


async def _predict_seed(scope: Scope, receive: Receive) -> Reply:
    """The seed article's endpoint on the default model: {"age": 35} -> {"predicted_weight": 75.0}."""
    settings, repository, headers = _context(scope)
    entry = scope["tabserve.entry"] = repository.get(settings.default_model)
    document = protocol.parse_json(
        await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    )
    feed, rows = records.parse_instances(document, entry.model, settings.max_request_rows)
    outputs = await score(scope, settings, entry, feed, rows, None)
    scope["tabserve.batch_rows"] = outputs.batch_rows
    predictions = records.render_predictions(entry.model, outputs)
    values = [item["label"] if isinstance(item, dict) else item for item in predictions["predictions"]]
    key = f"predicted_{entry.model.card.get('target') or 'value'}"
    return 200, _dumps({key: values[0] if rows == 1 else values}), [(b"content-type", JSON)]


infer = InferenceEndpoint(_infer)
predict_records = InferenceEndpoint(_predict_records)
predict_seed = InferenceEndpoint(_predict_seed)


def score(
    scope: Scope,
    settings: Settings,
    entry: ModelEntry,
    feed: Inputs,
    rows: int,
    timeout_s: float | None,
) -> asyncio.Future[Outputs]:
    """The request's future outputs: from the cache when it holds them, else from a batch.

    A plain function handing back a future, not a coroutine: each coroutine layer on the hot path
    costs a suspension and a resumption per request.
    """
    scope["tabserve.rows"] = rows
    cache: ResponseCache | None = scope["state"]["cache"]
    if cache is None or rows > MAX_CACHED_ROWS:
        return _submit(scope, settings, entry, feed, rows, timeout_s)
    key = canonical_key(entry.model.identity, entry.model.signature, feed)
    found = cache.get(key)
    entry.metrics.parent.cache.labels("hit" if found is not None else "miss").inc()
    if found is not None:
        answered: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        answered.set_result(found)
        return answered
    future = _submit(scope, settings, entry, feed, rows, timeout_s)
    future.add_done_callback(functools.partial(_keep, cache, key, rows))
    return future


def _submit(
    scope: Scope, settings: Settings, entry: ModelEntry, feed: Inputs, rows: int, timeout_s: float | None
) -> asyncio.Future[Outputs]:
    budget = settings.request_timeout_s if timeout_s is None else min(timeout_s, settings.request_timeout_s)
    deadline = asyncio.get_running_loop().time() + budget
    future = entry.batcher.submit(feed, rows, deadline, entry.model.signature)  # it enforces the deadline
    on_disconnect = scope.get(ON_DISCONNECT)
    if on_disconnect is not None:  # tabserve's own HTTP protocol; under another server, abandoned requests run
        on_disconnect(functools.partial(_abandon, future))
    return future


def _abandon(future: asyncio.Future[Outputs]) -> None:
    """The client left: the batcher skips a request that is done, so it never runs."""
    if not future.done():
        future.set_exception(ClientDisconnectedError("the client closed the connection before its request ran"))


def _keep(cache: ResponseCache, key: bytes, rows: int, future: asyncio.Future[Outputs]) -> None:
    if not future.cancelled() and future.exception() is None:
        cache.put(key, future.result(), rows)


def _dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
