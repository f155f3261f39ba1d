"""One model version: an onnxruntime session, its tensor metadata, its model card and explainer background."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from contract import (
    CARD_FILE,
    GOLDEN_ATOL,
    GOLDEN_FILE,
    GOLDEN_RTOL,
    MODEL_FILE,
    CardError,
    CategoryTap,
    ModelCard,
    read_card,
)
from serve.columns import Feed
from serve.datatypes import ORT_TO_V2, V2_TO_NUMPY
from serve.taps import checked_taps, scores_output, with_outputs

logger = logging.getLogger("tabserve.repository")


class ModelLoadError(Exception):
    """A model version that must not serve: missing files, a sha256 mismatch, invalid ONNX, wrong answers."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """-1 marks a dynamic dimension; the first one is the batch dimension."""

    @property
    def dtype(self) -> np.dtype[Any]:
        return V2_TO_NUMPY[self.datatype]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class SessionOptions:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False


class Model:
    """A loaded, verified, warmed-up model version; `run` is synchronous and thread-safe."""

    def __init__(self, name: str, version: int, folder: Path, options: SessionOptions) -> None:
        started = time.monotonic()
        self.name = name
        self.version = version
        self.version_text = str(version)
        self.folder = folder
        self.card = _read_card(folder)
        # Read once and parse what was hashed: a file swapped after the check is never the one used.
        verified = _read_verified(folder, self.card)
        monitoring = self.card["monitoring"]
        listed = (monitoring.get("taps") if monitoring else None) or {}
        self.session, taps = _session(folder, verified[MODEL_FILE], options, listed)
        self._score = _direct_run(self.session)
        self.inputs = tuple(_spec(value) for value in self.session.get_inputs())
        tapped = set(_tensors(taps))
        self.outputs = tuple(_spec(value) for value in self.session.get_outputs() if value.name not in tapped)
        self.input_by_name = {spec.name: spec for spec in self.inputs}
        self.output_by_name = {spec.name: spec for spec in self.outputs}
        self.input_names = [spec.name for spec in self.inputs]
        self.output_names = tuple(spec.name for spec in self.outputs)
        self._float_outputs = tuple(index for index, spec in enumerate(self.outputs) if spec.dtype.kind == "f")
        """The outputs a NaN can be in (a label or a count cannot), checked on every run."""
        # Every validated feed for this model has exactly this layout, so requests need not recompute it.
        self.signature = tuple(
            (spec.name, spec.dtype.str, tuple(max(dim, 1) for dim in spec.shape[1:])) for spec in self.inputs
        )
        self.features = {feature["name"]: feature for feature in self.card["features"]}
        self.imputed = frozenset(name for name, feature in self.features.items() if feature["accepts_missing"])
        """Inputs the model imputes: a missing value there is fine (NaN for numbers, '' for categories)."""
        self.missing_ok = frozenset(spec.name for spec in self.inputs if spec.dtype.kind == "f") & self.imputed
        """Float inputs where NaN (JSON null, binary NaN) may stand for a missing value."""
        self.classes = self.card["classes"]
        self.task = self.card["task"]
        self.identity = (name, version, self.card["sha256"])
        self._check_golden(verified.get(GOLDEN_FILE))
        self.background = self._read_background(verified)
        """The explainer's background rows: input name -> [rows, 1] array, or None when the card has none."""
        self.taps = checked_taps(self.session, self._sample, taps)
        """Categorical input -> its tap (serve/taps.py), those that hold on this session; {} without any."""
        self._tapped_names = [*self.output_names, *_tensors(self.taps)]
        self.scores = scores_output(self.run(self._sample), self.output_names, self.classes)
        """A classifier's output whose top score is its label (serve/taps.py), or None."""
        self.load_seconds = time.monotonic() - started

    def run(self, feed: Feed) -> Feed:
        """Score a batch: every output, in the model's order (as computed: load, warm-up and golden checks)."""
        return dict(zip(self.output_names, self._score(self.output_names, feed, None), strict=True))

    def score(self, feed: Feed) -> Feed:
        """`run` for callers: a NaN or infinite output raises NonFiniteOutputError (`_check_finite`)."""
        values = self._score(self.output_names, feed, None)
        _check_finite(self.output_names, values, self._float_outputs)
        return dict(zip(self.output_names, values, strict=True))

    def run_tapped(self, feed: Feed) -> tuple[Feed, Feed]:
        """`score` a batch, reading the taps too: (the outputs, the outputs and the taps' tensors)."""
        values = self._score(self._tapped_names, feed, None)
        _check_finite(self.output_names, values, self._float_outputs)
        return dict(zip(self.output_names, values, strict=False)), dict(zip(self._tapped_names, values, strict=True))

    def warm_up(self, rows: int) -> None:
        """Run once at batch size `rows`, so the first real batch of that size pays no allocation."""
        feed = {spec.name: np.repeat(self._sample[spec.name][:1], rows, axis=0) for spec in self.inputs}
        self.run(feed)

    def _check_golden(self, content: bytes | None) -> None:
        """Score the golden inputs and compare with scikit-learn's outputs: a self-test at load time.

        `content` is the verified golden.json; a format 1 card lists no digest for it, so it is read here.
        """
        path = self.folder / GOLDEN_FILE
        if content is None and path.exists():
            content = path.read_bytes()
        golden = json.loads(content) if content is not None else None
        self.golden: dict[str, Any] | None = golden
        if golden is None:
            self._sample = {spec.name: _zeros(spec) for spec in self.inputs}
            return
        feed = {name: golden_array(tensor) for name, tensor in golden["inputs"].items()}
        self._sample = feed
        results = self.run(feed)
        # The tolerance the export was gated with; files written before it was recorded used the defaults.
        tolerance = golden.get("tolerance", {"atol": GOLDEN_ATOL, "rtol": GOLDEN_RTOL})
        for name, tensor in golden["outputs"].items():
            got, want = results[name], golden_array(tensor)
            if want.dtype == object:
                ok = got.astype(str).ravel().tolist() == want.astype(str).ravel().tolist()
            else:
                ok = bool(np.allclose(got.astype(np.float64).ravel(), want.astype(np.float64).ravel(),
                                      atol=tolerance["atol"], rtol=tolerance["rtol"], equal_nan=True))  # fmt: skip
            if not ok:
                raise ModelLoadError(f"{self.name} v{self.version}: output {name!r} does not reproduce {path}")

    def _read_background(self, verified: dict[str, bytes]) -> dict[str, npt.NDArray[Any]] | None:
        """background.json's tensors, decoded like golden.json's; they must be exactly the model's inputs."""
        entry = self.card["background"]
        if entry is None:
            return None
        path = self.folder / entry["file"]
        # read_card guarantees the background file has a digest, so it is among the verified files.
        tensors = json.loads(verified[entry["file"]])["inputs"]
        background = {name: golden_array(tensor) for name, tensor in tensors.items()}
        if sorted(background) != sorted(self.input_names):
            raise ModelLoadError(f"{path}: inputs {sorted(background)} are not the model's {sorted(self.input_names)}")
        return background


def _session(
    folder: Path, model_bytes: bytes, options: SessionOptions, taps: dict[str, CategoryTap]
) -> tuple[ort.InferenceSession, dict[str, CategoryTap]]:
    """The session, with the card's taps as extra outputs when it builds with them (else without, logged)."""
    try:
        if taps:
            try:
                tapped = with_outputs(model_bytes, _tensors(taps))
                return ort.InferenceSession(tapped, _session_options(options), providers=["CPUExecutionProvider"]), taps
            except Exception as exc:  # the model itself is tried next: a wrong tap must not refuse it
                logger.warning(
                    "%s: the card's taps %s do not build (%s); counting those inputs by value",
                    folder,
                    sorted(taps),
                    exc,
                )
        return ort.InferenceSession(model_bytes, _session_options(options), providers=["CPUExecutionProvider"]), {}
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/...; all mean "not a model"
        raise ModelLoadError(f"{folder / MODEL_FILE} is not a loadable ONNX model: {exc}") from exc


CHECKED_IN_PYTHON = 64
"""Outputs of at most this many values are checked for NaN in Python: cheaper than a numpy call."""


class NonFiniteOutputError(ValueError):
    """The model answered NaN or an infinity: scikit-learn raises there, or answers a finite float64."""


def _check_finite(names: tuple[str, ...], values: list[Any], floats: tuple[int, ...]) -> None:
    """Raise on a NaN or infinite value among the float outputs at `floats` (log1p below -1 in the graph, a
    linear model's overflow). Raised inside the batch's run, so the batch is retried request by request and
    only the request that caused it fails, with a 400 (serve/execution.py); JSON would have carried it as
    null beside a made-up label. A small output is looked at in Python (~0.3 us; a numpy call here cost
    one-row requests 4.5 % per CPU-second at one connection, side by side); a large one by numpy: a finite
    sum means finite values, and only a sum that is not (or overflowed) has each value looked at."""
    for index in floats:
        value = values[index]
        if value.size <= CHECKED_IN_PYTHON:
            if all(map(math.isfinite, value.ravel().tolist())):
                continue
        else:
            with np.errstate(over="ignore"):
                if math.isfinite(np.add.reduce(value, None)) or np.isfinite(value).all():
                    continue
        found = "NaN" if np.isnan(value).any() else "infinite"
        raise NonFiniteOutputError(
            f"its output {names[index]!r} is {found} for this input, outside what the model computes"
        )


def _direct_run(session: ort.InferenceSession) -> Any:
    """The binding's `run` under `InferenceSession.run`, which first checks, in Python, on every call: WebGPU
    graph capture (a call into C++), that no input is missing, that no OrtValue belongs to another session.
    None of them can fire here (CPU sessions; numpy feeds; the parsers give every input) and together
    they cost ~7 of a one-row run's ~70 us in process, ~25 us in a served one (py-spy). A version of
    onnxruntime without `_sess` gets the public `run`, which takes the same arguments."""
    binding = getattr(session, "_sess", None)
    return session.run if binding is None else binding.run


def _tensors(taps: dict[str, CategoryTap]) -> list[str]:
    return [name for tap in taps.values() for name in (tap["one_hot"], tap["missing"])]


def _read_card(folder: Path) -> ModelCard:
    try:
        return read_card((folder / CARD_FILE).read_bytes())
    except FileNotFoundError:
        raise ModelLoadError(f"{folder} has no {CARD_FILE}") from None
    except CardError as exc:
        raise ModelLoadError(f"{folder / CARD_FILE}: {exc}") from None


def _read_verified(folder: Path, card: ModelCard) -> dict[str, bytes]:
    """The model and every file the card's `digests` lists, each checked against its sha256."""
    expected = {**card["digests"], MODEL_FILE: card["sha256"]}
    verified = {}
    for file_name, want in expected.items():
        try:
            content = (folder / file_name).read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(f"{folder} has no {file_name}") from None
        digest = hashlib.sha256(content).hexdigest()
        if digest != want:
            raise ModelLoadError(f"{folder / file_name}: sha256 {digest} does not match the card's {want}")
        verified[file_name] = content
    return verified


def _session_options(options: SessionOptions) -> ort.SessionOptions:
    # One intra-op thread per session by default: batches are small, and workers x threads must not
    # oversubscribe the cores (onnxruntime issue #13808). Spinning off: it burns CPU between bursts.
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spinning = "1" if options.allow_spinning else "0"
    session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return session_options


def _spec(value: Any) -> TensorSpec:
    datatype = ORT_TO_V2.get(value.type)
    if datatype is None:
        raise ModelLoadError(f"tensor {value.name!r} has type {value.type}, which the V2 protocol cannot carry")
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in value.shape)
    return TensorSpec(value.name, datatype, shape)


def golden_array(tensor: dict[str, Any]) -> npt.NDArray[Any]:
    """A golden.json tensor as a numpy array (null in a float tensor is NaN, a missing value)."""
    dtype = V2_TO_NUMPY[tensor["datatype"]]
    data = tensor["data"]
    if dtype.kind == "f":
        data = [math.nan if value is None else value for value in data]
    return np.array(data, dtype=dtype).reshape(tensor["shape"])


def _zeros(spec: TensorSpec) -> npt.NDArray[Any]:
    shape = tuple(1 if dim < 0 else dim for dim in spec.shape)
    return np.full(shape, "", dtype=object) if spec.datatype == "BYTES" else np.zeros(shape, dtype=spec.dtype)
