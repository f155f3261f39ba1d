"""The model card (model.json), the golden vectors (golden.json), the explainer's background rows
(background.json) and the ONNX metadata_props.

Their shape is the contract (contract.py, docs/model-repository.md); serve/ reads nothing else.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from contract import (
    BACKGROUND_FILE,
    CARD_FILE,
    CARD_FORMAT,
    DATATYPES,
    GOLDEN_ATOL,
    GOLDEN_FILE,
    GOLDEN_RTOL,
    MODEL_FILE,
    BackgroundCard,
    ImportanceCard,
    ModelCard,
    MonitoringCard,
    Task,
    TensorCard,
)
from export.features import Feature

ONNX_TO_V2 = {datatype.onnx: datatype.v2 for datatype in DATATYPES}
VERSIONED_PACKAGES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")
OPTIONAL_PACKAGES = ("lightgbm", "xgboost-cpu", "xgboost", "onnxmltools")
"""Recorded when installed: the gbm extra's converters may have made the graph."""


def library_versions(model: onnx.ModelProto) -> dict[str, Any]:
    found: dict[str, Any] = {package: metadata.version(package) for package in VERSIONED_PACKAGES}
    for package in OPTIONAL_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    found["python"] = platform.python_version()
    found["opset"] = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    return found


def tensor_specs(values: Any) -> list[TensorCard]:
    """Graph inputs/outputs as V2 tensor metadata: name, datatype, shape with -1 for dynamic dims."""
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
        specs.append(TensorCard(name=value.name, datatype=ONNX_TO_V2[tensor.elem_type], shape=shape))
    return specs


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def build_card(
    *,
    name: str,
    version: int,
    model: onnx.ModelProto,
    task: Task,
    description: str,
    features: list[Feature],
    classes: list[Any] | None,
    target: str | None,
    estimator: str,
    metrics: dict[str, Any],
    search: dict[str, Any] | None,
    parity: dict[str, Any],
    golden_rows: int,
    background: BackgroundCard | None = None,
    importance: ImportanceCard | None = None,
    monitoring: MonitoringCard | None = None,
) -> ModelCard:
    """Everything a client or another runtime needs to know about one published version.

    `sha256` and `digests` are left empty: they are of the final bytes, and model.onnx carries this
    card's metadata (`add_metadata`).
    """
    files = {"model": MODEL_FILE, "card": CARD_FILE, "golden": GOLDEN_FILE}
    if background is not None:
        files["background"] = BACKGROUND_FILE
    return ModelCard(
        format=CARD_FORMAT,
        name=name,
        version=version,
        task=task,
        description=description,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        estimator=estimator,
        target=target,
        inputs=tensor_specs(model.graph.input),
        outputs=tensor_specs(model.graph.output),
        features=[feature.to_json() for feature in features],
        classes=classes,
        metrics=metrics,
        search=search,
        parity=parity,
        versions=library_versions(model),
        files=files,
        golden_rows=golden_rows,
        sha256="",
        digests={},
        background=background,
        importance=importance,
        monitoring=monitoring,
    )


def add_metadata(model: onnx.ModelProto, card: ModelCard) -> None:
    """Copy what another runtime needs into the ONNX file itself (custom_metadata_map in onnxruntime)."""
    del model.metadata_props[:]
    entries = {
        "tabserve.format": CARD_FORMAT,
        "tabserve.name": card["name"],
        "tabserve.task": card["task"],
        "tabserve.features": json.dumps(card["features"]),
        "tabserve.classes": json.dumps(card["classes"]),
        "tabserve.parity": json.dumps(card["parity"]),
        "tabserve.versions": json.dumps(card["versions"]),
    }
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "tabserve"
    model.model_version = int(card["version"])
    model.doc_string = card["description"]


def encode_tensor(array: npt.NDArray[Any], datatype: str) -> dict[str, Any]:
    """A V2-style JSON tensor; NaN (a missing numeric value) is written as null."""
    values: list[Any]
    if datatype == "BYTES":
        values = [str(item) for item in array.ravel().tolist()]
    elif array.dtype.kind == "f":
        values = [None if math.isnan(item) else item for item in array.astype(np.float64).ravel().tolist()]
    else:
        values = array.ravel().tolist()
    return {"datatype": datatype, "shape": list(array.shape), "data": values}


def build_golden(
    feed: dict[str, npt.NDArray[Any]],
    outputs: dict[str, npt.NDArray[Any]],
    card: ModelCard,
    tolerance: tuple[float, float] = (GOLDEN_ATOL, GOLDEN_RTOL),
) -> dict[str, Any]:
    """Inputs and scikit-learn's outputs for them, and the tolerance to hold them to, readable from any language."""
    output_types = {spec["name"]: spec["datatype"] for spec in card["outputs"]}
    return {
        "format": CARD_FORMAT,
        "note": "outputs are scikit-learn's; null in FP32 inputs means a missing value (NaN)",
        "tolerance": {"atol": tolerance[0], "rtol": tolerance[1]},
        "inputs": encode_inputs(feed, card),
        "outputs": {name: encode_tensor(array, output_types[name]) for name, array in outputs.items()},
    }


def build_background(feed: dict[str, npt.NDArray[Any]], background: BackgroundCard, card: ModelCard) -> dict[str, Any]:
    """background.json: the card's `background` entry (less the file name) and the rows, encoded as golden inputs."""
    return {
        "rows": background["rows"],
        "seed": background["seed"],
        "stratified": background["stratified"],
        "inputs": encode_inputs(feed, card),
    }


def encode_inputs(feed: dict[str, npt.NDArray[Any]], card: ModelCard) -> dict[str, Any]:
    """One JSON tensor per model input, typed as the card's `inputs` say (one encoding for every file)."""
    input_types = {spec["name"]: spec["datatype"] for spec in card["inputs"]}
    return {name: encode_tensor(array, input_types[name]) for name, array in feed.items()}


def dumps(document: ModelCard | dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()
