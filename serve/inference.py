"""The inference endpoints as plain ASGI apps: V2 infer, records, and the seed article's /predict.

They are the hot path, so they run without Starlette's middleware and Request objects (measured:
Starlette's routing and middleware cost ~25 us of a ~56 us minimal JSON request on this stack). The
same objects are also mounted as Starlette routes, so behaviour does not depend on which way a
request arrives. Errors are rendered by serve/errors.py, as everywhere.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from serve import binary, protocol, records
from serve.body import read_body
from serve.cache import MAX_CACHED_ROWS, ResponseCache, canonical_key
from serve.columns import Inputs, Outputs
from serve.errors import INTERNAL_ERROR, ClientDisconnectedError, ServeError, render
from serve.http import ON_DISCONNECT
from serve.metrics import UNRESOLVED
from serve.repository import ModelEntry, ModelRepository
from serve.settings import Settings

logger = logging.getLogger("tabserve.inference")
access_logger = logging.getLogger("tabserve.access")
JSON = b"application/json"
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]


@dataclass(slots=True)
class RequestContext:
    """What one inference request learns on its way, for its metrics and its access-log line."""

    entry: ModelEntry | None = None
    """The model version it resolved to, once it has."""
    rows: int | None = None
    batch_rows: int | None = None
    """Rows in the batch it was scored in (0: answered from the cache)."""


Handler = Callable[[RequestContext, Scope, Receive], Awaitable[Reply]]


class InferenceEndpoint:
    """ASGI adapter: call `handle`, send one response, count it; ServeErrors become JSON errors."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        context = RequestContext()
        try:
            status, body, headers = await self.handle(context, scope, receive)
            headers.append((b"content-length", str(len(body)).encode()))
        except ServeError as exc:
            status, headers, body = render(exc)
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            status, headers, body = render(INTERNAL_ERROR)
        logged = scope["state"]["settings"].access_log
        request_id = _request_id(scope, generate=logged)
        if request_id is not None:
            headers.append((b"x-request-id", request_id))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - started
        if context.entry is not None:
            context.entry.metrics.request(status, seconds)
        else:  # no model resolved (404 and the like)
            scope["state"]["metrics"].requests_for(UNRESOLVED)(status, seconds)
        if logged:
            _log_access(scope, request_id, context, status, seconds)


def _context(scope: Scope) -> tuple[Settings, ModelRepository, dict[bytes, bytes]]:
    state = scope["state"]
    return state["settings"], state["repository"], dict(scope["headers"])


def _entry(repository: ModelRepository, scope: Scope) -> ModelEntry:
    params = scope["path_params"]
    return repository.get(params["model_name"], params.get("model_version"))


_request_ids = itertools.count(1)
_PROCESS_TAG = f"{os.getpid():x}"


def _request_id(scope: Scope, generate: bool) -> bytes | None:
    """The client's X-Request-ID (up to 128 printable characters), echoed; else, when there is an access
    log for it to point into, a new one unique to this process."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii() and value.decode().isprintable():
            return bytes(value)
    return f"{_PROCESS_TAG}-{next(_request_ids)}".encode() if generate else None


def _log_access(scope: Scope, request_id: bytes | None, context: RequestContext, status: int, seconds: float) -> None:
    """One JSON line; never the body, never a header value other than the request id."""
    entry = context.entry
    record = {
        "request_id": request_id.decode() if request_id else None,
        "method": scope["method"],
        "path": scope["path"],
        "model": entry.model.name if entry else None,
        "version": entry.model.version if entry else None,
        "rows": context.rows,
        "batch_rows": context.batch_rows,
        "status": status,
        "latency_ms": round(seconds * 1000, 3),
    }
    access_logger.info(orjson.dumps(record).decode())


async def _infer(context: RequestContext, scope: Scope, receive: Receive) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/infer: JSON or Triton's binary tensor data."""
    settings, repository, headers = _context(scope)
    entry = context.entry = _entry(repository, scope)
    body = await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    length = headers.get(binary.HEADER)
    header, tail = binary.split_body(body, None if length is None else length.decode(errors="replace"))
    parsed = protocol.parse_infer_request(protocol.parse_json(header), entry.model, tail, settings.max_request_rows)
    outputs = await score(context, scope, settings, entry, parsed.feed, parsed.rows, parsed.timeout_s)
    context.batch_rows = outputs.batch_rows
    content, header_length = protocol.render_infer_response(entry.model, parsed, outputs)
    if header_length is None:
        return 200, content, [(b"content-type", JSON)]
    return 200, content, [(b"content-type", b"application/octet-stream"),
                          (binary.HEADER, str(header_length).encode())]  # fmt: skip


async def _predictions(context: RequestContext, scope: Scope, receive: Receive, entry: ModelEntry) -> list[Any]:
    """Records in the body, scored by `entry`: one prediction per record."""
    settings, _, headers = _context(scope)
    context.entry = entry
    body = await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    feed, rows = records.parse_instances(protocol.parse_json(body), entry.model, settings.max_request_rows)
    outputs = await score(context, scope, settings, entry, feed, rows, None)
    context.batch_rows = outputs.batch_rows
    return records.render_predictions(entry.model, outputs)


async def _predict_records(context: RequestContext, scope: Scope, receive: Receive) -> Reply:
    """POST /v1/models/{name}[/versions/{version}]:predict with {"instances": [{...}, ...]}."""
    entry = _entry(scope["state"]["repository"], scope)
    predictions = await _predictions(context, scope, receive, entry)
    document = {"model_name": entry.model.name, "model_version": entry.model.version_text, "predictions": predictions}
    return 200, _dumps(document), [(b"content-type", JSON)]


async def _predict_seed(context: RequestContext, scope: Scope, receive: Receive) -> Reply:
    """The seed article's endpoint on the default model: {"age": 35} -> {"predicted_weight": 75.0}."""
    state = scope["state"]
    entry = state["repository"].get(state["settings"].default_model)
    predictions = await _predictions(context, scope, receive, entry)
    values = [item["label"] if isinstance(item, dict) else item for item in predictions]
    key = f"predicted_{entry.model.card['target'] or 'value'}"
    return 200, _dumps({key: values[0] if len(values) == 1 else values}), [(b"content-type", JSON)]


infer = InferenceEndpoint(_infer)
predict_records = InferenceEndpoint(_predict_records)
predict_seed = InferenceEndpoint(_predict_seed)


def score(
    context: RequestContext,
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
    context.rows = rows
    cache: ResponseCache | None = scope["state"]["cache"]
    if cache is None or rows > MAX_CACHED_ROWS:
        future = _submit(scope, settings, entry, feed, rows, timeout_s)
    else:
        started = time.perf_counter_ns()
        key = canonical_key(entry.model.identity, entry.model.signature, feed)
        found = cache.get(key)
        entry.metrics.parent.cache.labels("hit" if found is not None else "miss").inc()
        lookup = entry.statistics.cache_hit if found is not None else entry.statistics.cache_miss
        lookup.add(time.perf_counter_ns() - started)
        if found is not None:
            future = asyncio.get_running_loop().create_future()
            future.set_result(found)
        else:
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
