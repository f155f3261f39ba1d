"""The model repository format: the one contract between export/ (which writes it) and serve/ (which reads it).

Standard library only, so both packages, and a user's own tooling, import it without the other's
dependencies. docs/model-repository.md explains every field; this module is its executable form.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NamedTuple, TypedDict, get_type_hints

CARD_FORMAT = "tabserve.model/1"
MODEL_FILE = "model.onnx"
CARD_FILE = "model.json"
GOLDEN_FILE = "golden.json"
STAGING_PREFIX = ".staging-"
"""A version being written: a hidden sibling folder, renamed to its number in one step."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A model's name: also a folder and a URL part."""

GOLDEN_ATOL = 1e-4
GOLDEN_RTOL = 1e-4
"""|runtime - scikit-learn| <= atol + rtol * |scikit-learn| for every golden number; labels exactly.

The parity gate's defaults. golden.json records the tolerance its export was gated with (`tolerance`),
and a runtime checks the file against that: a model that passed its gate reproduces its golden vectors."""

Task = Literal["regression", "classification"]
Kind = Literal["numeric", "categorical"]


class Datatype(NamedTuple):
    """One Open Inference Protocol datatype under each name the project meets it by."""

    v2: str
    numpy: str
    """numpy's dtype string (little-endian where it has an order), as the binary extension carries it."""
    onnx: int
    """onnx.TensorProto's element type."""
    onnxruntime: str
    """The type onnxruntime's session.get_inputs() reports."""
    triton_config: str
    """Triton's model configuration name."""


DATATYPES: tuple[Datatype, ...] = (
    Datatype("BOOL", "|b1", 9, "tensor(bool)", "TYPE_BOOL"),
    Datatype("UINT8", "|u1", 2, "tensor(uint8)", "TYPE_UINT8"),
    Datatype("UINT16", "<u2", 4, "tensor(uint16)", "TYPE_UINT16"),
    Datatype("UINT32", "<u4", 12, "tensor(uint32)", "TYPE_UINT32"),
    Datatype("UINT64", "<u8", 13, "tensor(uint64)", "TYPE_UINT64"),
    Datatype("INT8", "|i1", 3, "tensor(int8)", "TYPE_INT8"),
    Datatype("INT16", "<i2", 5, "tensor(int16)", "TYPE_INT16"),
    Datatype("INT32", "<i4", 6, "tensor(int32)", "TYPE_INT32"),
    Datatype("INT64", "<i8", 7, "tensor(int64)", "TYPE_INT64"),
    Datatype("FP16", "<f2", 10, "tensor(float16)", "TYPE_FP16"),
    Datatype("FP32", "<f4", 1, "tensor(float)", "TYPE_FP32"),
    Datatype("FP64", "<f8", 11, "tensor(double)", "TYPE_FP64"),
    Datatype("BYTES", "|O", 8, "tensor(string)", "TYPE_STRING"),
)
BY_V2: dict[str, Datatype] = {datatype.v2: datatype for datatype in DATATYPES}
KIND_TO_DATATYPE: dict[Kind, str] = {"numeric": "FP32", "categorical": "BYTES"}


class TensorCard(TypedDict):
    name: str
    datatype: str
    shape: list[int]
    """-1 for a dynamic dimension; the first is the batch dimension."""


class FeatureCard(TypedDict):
    name: str
    """The ONNX input's name (skl2onnx turns characters other than [A-Za-z0-9_] into '_')."""
    kind: Kind
    datatype: str
    minimum: float | None
    maximum: float | None
    categories: list[str]
    accepts_missing: bool
    column: str
    """The training column's name when it differs from the input's, else ''."""


class ModelCard(TypedDict):
    """model.json. Nested reports (metrics, search, parity, versions) are documented, not typed here."""

    format: str
    name: str
    version: int
    task: Task
    description: str
    created: str
    estimator: str
    target: str | None
    inputs: list[TensorCard]
    outputs: list[TensorCard]
    features: list[FeatureCard]
    classes: list[Any] | None
    metrics: dict[str, Any]
    search: dict[str, Any] | None
    parity: dict[str, Any]
    versions: dict[str, Any]
    files: dict[str, str]
    golden_rows: int
    sha256: str


class CardError(ValueError):
    """A model.json that is not a card of this format."""


# Python types each card field must have, from the TypedDict: what `read_card` checks.
_CARD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,), "name": (str,), "version": (int,), "task": (str,), "description": (str,),
    "created": (str,), "estimator": (str,), "target": (str, type(None)), "inputs": (list,), "outputs": (list,),
    "features": (list,), "classes": (list, type(None)), "metrics": (dict,), "search": (dict, type(None)),
    "parity": (dict,), "versions": (dict,), "files": (dict,), "golden_rows": (int,), "sha256": (str,),
}  # fmt: skip
assert set(_CARD_TYPES) == set(get_type_hints(ModelCard)), "every ModelCard field needs its runtime types"


def read_card(content: bytes) -> ModelCard:
    """Parse model.json, checking every field's presence and type; CardError names the first problem."""
    try:
        document = json.loads(content)
    except ValueError as exc:
        raise CardError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CardError(f"expected a JSON object, got {type(document).__name__}")
    if document.get("format") != CARD_FORMAT:
        raise CardError(f"format is {document.get('format')!r}; this server reads {CARD_FORMAT!r}")
    missing = sorted(set(_CARD_TYPES) - set(document))
    if missing:
        raise CardError(f"missing field(s) {missing}")
    for key, types in _CARD_TYPES.items():
        if not isinstance(document[key], types) or (int in types and isinstance(document[key], bool)):
            allowed = " or ".join("null" if kind is type(None) else kind.__name__ for kind in types)
            raise CardError(f"field {key!r} must be {allowed}, got {document[key]!r:.80}")
    if document["task"] not in ("regression", "classification"):
        raise CardError(f"task must be 'regression' or 'classification', got {document['task']!r}")
    card: ModelCard = document  # type: ignore[assignment]  # checked field by field above
    return card
