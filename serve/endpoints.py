"""Thin handlers for everything but inference (see inference.py): health, metadata, config, statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from serve import __version__
from serve.body import read_body
from serve.datatypes import V2_TO_TRITON_CONFIG
from serve.errors import InvalidRequestError, ModelNotFoundError, ModelNotReadyError
from serve.metrics import Metrics
from serve.openapi import openapi_document
from serve.protocol import parse_json
from serve.repository import ModelEntry, ModelRepository
from serve.settings import Settings

EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration", "model_repository"]


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
    return json_response({"name": "tabserve", "version": __version__, "extensions": EXTENSIONS})


async def model_ready(request: Request) -> Response:
    entry = _entry(request)
    if not request.state.lifecycle.ready:
        raise ModelNotReadyError(f"model {entry.model.name!r} is draining for shutdown")
    return json_response({"name": entry.model.name, "ready": True})


async def model_metadata(request: Request) -> Response:
    model = _entry(request).model
    card = model.card
    parameters = {
        "version": str(model.version),
        "task": model.task,
        "description": card["description"],
        "features": card["features"],
        "classes": model.classes,
        "target": card["target"],
        "estimator": card["estimator"],
        "metrics": card["metrics"],
        "parity": card["parity"],
        "sha256": card["sha256"],
    }
    return json_response(
        {
            "name": model.name,
            "versions": [str(version) for version in _repository(request).versions(model.name)],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.to_json() for spec in model.inputs],
            "outputs": [spec.to_json() for spec in model.outputs],
            "parameters": parameters,
        }
    )


async def model_golden(request: Request) -> Response:
    """The golden vectors (inputs with scikit-learn's outputs): what load tests and other runtimes check against."""
    model = _entry(request).model
    if model.golden is None:
        raise ModelNotFoundError(f"model {model.name!r} version {model.version} has no golden vectors")
    return json_response(model.golden)


async def model_config(request: Request) -> Response:
    """Triton's model configuration, as tritonclient.get_model_config and perf_analyzer read it."""
    model = _entry(request).model
    settings: Settings = request.state.settings

    def tensors(specs: Any) -> list[dict[str, Any]]:
        # With max_batch_size > 0 Triton's dims leave out the batch dimension.
        return [
            {"name": s.name, "data_type": V2_TO_TRITON_CONFIG[s.datatype], "dims": list(s.shape[1:])} for s in specs
        ]

    return json_response(
        {
            "name": model.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "version_policy": {"all": {}},
            "max_batch_size": settings.max_batch_size,
            "input": tensors(model.inputs),
            "output": tensors(model.outputs),
            "dynamic_batching": {"max_queue_delay_microseconds": int(settings.max_batch_delay_ms * 1000)},
            "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        }
    )


async def model_stats(request: Request) -> Response:
    """Triton's statistics extension for one version, every version of a model, or every model."""
    repository = _repository(request)
    if "model_name" in request.path_params:
        name, version = request.path_params["model_name"], request.path_params.get("model_version")
        entries = (
            [repository.get(name, version)]
            if version
            else [repository.get(name, str(v)) for v in repository.versions(name)]
        )
    else:
        entries = list(repository.entries())
    stats = [entry.statistics.to_triton(entry.model.name, entry.model.version) for entry in entries]
    return json_response({"model_stats": stats})


async def metrics(request: Request) -> Response:
    """Prometheus exposition of every tabserve metric."""
    registry: Metrics = request.state.metrics
    for entry in _repository(request).entries():
        entry.metrics.queue_depth.set(entry.batcher.depth)
    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)


async def repository_index(request: Request) -> Response:
    """Triton's repository index: every version with its state, refused ones with the reason."""
    repository = _repository(request)
    settings: Settings = request.state.settings
    body = await read_body(
        request.receive, dict(request.scope["headers"]), settings.max_body_bytes, settings.request_timeout_s
    )
    options = parse_json(body) if body.strip() else {}
    if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
        raise InvalidRequestError(f'expected an object like {{"ready": true}}, got {body[:80]!r}')
    only_ready = options.get("ready", False)
    index: list[dict[str, Any]] = [
        {"name": entry.model.name, "version": str(entry.model.version), "state": "READY", "reason": ""}
        for entry in repository.entries()
    ]
    if not only_ready:
        index += [
            {"name": name, "version": str(version), "state": "UNAVAILABLE", "reason": reason}
            for (name, version), reason in sorted(repository.failures.items())
        ]
    return json_response(sorted(index, key=lambda item: (item["name"], int(item["version"]))))


async def repository_load(request: Request) -> Response:
    """Load (or reload) a model's versions from disk; a refused version is a 400 naming why, old ones keep serving."""
    name = request.path_params["model_name"]
    refusals = await _repository(request).refresh(only=name)
    if refusals:
        raise InvalidRequestError("; ".join(refusals))
    if not _repository(request).versions(name):
        raise ModelNotFoundError(f"no servable version of {name!r} under the model directory")
    return json_response({"name": name, "versions": [str(v) for v in _repository(request).versions(name)]})


async def repository_unload(request: Request) -> Response:
    name = request.path_params["model_name"]
    await _repository(request).unload(name)
    return json_response({"name": name, "state": "UNAVAILABLE"})
