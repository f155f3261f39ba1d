"""What the server says about itself and its models, as plain documents both front ends send.

REST sends them as JSON; gRPC parses the same documents into its messages (their field names are the
protocol's on both), so the two can never describe a model differently.
"""

from __future__ import annotations

from typing import Any

from serve import __version__
from serve.datatypes import V2_TO_TRITON_CONFIG
from serve.errors import InvalidRequestError, ModelNotFoundError
from serve.model import Model, TensorSpec
from serve.repository import ModelEntry, ModelRepository
from serve.settings import Settings

EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration", "model_repository"]
PLATFORM = "onnxruntime_onnx"


def server_metadata() -> dict[str, Any]:
    return {"name": "tabserve", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(model: Model, versions: list[int]) -> dict[str, Any]:
    """The V2 model metadata; `parameters` (the card's facts) is a REST extra that gRPC has no field for."""
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
        "importance": card["importance"],
        "background_rows": 0 if model.background is None else len(next(iter(model.background.values()))),
    }
    return {
        "name": model.name,
        "versions": [str(version) for version in versions],
        "platform": PLATFORM,
        "inputs": [spec.to_json() for spec in model.inputs],
        "outputs": [spec.to_json() for spec in model.outputs],
        "parameters": parameters,
    }


def model_config(model: Model, settings: Settings) -> dict[str, Any]:
    """Triton's model configuration, as tritonclient's get_model_config and perf_analyzer read it."""

    def tensors(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        # With max_batch_size > 0 Triton's dims leave out the batch dimension.
        return [
            {"name": s.name, "data_type": V2_TO_TRITON_CONFIG[s.datatype], "dims": list(s.shape[1:])} for s in specs
        ]

    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"all": {}},
        "max_batch_size": settings.max_batch_size,
        "input": tensors(model.inputs),
        "output": tensors(model.outputs),
        "dynamic_batching": {"max_queue_delay_microseconds": int(settings.max_batch_delay_ms * 1000)},
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }


def model_statistics(repository: ModelRepository, name: str | None, version: str | None) -> list[dict[str, Any]]:
    """Triton's statistics for one version, every version of a model, or (no name) every model."""
    entries: list[ModelEntry]
    if not name:
        entries = list(repository.entries())
    elif version:
        entries = [repository.get(name, version)]
    else:
        entries = [repository.get(name, str(v)) for v in repository.versions(name)] or [repository.get(name)]
    return [entry.statistics.to_triton(entry.model.name, entry.model.version) for entry in entries]


def repository_index(repository: ModelRepository, only_ready: bool) -> list[dict[str, Any]]:
    """Every version with its state, refused ones with the reason."""
    index: list[dict[str, Any]] = [
        {"name": entry.model.name, "version": str(entry.model.version), "state": "READY", "reason": ""}
        for entry in repository.entries()
    ]
    if not only_ready:
        index += [
            {"name": name, "version": str(version), "state": "UNAVAILABLE", "reason": reason}
            for (name, version), reason in sorted(repository.failures.items())
        ]
    return sorted(index, key=lambda item: (item["name"], int(item["version"])))


async def load_model(repository: ModelRepository, name: str) -> list[int]:
    """Load (or reload) a model's versions from disk; a refused version is an error naming why, old ones serve on."""
    refusals = await repository.refresh(only=name)
    if refusals:
        raise InvalidRequestError("; ".join(refusals))
    if not repository.versions(name):
        raise ModelNotFoundError(f"no servable version of {name!r} under the model directory")
    return repository.versions(name)
