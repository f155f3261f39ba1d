"""The inference endpoints as plain ASGI apps: V2 infer, records, the seed article's /predict, and explain.

They are the hot path, so they run without Starlette's middleware and Request objects (measured:
Starlette's routing and middleware cost ~25 us of a ~56 us minimal JSON request on this stack). The
same objects are also mounted as Starlette routes, so behaviour does not depend on which way a
request arrives. Errors are rendered by serve/errors.py, as everywhere.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from serve import binary, explanations, protocol, records
from serve.access import RequestContext, finish, http_request_id
from serve.body import read_body
from serve.columns import Inputs, Outputs
from serve.errors import INTERNAL_ERROR, InvalidRequestError, ServeError, render
from serve.http import ON_DISCONNECT
from serve.repository import ModelEntry, ModelRepository
from serve.settings import Settings

logger = logging.getLogger("tabserve.inference")
JSON = b"application/json"
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]
Handler = Callable[[RequestContext, Scope, Receive], Awaitable[Reply]]


class InferenceEndpoint:
    """ASGI adapter: call `handle`, send one response, count it; ServeErrors become JSON errors."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        context = RequestContext("rest")
        try:
            status, body, headers = await self.handle(context, scope, receive)
            headers.append((b"content-length", str(len(body)).encode()))
        except ServeError as exc:
            status, headers, body = render(exc)
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            status, headers, body = render(INTERNAL_ERROR)
        state = scope["state"]
        logged = state["settings"].access_log
        identifier = http_request_id(scope["headers"], generate=logged)
        if identifier is not None:
            headers.append((b"x-request-id", identifier.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        log = (scope["method"], scope["path"], identifier) if logged else None
        finish(context, state["metrics"], status, time.perf_counter() - started, log)


def _quality_flags(entry: ModelEntry, feed: Any, rows: int, asked: Any) -> list[dict[str, list[str]]] | None:
    """Per row, the inputs that were missing, out of range or unseen: only when the request asks."""
    if not protocol.quality_requested(asked):
        return None
    if entry.quality is None:
        raise InvalidRequestError("input monitoring is off on this server (SERVE_QUALITY_MONITORING=false)")
    return entry.quality.flags(feed, rows)


def _query(scope: Scope, name: str) -> str | None:
    query = scope.get("query_string")
    if not query:  # the usual records request: no parsing on the hot path
        return None
    values = urllib.parse.parse_qs(query.decode("latin-1")).get(name)
    return values[-1] if values else None


def _context(scope: Scope) -> tuple[Settings, ModelRepository, dict[bytes, bytes]]:
    state = scope["state"]
    return state["settings"], state["repository"], dict(scope["headers"])


def _entry(repository: ModelRepository, scope: Scope) -> ModelEntry:
    params = scope["path_params"]
    return repository.get(params["model_name"], params.get("model_version"))


def score(
    context: RequestContext, scope: Scope, entry: ModelEntry, feed: Inputs, rows: int, timeout_s: float | None
) -> Awaitable[Outputs]:
    """The shared scorer, told of the client leaving by tabserve's HTTP protocol (absent under another server)."""
    context.rows = rows
    return scope["state"]["scorer"].score(entry, feed, rows, timeout_s, scope.get(ON_DISCONNECT))  # type: ignore[no-any-return]


async def _v2_request(
    context: RequestContext, scope: Scope, receive: Receive, scoring: bool
) -> tuple[ModelEntry, dict[str, Any], protocol.InferRequest]:
    """The model version, the JSON document and the validated request of a V2 body (JSON or binary);
    a request for `scoring` that its model's queue would refuse is refused before its body is read."""
    settings, repository, headers = _context(scope)
    entry = context.entry = _entry(repository, scope)
    if scoring:
        scope["state"]["scorer"].admit(entry)
    body = await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    length = headers.get(binary.HEADER)
    header, tail = binary.split_body(body, None if length is None else length.decode(errors="replace"))
    document = protocol.parse_json(header)
    return entry, document, protocol.parse_infer_request(document, entry.model, tail, settings.max_request_rows)


async def _infer(context: RequestContext, scope: Scope, receive: Receive) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/infer: JSON or Triton's binary tensor data."""
    entry, document, parsed = await _v2_request(context, scope, receive, scoring=True)
    flags = _quality_flags(entry, parsed.feed, parsed.rows, (document.get("parameters") or {}).get("quality"))
    outputs = await score(context, scope, entry, parsed.feed, parsed.rows, parsed.timeout_s)
    context.batch_rows = outputs.batch_rows
    extra = None if flags is None else {"quality": flags}
    content, header_length = protocol.render_infer_response(entry.model, parsed, outputs, extra)
    if header_length is None:
        return 200, content, [(b"content-type", JSON)]
    return 200, content, [(b"content-type", b"application/octet-stream"),
                          (binary.HEADER, str(header_length).encode())]  # fmt: skip


async def _predictions(
    context: RequestContext, scope: Scope, receive: Receive, entry: ModelEntry, quality: bool = True
) -> list[Any]:
    """Records in the body, scored by `entry`: one prediction per record (with `?quality=true` and
    `quality`, each carries its row's input flags)."""
    settings, _, headers = _context(scope)
    context.entry = entry
    scope["state"]["scorer"].admit(entry)
    body = await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    feed, rows = records.parse_instances(protocol.parse_json(body), entry.model, settings.max_request_rows)
    flags = _quality_flags(entry, feed, rows, _query(scope, "quality")) if quality else None
    outputs = await score(context, scope, entry, feed, rows, None)
    context.batch_rows = outputs.batch_rows
    predictions = records.render_predictions(entry.model, outputs)
    if flags is None:
        return predictions
    return [{**(item if isinstance(item, dict) else {"value": item}), "quality": flag}
            for item, flag in zip(predictions, flags, strict=True)]  # fmt: skip


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
    predictions = await _predictions(context, scope, receive, entry, quality=False)
    values = [item["label"] if isinstance(item, dict) else item for item in predictions]
    key = f"predicted_{entry.model.card['target'] or 'value'}"
    return 200, _dumps({key: values[0] if len(values) == 1 else values}), [(b"content-type", JSON)]


async def _explain(context: RequestContext, scope: Scope, receive: Receive) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/explain: V2 tensors in (validated as infer's), Shapley values out."""
    context.explain = True
    entry, document, parsed = await _v2_request(context, scope, receive, scoring=False)
    options = explanations.parse_options(document.get("parameters"), entry.model)
    context.rows = parsed.rows
    explainer: explanations.Explainer = scope["state"]["explainer"]
    explained = await explainer.explain(entry.model, parsed.feed, parsed.rows, options, parsed.timeout_s)
    if parsed.id is not None:
        explained["id"] = parsed.id
    return 200, _dumps(explained), [(b"content-type", JSON)]


async def _explain_records(context: RequestContext, scope: Scope, receive: Receive) -> Reply:
    """POST /v1/models/{name}[/versions/{version}]:explain with {"instances": [...]} as :predict takes them."""
    context.explain = True
    settings, repository, headers = _context(scope)
    entry = context.entry = _entry(repository, scope)
    body = await read_body(receive, headers, settings.max_body_bytes, settings.request_timeout_s)
    document = protocol.parse_json(body)
    feed, rows = records.parse_instances(document, entry.model, settings.max_request_rows)
    options = explanations.parse_options(document.get("parameters") if "instances" in document else None, entry.model)
    context.rows = rows
    explainer: explanations.Explainer = scope["state"]["explainer"]
    return 200, _dumps(await explainer.explain(entry.model, feed, rows, options)), [(b"content-type", JSON)]


infer = InferenceEndpoint(_infer)
explain = InferenceEndpoint(_explain)
explain_records = InferenceEndpoint(_explain_records)
predict_records = InferenceEndpoint(_predict_records)
predict_seed = InferenceEndpoint(_predict_seed)


def _dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
