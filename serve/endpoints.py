"""Thin handlers for everything but inference (see inference.py): health, metadata, config, statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from serve import descriptions, drift, fleet
from serve.body import read_body
from serve.errors import InvalidRequestError, ModelNotFoundError, ModelNotReadyError
from serve.metrics import Metrics
from serve.openapi import openapi_document
from serve.protocol import parse_json
from serve.repository import ModelEntry, ModelRepository
from serve.settings import Settings


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code, media_type="application/json"
    )


def _repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.state.repository
    return repository


def _entry(request: Request) -> ModelEntry:
    params = request.path_params
    return _repository(request).get(params["model_name"], params.get("model_version"))


PLAYGROUND = Path(__file__).with_name("static") / "index.html"


async def playground(request: Request) -> Response:
    """The playground page; its script and stylesheet are under /static, nothing comes from elsewhere."""
    return Response(PLAYGROUND.read_bytes(), media_type="text/html; charset=utf-8")


async def openapi(request: Request) -> Response:
    repository = _repository(request)
    names = sorted({entry.model.name for entry in repository.entries()})
    versions = sorted({str(entry.model.version) for entry in repository.entries()}, key=int)
    return json_response(openapi_document(names, versions))


async def server_live(request: Request) -> Response:
    return json_response({"live": True})


async def server_ready(request: Request) -> Response:
    ready = request.state.lifecycle.ready and len(_repository(request)) > 0
    return json_response({"ready": ready}, 200 if ready else 503)


async def server_metadata(request: Request) -> Response:
    return json_response(descriptions.server_metadata())


async def model_ready(request: Request) -> Response:
    entry = _entry(request)
    if not request.state.lifecycle.ready:
        raise ModelNotReadyError(f"model {entry.model.name!r} is draining for shutdown")
    return json_response({"name": entry.model.name, "ready": True})


async def model_metadata(request: Request) -> Response:
    model = _entry(request).model
    return json_response(descriptions.model_metadata(model, _repository(request).versions(model.name)))


async def model_golden(request: Request) -> Response:
    """The golden vectors (inputs with scikit-learn's outputs): what load tests and other runtimes check against."""
    model = _entry(request).model
    if model.golden is None:
        raise ModelNotFoundError(f"model {model.name!r} version {model.version} has no golden vectors")
    return json_response(model.golden)


async def model_config(request: Request) -> Response:
    """Triton's model configuration, as tritonclient.get_model_config and perf_analyzer read it."""
    return json_response(descriptions.model_config(_entry(request).model, request.state.settings))


async def model_stats(request: Request) -> Response:
    """Triton's statistics extension for one version, every version of a model, or every model."""
    params = request.path_params
    stats = descriptions.model_statistics(_repository(request), params.get("model_name"), params.get("model_version"))
    return json_response({"model_stats": stats})


async def model_quality(request: Request) -> Response:
    """What callers sent this version, against its training reference: counts, recent window, PSI, status."""
    entry = _entry(request)
    if entry.quality is None:
        raise ModelNotFoundError("input monitoring is off on this server (SERVE_QUALITY_MONITORING=false)")
    entry.quality.publish()
    registry: Metrics = request.state.metrics
    settings: Settings = request.state.settings
    document = drift.report(entry.quality, entry.model.name, entry.model.version, registry.families(),
                            settings.quality_window_rows)  # fmt: skip
    return json_response(document)


async def metrics(request: Request) -> Response:
    """Prometheus exposition of every tabserve metric."""
    registry: Metrics = request.state.metrics
    repository = _repository(request)
    for entry in repository.entries():
        entry.metrics.queue_depth(entry.batcher.depth)
    repository.publish_quality()  # count what is pending, so that a scrape sees every row answered before it
    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)


async def repository_index(request: Request) -> Response:
    """Triton's repository index: every version with its state, refused ones with the reason."""
    repository = _repository(request)
    options, body = await _optional_json(request)
    if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
        raise InvalidRequestError(f'expected an object like {{"ready": true}}, got {body[:80]!r}')
    return json_response(descriptions.repository_index(repository, options.get("ready", False)))


async def repository_load(request: Request) -> Response:
    """Load (or reload) a model's versions from disk; a refused version is a 400 naming why, old ones keep serving."""
    name = request.path_params["model_name"]
    parameters = await _repository_parameters(request, "load")
    versions = await fleet.load(_repository(request), request.state.fleet, name, parameters)
    return json_response({"name": name, "versions": [str(v) for v in versions]})


async def repository_unload(request: Request) -> Response:
    name = request.path_params["model_name"]
    parameters = await _repository_parameters(request, "unload")
    await fleet.unload(_repository(request), request.state.fleet, name, parameters)
    return json_response({"name": name, "state": "UNAVAILABLE"})


async def _optional_json(request: Request) -> tuple[Any, bytes]:
    """A body that may be empty ({} then), else JSON; with its bytes, for an error message."""
    settings: Settings = request.state.settings
    body = await read_body(
        request.receive, dict(request.scope["headers"]), settings.max_body_bytes, settings.request_timeout_s
    )
    return (parse_json(body) if body.strip() else {}), body


async def _repository_parameters(request: Request, action: str) -> list[str]:
    """The names in Triton's load / unload body, {"parameters": {...}}, which may be empty or absent."""
    options, body = await _optional_json(request)
    parameters = options.get("parameters") if isinstance(options, dict) else None
    if not isinstance(options, dict) or set(options) - {"parameters"} or not isinstance(parameters, dict | None):
        raise InvalidRequestError(f'{action} takes an empty body or {{"parameters": {{...}}}}, got {body[:80]!r}')
    return list(parameters or {})
