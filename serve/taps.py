"""Counting categories off the model's own tensors: a categorical input's taps, and a classifier's scores.

Monitoring maps each categorical value to a slot (serve/quality.py); done on the values, that is a hash of
a new string per value, ~100 ns each on this project's machine and most of what monitoring cost a
100-row request. The graph has matched every value already:

- **Inputs**: the exporter names, per categorical input, the one-hot encoder's output and the imputer's
  missing flag (card["monitoring"]["taps"], export/taps.py). The session gets them as extra outputs
  (`with_outputs`; model.onnx is unchanged) and a batch's slots are one matrix-vector product and one
  masked write: ~8 against ~160 ns a value, measured in process.
- **A classifier's label**: the class of the highest score is the label's slot when that class is the
  label, which one vectorised comparison confirms row by row; a row it does not confirm (a tie, a model
  whose label is not its top score) is looked up by value.

Each input tap is checked at load against the lookup by value on every category, a missing value and an
unseen one; one that disagrees is not used (logged), and the column is counted from its values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from contract import CategoryTap

logger = logging.getLogger("tabserve.quality")

UNSEEN_PROBE = "\x00tabserve: not a category\x00"
"""The value the load-time check sends as unseen: no training category is this."""


def with_outputs(model_bytes: bytes, names: Iterable[str]) -> bytes:
    """The serialized ONNX model with `names` added to its graph's outputs, without parsing it.

    Protobuf merges a message field that occurs twice and appends to repeated fields, so a ModelProto
    followed by `graph { output { name } ... }` is the model with those outputs added: the server needs
    no onnx package, and onnxruntime infers their types."""
    outputs = b"".join(_field(_GRAPH_OUTPUT, _field(_VALUE_INFO_NAME, name.encode())) for name in names)
    return model_bytes + _field(_MODEL_GRAPH, outputs)


_MODEL_GRAPH, _GRAPH_OUTPUT, _VALUE_INFO_NAME = 7, 12, 1
"""Field numbers in onnx.proto: ModelProto.graph, GraphProto.output, ValueInfoProto.name."""


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload  # wire type 2: length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def checked_taps(
    session: Any, sample: Mapping[str, npt.NDArray[Any]], taps: dict[str, CategoryTap]
) -> dict[str, CategoryTap]:
    """The taps that keep their contract (contract.CategoryTap) on this session, run on each of the tap's
    categories, a missing value and an unseen one with the other inputs from `sample`; the rest are logged."""
    held = {}
    for column, tap in taps.items():
        width = len(tap["categories"])
        probes = [*tap["categories"], "", UNSEEN_PROBE]
        feed = {name: np.repeat(values[:1], len(probes), axis=0) for name, values in sample.items()}
        feed[column] = np.array(probes, dtype=object).reshape(-1, 1)
        try:
            one_hot, missing = session.run([tap["one_hot"], tap["missing"]], feed)
            hot = one_hot.reshape(len(probes), -1)
            # A category's row is hot in its own column, an unseen value's in none; only '' is missing.
            holds = (
                missing.dtype == np.bool_
                and hot.shape[1] == width
                and bool((hot[:width] == np.eye(width)).all())
                and not hot[-1].any()
                and missing.reshape(-1).tolist() == [False] * width + [True, False]
            )
        except Exception as exc:  # a tensor of another shape or type: the tap does not hold
            holds, one_hot = False, exc
        if holds:
            held[column] = tap
        else:
            logger.warning("input %r: the card's tap does not hold on this model (%.200s); counting it by value",
                           column, one_hot)  # fmt: skip
    return held


@dataclass(frozen=True)
class InputTap:
    """One categorical input's slots from its tapped tensors: slot = unseen + one_hot @ weights, missing over it."""

    one_hot: str
    missing: str
    weights: npt.NDArray[np.float32]
    """Per one-hot column, its category's slot minus the unseen slot (0 for a category the card lacks)."""
    unseen: int
    missing_slot: int

    @classmethod
    def from_card(cls, tap: CategoryTap, categories: Sequence[str], missing_slot: int) -> InputTap | None:
        """For a column whose slots are `categories`' positions, then unseen, then missing; None when the
        tap cannot tell one of those categories (it would read as unseen)."""
        if not set(categories) <= set(tap["categories"]):
            return None
        unseen = len(categories)
        slot = {category: index for index, category in enumerate(categories)}
        weights = np.array([slot.get(category, unseen) - unseen for category in tap["categories"]], np.float32)
        return cls(tap["one_hot"], tap["missing"], weights, unseen, missing_slot)

    def slots(self, one_hot: Sequence[npt.NDArray[Any]], missing: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.intp]:
        """The slots of every row of consecutive batches, from each one's one-hot and missing tensors."""
        # Joined as they come ([rows, ...] either way) and reshaped once: a reshape per part cost ~8 ns a row.
        hot = np.concatenate(one_hot).reshape(-1, len(self.weights))
        flags = np.concatenate(missing).reshape(-1)
        slot = (hot @ self.weights).astype(np.intp)
        slot += self.unseen
        slot[flags] = self.missing_slot
        return slot


def scores_output(
    outputs: Mapping[str, npt.NDArray[Any]], names: Sequence[str], classes: Sequence[Any] | None
) -> str | None:
    """A classifier's scores output (its second, one column per class), if its top score gives the label
    on every row of `outputs` (the golden rows); None for a regressor, or when it does not."""
    if not classes or len(names) != 2:
        return None
    labels, scores = outputs[names[0]].reshape(-1), outputs[names[1]]
    if scores.dtype.kind != "f" or scores.ndim != 2 or scores.shape[1] != len(classes):
        return None
    top = np.array([str(label) for label in classes], dtype=object)[scores.argmax(axis=1)]
    return names[1] if top.tolist() == [str(label) for label in labels.tolist()] else None


@dataclass(frozen=True)
class LabelScores:
    """A classifier's prediction slots from its scores output, confirmed against its labels row by row."""

    scores: str
    classes: npt.NDArray[Any]
    """str() of the card's classes, in slot order, as objects: the monitor's labels are text."""

    def slots(
        self, labels: npt.NDArray[Any], scores: npt.NDArray[Any], by_value: Mapping[Any, int]
    ) -> npt.NDArray[np.intp]:
        slot: npt.NDArray[np.intp] = scores.reshape(len(labels), -1).argmax(axis=1)
        differs = self.classes[slot] != labels.reshape(-1)
        if np.count_nonzero(differs):  # rare (a tie broken the other way): ~0.2 us a 47-row batch, any() ~1 us
            unconfirmed = np.flatnonzero(differs)
            slot[unconfirmed] = [by_value[label] for label in labels.reshape(-1)[unconfirmed].tolist()]
        return slot
