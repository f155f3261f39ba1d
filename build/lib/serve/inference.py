"""The inference endpoints as plain ASGI apps: V2 infer, records, and the seed article's /predict.

They are the hot path, so they run without Starlette's middleware and Request objects (measured:
Starlette's routing and middleware cost ~25 us of a ~56 us minimal JSON request on this stack). The
same objects are also mounted as Starlette routes, so behaviour does not depend on which way a
request arrives. Each renders its own errors in the one JSON shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from serve import binary, protocol, records
from serve.batching import Feed
from serve.body import read_body
from serve.errors import DeadlineExceededError, ServeError
from serve.repository import ModelEntry, ModelRepository
from serve.settings import Settings

logger = logging.getLogger("tabserve.inference")
JSON = b"application/json"
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]


class ClientDisconnectedError(ServeError):
    status = 499  # type: ignore[assignment]  # nginx's "client closed request": nobody reads this answer


class InferenceEndpoint:
    """ASGI adapter: read the scope, call `handle`, send one response; ServeErrors become JSON errors."""

    def __init__(self, handle: Callable[[Scope, Receive], Awaitable[Reply]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, headers = await self.handle(scope, receive)
        except ServeError as exc:
            status, body = int(exc.status), orjson.dumps({"error": exc.message})
            headers = [(b"content-type", JSON), *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            status, body, headers = (
                500,
                b'{"error":"internal server error; see the server log"}',
                [(b"content-type", JSON)],
            )
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _context(scope: Scope) -> tuple[Settings, ModelRepository, dict[bytes, bytes]]:
    state = scope["state"]
    return state["settings"], state["repository"], dict(scope["headers"])


def _entry(repository: ModelRepository, scope: Scope) -> ModelEntry:
    params = scope["path_params"]
    return repository.get(params["model_name"], params.get("model_version"))


async def _infer(scope: Scope, receive: Receive) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/infer: JSON or Triton's binary tensor data."""
    settings, repository, headers = _context(scope)
    entry = _entry(repository, scope)
    body = await read_body(receive, headers, settings.max_body_bytes)
    length = headers.get(b"inference-header-content-length")
    header, tail = binary.split_body(body, None if length is None else length.decode(errors="replace"))
    parsed = protocol.parse_infer_request(protocol.parse_json(header), entry.model, tail, settings.max_request_rows)
    outputs = await score(receive, settings, entry, parsed.feed, parsed.rows, parsed.timeout_s)
    content, header_length = protocol.render_infer_response(entry.model, parsed, outputs)
    if header_length is None:
        return 200, content, [(b"content-type", JSON)]
    return 200, content, [(b"content-type", b"application/octet-stream"),
                          (b"inference-header-content-length", str(header_length).encode())]  # fmt: skip


async def _predict_records(scope: Scope, receive: Receive) -> Reply:
    """POST /v1/models/{name}[/versions/{version}]:predict with {"instances": [{...}, ...]}."""
    settings, repository, headers = _context(scope)
    entry = _entry(repository, scope)
    document = protocol.parse_json(await read_body(receive, headers, settings.max_body_bytes))
    feed, rows = records.parse_instances(document, entry.model, settings.max_request_rows)
    outputs = await score(receive, settings, entry, feed, rows, None)
    return 200, _dumps(records.render_predictions(entry.model, outputs)), [(b"content-type", JSON)]


async def _predict_seed(scope: Scope, receive: Receive) -> Reply:
    """The seed article's endpoint on the default model: {"age": 35} -> {"predicted_weight": 75.0}."""
    settings, repository, headers = _context(scope)
    entry = repository.get(settings.default_model)
    document = protocol.parse_json(await read_body(receive, headers, settings.max_body_bytes))
    feed, rows = records.parse_instances(document, entry.model, settings.max_request_rows)
    predictions = records.render_predictions(entry.model, await score(receive, settings, entry, feed, rows, None))
    values = [item["label"] if isinstance(item, dict) else item for item in predictions["predictions"]]
    key = f"predicted_{entry.model.card.get('target') or 'value'}"
    return 200, _dumps({key: values[0] if rows == 1 else values}), [(b"content-type", JSON)]


infer = InferenceEndpoint(_infer)
predict_records = InferenceEndpoint(_predict_records)
predict_seed = InferenceEndpoint(_predict_seed)


async def score(
    receive: Receive, settings: Settings, entry: ModelEntry, feed: Feed, rows: int, timeout_s: float | None
) -> Feed:
    """Queue the request and wait for its rows, within its deadline and only while its client is there."""
    budget = settings.request_timeout_s if timeout_s is None else min(timeout_s, settings.request_timeout_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    # Watch the connection only when the wait will outlast the next batch: a watcher task per request
    # costs more than a small model's share of a batch.
    watch = entry.batcher.depth >= settings.max_batch_size
    future = entry.batcher.submit(feed, rows, deadline, entry.model.signature)
    # One timer handle, not asyncio.timeout(): the batcher skips a future that is already done.
    timer = loop.call_at(deadline, _expire, future, budget)
    try:
        return await (_unless_disconnected(receive, future) if watch else future)
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[Feed], budget: float) -> None:
    if not future.done():
        future.set_exception(DeadlineExceededError(f"no answer within the request deadline of {budget * 1000:.0f} ms"))


async def _unless_disconnected(receive: Receive, future: asyncio.Future[Feed]) -> Feed:
    watcher: asyncio.Future[None] = asyncio.ensure_future(_disconnected(receive))
    try:
        waiting: set[asyncio.Future[Any]] = {future, watcher}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        future.cancel()  # the batcher drops it before running
        raise ClientDisconnectedError("the client closed the connection before its request ran")
    finally:
        watcher.cancel()
        if not future.done():
            future.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
