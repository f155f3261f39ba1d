"""The model repository format: the one contract between export/ (which writes it) and serve/ (which reads it).

Standard library only, so both packages, and a user's own tooling, import it without the other's
dependencies. docs/model-repository.md explains every field; this module is its executable form.

background.json (format 2, optional) holds training rows for explainers, tensors encoded as golden.json's
`inputs`. The card's `monitoring` (MonitoringCard, optional) is the training reference a server counts
requests against for input quality and drift (population stability index); `find_bin` bins the values.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict, get_type_hints

CARD_FORMAT = "tabserve.model/2"
READABLE_FORMATS = ("tabserve.model/1", CARD_FORMAT)
"""Format 1 cards (no digests, background or importance) still load: old repositories keep serving."""
MODEL_FILE = "model.onnx"
CARD_FILE = "model.json"
GOLDEN_FILE = "golden.json"
BACKGROUND_FILE = "background.json"
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
    """One Open Inference Protocol datatype under each name the project meets it by: numpy's dtype string
    (little-endian where it has an order, as the binary extension carries it), onnx.TensorProto's element
    type, the type onnxruntime's session.get_inputs() reports, and Triton's model configuration name."""

    v2: str
    numpy: str
    onnx: int
    onnxruntime: str
    triton_config: str


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


class BackgroundCard(TypedDict):
    """Where the explainer's background rows are and how they were drawn from the training rows."""

    file: str
    rows: int
    seed: int
    stratified: bool
    """True when class shares were kept (a classifier with labels): each within one row of training's."""


class ColumnImportance(TypedDict):
    column: str  # the raw training column: the feature's `column`, or its `name` when that is empty
    mean: float
    std: float


class ImportanceCard(TypedDict):
    """Permutation importance on held-out rows, measured at export."""

    method: Literal["permutation"]
    scoring: str  # the estimator's default score: 'r2' for regressors, 'accuracy' for classifiers
    repeats: int
    rows: int
    seed: int
    columns: list[ColumnImportance]  # one entry per raw column, sorted by `mean`, largest first


REFERENCE_QUANTILES = tuple(step / 10 for step in range(1, 10))
"""The quantiles whose values become a numeric reference's interior bin edges: at most 10 bins."""


def find_bin(edges: Sequence[float], value: float) -> int:
    """The bin `value` falls in: the binning rule of every monitoring reference (features and regression predictions).

    Edges: the non-missing training values as float32 (what the model sees), their quantiles at
    REFERENCE_QUANTILES (0.1, 0.2, ..., 0.9; numpy's default linear interpolation, over the finite values:
    an infinity still counts, in the first or last bin), rounded to float32,
    duplicates dropped, sorted, and any edge equal to the minimum dropped (so bin 0 is never empty by
    construction); written as JSON numbers (float32 values, exact as doubles). A feature with few distinct
    values so has fewer than 10 bins; one with a single value has no edges and one bin.

    Bins: a value v falls in bin `bisect.bisect_right(edges, v)` (numpy: `searchsorted(edges, v, side="right")`):
    bin 0 is v < edges[0], bin i is edges[i-1] <= v < edges[i], the last bin is v >= edges[-1]; there are
    len(edges) + 1 bins and `shares[i]` is bin i's share of the non-missing training values.

    Missing values (NaN for numbers, "" for strings) are in no bin and no category: `missing_rate` is their
    share of all rows. `minimum` and `maximum` are over the finite values (float32, as doubles); a column with
    no non-missing value has them null, no edges and no shares (`shares` is []).
    """
    return bisect.bisect_right(edges, value)


class NumericReference(TypedDict):
    """A numeric input's training distribution: range, missing share, quantile bins."""

    kind: Literal["numeric"]
    minimum: float | None
    maximum: float | None
    missing_rate: float
    """Share of all training rows that are NaN."""
    edges: list[float]
    """Interior bin edges, strictly increasing, at most 9 (find_bin)."""
    shares: list[float]
    """len(edges) + 1 shares of the non-missing training values, summing to 1; [] when there are none."""


class CategoricalReference(TypedDict):
    """A categorical input's training distribution: missing share and category frequencies."""

    kind: Literal["categorical"]
    missing_rate: float
    """Share of all training rows that are '' (missing)."""
    frequencies: dict[str, float]
    """Category -> share of the non-missing training values, summing to 1 ({} when there are none)."""


FeatureReference = NumericReference | CategoricalReference


class ClassesReference(TypedDict):
    """A classifier's predicted labels on the held-out rows."""

    rows: int
    kind: Literal["classes"]
    shares: dict[str, float]
    """str(class label) -> share of held-out predictions; every one of the card's classes (0.0 if never predicted)."""


class BinsReference(TypedDict):
    """A regressor's predictions on the held-out rows, binned like a numeric feature (find_bin)."""

    rows: int
    kind: Literal["bins"]
    edges: list[float]
    shares: list[float]


class CategoryTap(TypedDict):
    """Tensors the graph computes anyway from a categorical input, from which a server can count it:
    `one_hot`, float [n, 1, k] or [n, k], is 1 in the column of `categories` the value is and all zeros for
    any other value; `missing`, bool [n, 1], is true where the input was missing ('') and was imputed."""

    one_hot: str
    categories: list[str]
    missing: str


class MonitoringCard(TypedDict):
    """What a server compares requests with: training inputs and held-out predictions, measured at export."""

    rows: int
    """Training rows the feature references were computed on."""
    features: dict[str, FeatureReference]
    """Keyed by ONNX input name (the card's features[i]["name"]), one per input."""
    prediction: ClassesReference | BinsReference
    taps: NotRequired[dict[str, CategoryTap]]  # input -> its tap where export/taps.py found one; absent before


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
    """Of model.onnx; also in `digests`, kept for format 1 readers."""
    digests: dict[str, str]
    """File name -> sha256 hex of every file of the version except model.json."""
    background: BackgroundCard | None
    importance: ImportanceCard | None
    monitoring: MonitoringCard | None
    """Null on cards written before it (format 1, and format 2 from older exporters)."""


class CardError(ValueError):
    """A model.json that is not a card of this format."""


# Python types each card field must have, from the TypedDict: what `read_card` checks.
_CARD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,), "name": (str,), "version": (int,), "task": (str,), "description": (str,),
    "created": (str,), "estimator": (str,), "target": (str, type(None)), "inputs": (list,), "outputs": (list,),
    "features": (list,), "classes": (list, type(None)), "metrics": (dict,), "search": (dict, type(None)),
    "parity": (dict,), "versions": (dict,), "files": (dict,), "golden_rows": (int,), "sha256": (str,),
    "digests": (dict,), "background": (dict, type(None)), "importance": (dict, type(None)),
    "monitoring": (dict, type(None)),
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
    if document.get("format") not in READABLE_FORMATS:
        readable = " or ".join(map(repr, READABLE_FORMATS))
        raise CardError(f"format is {document.get('format')!r}; this server reads {readable}")
    if document["format"] == READABLE_FORMATS[0]:
        # Format 1 predates these fields: fill them, so every reader sees one typed card.
        document = {"background": None, "importance": None, **document}
        if "sha256" in document:
            document.setdefault("digests", {MODEL_FILE: document["sha256"]})
    # Added within format 2 (optional, so CARD_FORMAT did not change): older cards of either format lack it.
    document = {"monitoring": None, **document}
    missing = sorted(set(_CARD_TYPES) - set(document))
    if missing:
        raise CardError(f"missing field(s) {missing}")
    for key, types in _CARD_TYPES.items():
        if not isinstance(document[key], types) or (int in types and isinstance(document[key], bool)):
            allowed = " or ".join("null" if kind is type(None) else kind.__name__ for kind in types)
            raise CardError(f"field {key!r} must be {allowed}, got {document[key]!r:.80}")
    if document["task"] not in ("regression", "classification"):
        raise CardError(f"task must be 'regression' or 'classification', got {document['task']!r}")
    _check_digests(document["digests"], document["sha256"])
    background = document["background"]
    if background is not None and background.get("file") not in document["digests"]:
        # A file the server reads must be one it can verify.
        raise CardError(f"background file {background.get('file')!r} has no entry in digests")
    card: ModelCard = document  # type: ignore[assignment]  # checked field by field above
    return card


def _check_digests(digests: dict[str, Any], sha256: str) -> None:
    for file_name, digest in digests.items():
        # Keys become paths inside the version folder: a '../' key must not reach outside it.
        if not isinstance(digest, str) or "/" in file_name or "\\" in file_name or file_name in ("", ".", ".."):
            raise CardError(f"digests must map plain file names to sha256 hex strings, got {file_name!r}: {digest!r}")
    if digests.get(MODEL_FILE, sha256) != sha256:
        raise CardError(f"digests[{MODEL_FILE!r}] {digests[MODEL_FILE]!r} differs from sha256 {sha256!r}")
