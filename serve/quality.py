"""Input quality and drift: what callers send to one model version, counted against its training reference.

Per input: values seen, missing values, numbers below or above the training range, categories the
model never saw, and a histogram on the training bins (card["monitoring"]); the served predictions
the same way. A rolling window of the most recent rows gives each a population stability index (PSI)
against the training shares.

Counting costs the hot path one list append per batch: batches wait in `pending` and are counted
together, vectorised, once FLUSH_ROWS rows or FLUSH_BATCHES batches have gathered, when someone reads
the figures, and at least every second (serve/app.py), since a numpy call costs about a microsecond
whatever its size and a one-row batch has a column per input. What it still costs, measured side by
side (python -m loadtest quality-bench): 2.4-4.6 % of one-row requests and 8 % of 100-row ones on the
penguins example, most of it hashing each category string, a new object in every request (~100 ns a
value here: docs/benchmarks.md). No HTTP here; serve/drift.py exports the figures.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from contract import CategoryTap, ModelCard
from serve.taps import InputTap, LabelScores

FLUSH_ROWS = 4096
FLUSH_BATCHES = 256
"""Pending batches are counted once either is reached: many rows amortise a count's fixed cost (~35 us a
column on this project's machine, ~10 numpy calls), and the batch bound keeps what a stream of one-row
batches holds small (256 one-row feeds: a few hundred KB). At 64 the fixed cost was most of counting
16-row batches: 0.97 against 0.68 us a row at 256, measured in process."""
UNSEEN = "(unseen)"


@dataclass
class Tally:
    """One watched column (an input, or the prediction): its reference and what was counted."""

    name: str
    kind: Literal["numeric", "categorical"]
    minimum: float | None
    maximum: float | None
    categories: tuple[str, ...]
    edges: npt.NDArray[np.float64] | None
    """Numeric bin edges: value v is in bin searchsorted(edges, v, side="right")."""
    expected: npt.NDArray[np.float64] | None
    """Training shares per bin (categorical: per category, then UNSEEN at 0); None without a reference."""
    window_rows: int
    values: int = 0
    missing: int = 0
    low: int = 0
    high: int = 0
    unseen: int = 0
    bins: npt.NDArray[np.int64] = field(init=False)
    ring: npt.NDArray[np.int32] = field(init=False)
    """The last `window_rows` rows' slots (below), oldest overwritten first."""
    position: int = 0

    def __post_init__(self) -> None:
        # Every value gets one slot, and every count is one bincount over slots (each extra pass over a
        # batch, a comparison or a mask, cost about as much as the bincount itself: profiled).
        #   categorical: the categories, then unseen, then missing.
        #   numeric:     how many `cuts` the value reaches, then missing. With a training range the cuts are
        #                [minimum, *edges, just above maximum]: position 0 is below the range, the last
        #                above it, and they fold into the first and last training bin for the histogram.
        self.bins = np.zeros(len(self.labels), dtype=np.int64)
        self._ranged = self.kind == "numeric" and self.minimum is not None and self.maximum is not None
        if self.kind == "categorical":
            slots = len(self.categories) + 1
        else:
            inner = [] if self.edges is None else list(self.edges)
            if self._ranged:
                assert self.minimum is not None and self.maximum is not None
                cuts64 = [self.minimum, *inner, float(np.nextafter(self.maximum, np.inf))]
                cuts32 = [self.minimum, *inner, float(np.nextafter(np.float32(self.maximum), np.float32(np.inf)))]
            else:
                cuts64 = cuts32 = inner
            # Edges and the range are float32 values (export), so float32 rows need no conversion to compare.
            self._cuts = {np.dtype(np.float64): np.array(cuts64), np.dtype(np.float32): np.array(cuts32, np.float32)}
            slots = len(cuts64) + 1
        self.missing_slot = slots
        self.ring = np.full(self.window_rows, self.missing_slot, dtype=np.int32)
        self._window = np.zeros(slots + 1, dtype=np.int64)
        self._window[self.missing_slot] = self.window_rows
        self.slot_of = _Slots({category: index for index, category in enumerate(self.categories)})
        """A categorical value's slot: its category's, the unseen slot for any other, missing for ''."""
        self.slot_of[""] = self.missing_slot
        self.slot_of.unseen = len(self.categories)

    @property
    def labels(self) -> list[str]:
        """The bins' names, as metrics label them."""
        if self.kind == "categorical":
            return [*self.categories, UNSEEN]
        return [str(index) for index in range(0 if self.edges is None else len(self.edges) + 1)]

    def count(self, column: npt.NDArray[Any]) -> None:
        self.add(self.slots(column))

    def slots(self, column: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
        """Each value's slot (see __post_init__), from the values themselves."""
        values = column.reshape(-1)
        if self.kind == "categorical":
            strings = (values if values.dtype == object else values.astype(str)).tolist()
            # map() over a dict's __getitem__ runs in C (a generator expression cost 0.24 us a value), on a list
            # (iterating an array makes a scalar per value) into intp (bincount's own type: no cast). What is
            # left is hashing each value, a new string in every request: 102 against 112-118 ns a value, measured
            # (serve/taps.py reads most categorical slots off the model's own tensors instead).
            return np.fromiter(map(self.slot_of.__getitem__, strings), np.intp, len(strings))
        numbers = values if values.dtype in self._cuts else values.astype(np.float64)
        # One branch-free pass per cut (at most 11: 9 edges and the range) rather than searchsorted, whose
        # binary search mispredicts on unsorted rows: 13 against 40 ns a value, measured on 12,800 rows.
        # A NaN reaches no cut, and goes to the missing slot (infinities are refused at parse; a prediction's
        # infinity stays above the range).
        slot = np.zeros(len(numbers), np.uint8)
        for cut in self._cuts[numbers.dtype]:
            slot += numbers >= cut
        slot[numbers != numbers] = self.missing_slot
        return slot

    def add(self, slot: npt.NDArray[np.intp]) -> None:
        """Count a batch of values by their slots."""
        self.values += len(slot)
        counted = np.bincount(slot, minlength=self.missing_slot + 1)
        self.missing += int(counted[self.missing_slot])
        if self.kind == "categorical":
            self.unseen += int(counted[len(self.categories)])
        elif self._ranged:
            self.low += int(counted[0])
            self.high += int(counted[self.missing_slot - 1])
        self.bins += self._fold(counted)
        self._remember(slot, counted)

    def _fold(self, counted: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Slot counts as counts per training bin (or category and unseen)."""
        if not len(self.bins):
            return self.bins[:0]
        if self.kind == "categorical" or not self._ranged:
            return counted[: len(self.bins)]
        inner = counted[1 : self.missing_slot - 1].copy()  # positions 1..k+1 are training bins 0..k
        inner[0] += counted[0]  # below the range: bin 0 by the binning rule
        inner[-1] += counted[self.missing_slot - 1]  # above it: the last bin
        return inner

    def _remember(self, slot: npt.NDArray[np.intp], counted: npt.NDArray[np.int64]) -> None:
        """Write `slot` into the ring, oldest rows first out, keeping the window's counts in step."""
        size = self.missing_slot + 1
        if len(slot) >= self.window_rows:
            self.ring[:] = slot[-self.window_rows :]
            self.position = 0
            self._window = np.bincount(self.ring, minlength=size)
            return
        self._window += counted
        end = self.position + len(slot)
        if end <= self.window_rows:
            self._window -= np.bincount(self.ring[self.position : end], minlength=size)
            self.ring[self.position : end] = slot
        else:
            split = self.window_rows - self.position
            self._window -= np.bincount(self.ring[self.position :], minlength=size)
            self._window -= np.bincount(self.ring[: end - self.window_rows], minlength=size)
            self.ring[self.position :] = slot[:split]
            self.ring[: end - self.window_rows] = slot[split:]
        self.position = end % self.window_rows

    def window(self) -> npt.NDArray[np.int64]:
        """Counts per bin over the window's rows that were not missing."""
        return self._fold(self._window).copy()

    def flags(self, column: npt.NDArray[Any]) -> list[str | None]:
        """Per row: "missing", "out_of_range", "unseen" or None, for a response that asked for them."""
        flags: list[str | None] = []
        for value in column.reshape(-1).tolist():
            if self.kind == "categorical":
                text = value if isinstance(value, str) else str(value)
                flags.append("missing" if text == "" else None if text in self.slot_of else "unseen")
            elif value is None or value != value:  # JSON null, or NaN
                flags.append("missing")
            elif self.minimum is not None and self.maximum is not None and not self.minimum <= value <= self.maximum:
                flags.append("out_of_range")
            else:
                flags.append(None)
        return flags


class QualityMonitor:
    """Every input of one model version, and its prediction; `record` is the hot path, the rest is reads."""

    def __init__(self, card: ModelCard, inputs: Sequence[str], output: str, window_rows: int) -> None:
        reference: dict[str, Any] = dict(card.get("monitoring") or {})
        described = {feature["name"]: feature for feature in card["features"]}
        features = reference.get("features", {})
        self.inputs = [_input_tally(name, described.get(name), features.get(name), window_rows) for name in inputs]
        self.prediction = _prediction_tally(card, reference.get("prediction"), window_rows)
        self.output = output
        """The output that is the prediction: the label, or the value."""
        self.taps: dict[str, InputTap] = {}
        """Input name -> how to read its slots off the model's tensors (serve/taps.py), once checked."""
        self.label_scores: LabelScores | None = None
        self.on_publish: Callable[[], None] | None = None
        """Told to export what was counted (to the metrics): by `publish`, on reads and every second."""
        self._pending: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
        self._pending_rows = 0
        self._lock = threading.Lock()

    def read_off(self, taps: Mapping[str, CategoryTap], scores: str | None) -> None:
        """Count the tapped inputs off their taps, and the label off `scores` (serve/taps.py)."""
        for tally in self.inputs:
            tap = taps.get(tally.name)
            reader = None if tap is None else InputTap.from_card(tap, tally.categories, tally.missing_slot)
            if reader is not None:
                self.taps[tally.name] = reader
        if scores is not None and self.prediction is not None and self.prediction.kind == "categorical":
            self.label_scores = LabelScores(scores, np.array(self.prediction.categories, dtype=object))

    def record(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], rows: int) -> None:
        """A scored batch (or a cached answer): its input columns and its outputs (tapped ones too), counted later."""
        with self._lock:
            self._pending.append((inputs, outputs))
            self._pending_rows += rows
            full = self._pending_rows >= FLUSH_ROWS or len(self._pending) >= FLUSH_BATCHES
        if full:
            self.flush()

    def flush(self) -> None:
        """Count what is pending: one numpy pass per column over every pending batch together."""
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
            if not pending:
                return
            for tally in self.inputs:
                tap = self.taps.get(tally.name)
                if tap is None:
                    tally.count(_joined([inputs[tally.name] for inputs, _ in pending], tally.kind))
                else:
                    tally.add(_tapped_slots(tally, tap, pending))
            if self.prediction is not None:
                self._count_prediction(self.prediction, [outputs for _, outputs in pending if self.output in outputs])

    def _count_prediction(self, tally: Tally, outputs: list[Mapping[str, Any]]) -> None:
        if not outputs:
            return
        predictions = _joined([part[self.output] for part in outputs], tally.kind)
        if self.label_scores is None:
            tally.count(predictions)
            return
        scores = np.concatenate([part[self.label_scores.scores] for part in outputs])
        tally.add(self.label_scores.slots(predictions, scores, tally.slot_of.__getitem__))

    def publish(self) -> None:
        """Count what is pending and export it: per-flush exports would cost the hot path label lookups."""
        self.flush()
        with self._lock:
            if self.on_publish is not None:
                self.on_publish()

    def flags(self, inputs: Mapping[str, Any], rows: int) -> list[dict[str, list[str]]]:
        """Per row, the inputs that were missing, out of the training range, or an unseen category."""
        found: list[dict[str, list[str]]] = [{"missing": [], "out_of_range": [], "unseen": []} for _ in range(rows)]
        for tally in self.inputs:
            for row, flag in enumerate(tally.flags(np.asarray(inputs[tally.name], dtype=object))):
                if flag is not None:
                    found[row][flag].append(tally.name)
        return found


def _tapped_slots(tally: Tally, tap: InputTap, pending: list[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> Any:
    """A tapped input's slots, in row order: off the taps where a batch has them, by value where it has
    not (a cached answer carries no taps)."""
    runs = []
    for tapped, run in itertools.groupby(pending, key=lambda part: tap.one_hot in part[1]):
        parts = list(run)
        runs.append(tap.slots([outputs for _, outputs in parts]) if tapped
                    else tally.slots(_joined([inputs[tally.name] for inputs, _ in parts], tally.kind)))  # fmt: skip
    return runs[0] if len(runs) == 1 else np.concatenate(runs)


def _joined(columns: list[Any], kind: str) -> npt.NDArray[Any]:
    """One flat array of a column's pending parts: arrays, or lists as plain JSON columns arrive (None:
    missing), as floats for numbers (None becomes NaN) and objects for categories.

    Per part only a view is taken (ravel): converting each part on its own cost ~0.5 us a part and
    input, the larger share of counting a small batch (profiled at 1-5 rows per batch)."""
    dtype = np.float64 if kind == "numeric" else object
    if all(isinstance(column, np.ndarray) for column in columns) and len({column.ndim for column in columns}) == 1:
        # The batcher's columns: arrays of one layout, joined in one call and flattened once (a ravel per
        # part cost ~0.3 us a part and column, most of counting a stream of one-row batches).
        joined = np.concatenate(columns).reshape(-1)
        if kind == "numeric" or joined.dtype == object:
            return joined
        return joined.astype(str).astype(object)
    parts = [column.ravel() if isinstance(column, np.ndarray) else np.asarray(column, dtype=dtype).ravel()
             for column in columns]  # fmt: skip
    if kind != "numeric":  # labels of an integer classifier are numbers; categories are matched as text
        parts = [part if part.dtype == object else part.astype(str).astype(object) for part in parts]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, dtype=None if kind == "numeric" else object)


class _Slots(dict[Any, int]):
    """Category -> slot; anything else (an unseen category, None) is the unseen slot: found values cost no
    Python call, only missing ones call __missing__."""

    unseen = 0

    def __missing__(self, key: Any) -> int:
        return self.unseen


def _input_tally(name: str, feature: Any, reference: Any, window_rows: int) -> Tally:
    kind = (feature or {}).get("kind") or (reference or {}).get("kind") or "numeric"
    if kind == "categorical":
        categories = tuple((feature or {}).get("categories") or sorted((reference or {}).get("frequencies", {})))
        frequencies = None if reference is None else reference.get("frequencies")
        expected = None
        if frequencies is not None:
            expected = np.array([frequencies.get(category, 0.0) for category in categories] + [0.0])
        return Tally(name, "categorical", None, None, categories, None, expected, window_rows)
    minimum = _number((feature or {}).get("minimum", (reference or {}).get("minimum")))
    maximum = _number((feature or {}).get("maximum", (reference or {}).get("maximum")))
    edges = shares = None
    if reference is not None and reference.get("shares"):
        edges = np.array(reference.get("edges", []), dtype=np.float64)
        shares = np.array(reference["shares"], dtype=np.float64)
    return Tally(name, "numeric", minimum, maximum, (), edges, shares, window_rows)


def _prediction_tally(card: ModelCard, reference: Any, window_rows: int) -> Tally | None:
    if card["task"] == "classification" and card["classes"]:
        classes = tuple(str(label) for label in card["classes"])
        expected = None
        if reference is not None and reference.get("kind") == "classes":
            expected = np.array([reference["shares"].get(label, 0.0) for label in classes] + [0.0])
        return Tally("prediction", "categorical", None, None, classes, None, expected, window_rows)
    if reference is None or reference.get("kind") != "bins":
        return Tally("prediction", "numeric", None, None, (), None, None, window_rows)
    edges = np.array(reference["edges"], dtype=np.float64)
    return Tally("prediction", "numeric", None, None, (), edges, np.array(reference["shares"]), window_rows)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
