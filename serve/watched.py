"""A watched column (an input, or the prediction): its training reference, its slots and what was counted.

A value's slot says everything counted of it; every figure is a bincount of slots (serve/quality.py
gathers the batches, serve/taps.py reads categorical slots off the model's own tensors).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from contract import ModelCard

UNSEEN = "(unseen)"
CHUNKS_PER_WINDOW = 16
"""The window's chunks are at least window_rows / this many rows, a smaller flush joining the newest one's."""


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
    counts: npt.NDArray[np.int64] = field(init=False)
    """Values counted per slot, ever: every figure is read off it, so counting a batch is one addition."""

    def __post_init__(self) -> None:
        # Every value gets one slot, and every count is one bincount over slots (each extra pass over a
        # batch, a comparison or a mask, cost about as much as the bincount itself: profiled).
        #   categorical: the categories, then unseen, then missing.
        #   numeric:     how many `cuts` the value reaches, then missing. With a training range the cuts are
        #                [minimum, *edges, just above maximum]: position 0 is below the range, the last
        #                above it, and they fold into the first and last training bin for the histogram.
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
        self.counts = np.zeros(slots + 1, dtype=np.int64)
        self._bin_count = len(self.labels)
        self._recent: deque[tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.int64]]] = deque()
        """The newest batches' slots and their counts, oldest first: at least the last `window_rows` rows."""
        self._recent_rows = 0
        self._recent_counts = np.zeros(slots + 1, dtype=np.int64)
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

    @property
    def values(self) -> int:
        return int(self.counts.sum())

    @property
    def missing(self) -> int:
        return int(self.counts[self.missing_slot])

    @property
    def unseen(self) -> int:
        """Categories the model never saw."""
        return int(self.counts[len(self.categories)]) if self.kind == "categorical" else 0

    @property
    def low(self) -> int:
        """Numbers below the training range."""
        return int(self.counts[0]) if self._ranged else 0

    @property
    def high(self) -> int:
        """Numbers above the training range."""
        return int(self.counts[self.missing_slot - 1]) if self._ranged else 0

    @property
    def bins(self) -> npt.NDArray[np.int64]:
        """Counts per training bin (categorical: per category, then unseen)."""
        return self._fold(self.counts)

    def count(self, column: npt.NDArray[Any]) -> None:
        self.add(self.slots(column))

    def slots(self, column: npt.NDArray[Any]) -> npt.NDArray[np.integer[Any]]:
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
        # How many cuts each value reaches, as one comparison of every cut with every value, summed down the
        # cuts (a [cuts, rows] bool matrix: the sum adds whole rows, contiguous): 11 against 27 ns a value
        # for a pass per cut, 35 for searchsorted, whose binary search mispredicts on unsorted rows
        # (measured on 4,400 rows, 11 cuts). A NaN reaches no cut and goes to the missing slot (infinities
        # are refused at parse; a prediction's infinity stays above the range).
        reached = np.less_equal.outer(self._cuts[numbers.dtype], numbers)
        slot: npt.NDArray[np.uint8] = reached.sum(axis=0, dtype=np.uint8)
        slot[numbers != numbers] = self.missing_slot
        return slot

    def add(self, slot: npt.NDArray[np.integer[Any]]) -> None:
        """Count a batch of values by their slots: the figures are read off the slot counts when asked for
        (a scrape, /quality), not derived per flush: 297 against 326 ns a row of counting 100-row batches."""
        counted = np.bincount(slot, minlength=self.missing_slot + 1)
        self.counts += counted
        self._remember(slot, counted)

    def _fold(self, counted: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Slot counts as counts per training bin (or category and unseen), in a new array."""
        if self.kind == "categorical" or not self._ranged or not self._bin_count:
            return counted[: self._bin_count].copy()
        inner = counted[1 : self.missing_slot - 1].copy()  # positions 1..k+1 are training bins 0..k
        inner[0] += counted[0]  # below the range: bin 0 by the binning rule
        inner[-1] += counted[self.missing_slot - 1]  # above it: the last bin
        return inner

    def _remember(self, slot: npt.NDArray[np.integer[Any]], counted: npt.NDArray[np.int64]) -> None:
        """Keep `slot` as the newest of the recent chunks, dropping the oldest while the rest still cover
        the window: no copy and no count of the rows leaving it here (reads do that, serve/drift.py's
        once a second, rather than every flush: ~60 ns a row of counting, measured in process)."""
        if self._recent and len(self._recent[-1][0]) < self.window_rows // CHUNKS_PER_WINDOW:
            # Joined to a small newest chunk: a quiet stream flushes a few rows a second, and a window of
            # one-row chunks would hold ~250 bytes of arrays for each row. So ~18 chunks at most once the
            # window is a few hundred rows (the default is 10,000); a smaller window keeps a chunk per flush.
            last, last_counted = self._recent.pop()
            self._recent.append((np.concatenate((last, slot)), last_counted + counted))
        else:
            self._recent.append((slot, counted))
        self._recent_rows += len(slot)
        self._recent_counts += counted
        while self._recent_rows - len(self._recent[0][0]) >= self.window_rows:
            gone, gone_counted = self._recent.popleft()
            self._recent_rows -= len(gone)
            self._recent_counts -= gone_counted

    def window(self) -> npt.NDArray[np.int64]:
        """Counts per bin over the last `window_rows` rows, those that were not missing."""
        counts = self._recent_counts
        extra = self._recent_rows - self.window_rows
        if extra > 0:  # the oldest chunk's first rows are older than the window
            counts = counts - np.bincount(self._recent[0][0][:extra], minlength=len(counts))
        return self._fold(counts)

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


class _Slots(dict[Any, int]):
    """Category -> slot; anything else (an unseen category, None) is the unseen slot: found values cost no
    Python call, only missing ones call __missing__."""

    unseen = 0

    def __missing__(self, key: Any) -> int:
        return self.unseen


def input_tally(name: str, feature: Any, reference: Any, window_rows: int) -> Tally:
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


def prediction_tally(card: ModelCard, reference: Any, window_rows: int) -> Tally | None:
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
