"""Input quality and drift: what callers send to one model version, counted against its training reference.

Per input: values seen, missing values, numbers below or above the training range, categories the
model never saw, and a histogram on the training bins (card["monitoring"]); the served predictions
the same way. A rolling window of the most recent rows gives each a population stability index (PSI)
against the training shares.

Counting costs the hot path one list append per batch (and the holding of it, below), and a one-row
batch a Python scalar per column (`_record_row`): batches wait in `pending` and are counted together,
vectorised, once FLUSH_ROWS rows or FLUSH_BATCHES batches have gathered, when someone reads the
figures (and each second with several workers, serve/app.py), since a numpy call costs about a
microsecond whatever its size and a one-row batch has a column per input. Categorical inputs and a
classifier's label are read off the model's own tensors where they can be (serve/taps.py; inputs in
batches of 32 rows or more), not hashed string by string.
What it still costs, side by side (penguins; docs/benchmarks.md): at 64 connections ~2.5 % of one-row
and of 100-row requests, at one connection ~3 % (6.8 % before one-row batches were kept as values). At
64 one-row connections holding batches until the flush once cost more than counting them (holding them
uncounted 0.972, the whole 0.962); the labels' strings and scores, the largest held part, are read when
a tapped batch is recorded, and a tapped batch keeps only the columns counting reads (`_Tapped`).
No HTTP here; serve/drift.py exports the figures.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from contract import CategoryTap, ModelCard
from serve.taps import InputTap, LabelScores
from serve.watched import Tally, input_tally, prediction_tally

FLUSH_ROWS = 4096
FLUSH_BATCHES = 256
"""Pending batches are counted once either is reached: many rows amortise a count's fixed cost (~10 numpy
calls a column: ~0.5 ms a flush of penguins' 7 columns, timed in the server), and the batch bound keeps
what a stream of one-row batches holds small (256 one-row feeds: a few hundred KB). At 64 the fixed cost
was most of counting 16-row batches: 0.97 against 0.68 us a row at 256, measured in process."""


class QualityMonitor:
    """Every input of one model version, and its prediction; `record` is the hot path, the rest is reads."""

    def __init__(self, card: ModelCard, inputs: Sequence[str], output: str, window_rows: int) -> None:
        reference: dict[str, Any] = dict(card.get("monitoring") or {})
        described = {feature["name"]: feature for feature in card["features"]}
        features = reference.get("features", {})
        self.inputs = [input_tally(name, described.get(name), features.get(name), window_rows) for name in inputs]
        self.prediction = prediction_tally(card, reference.get("prediction"), window_rows)
        self.output = output
        """The output that is the prediction: the label, or the value."""
        self.taps: dict[str, InputTap] = {}
        """Input name -> how to read its slots off the model's tensors (serve/taps.py), once checked."""
        self.label_scores: LabelScores | None = None
        self.on_publish: Callable[[], None] | None = None
        """Told to export what was counted (to the metrics): by `publish`, on reads (and each second with workers)."""
        self._tap_marker: str | None = None
        """A tap's tensor: a batch whose outputs have it has every tap's (Model.run_tapped) and is counted off them."""
        self._pending: list[_Batch | _Tapped | list[Any]] = []
        """Recorded batches in order: `_Tapped`, `_Batch`, or a one-row batch's values (inputs', then prediction's)."""
        self._pending_rows = 0
        self._names = [tally.name for tally in self.inputs]
        self._row_dtypes: list[np.dtype[Any]] | None = None
        """The one-row values' dtypes (the model's, fixed for its version): the arrays they are counted from."""
        self._readers: dict[type, Callable[[Any], _RunSlots]] = {
            list: self._row_slots,
            _Tapped: self._tapped_slots,
            _Batch: self._batch_slots,
        }
        """Each kind of pending batch's reader, for the flush."""
        self._lay_out_tapped()
        self._lock = threading.Lock()

    def read_off(self, taps: Mapping[str, CategoryTap], scores: str | None) -> None:
        """Count the tapped inputs off their taps, and the label off `scores` (serve/taps.py)."""
        for tally in self.inputs:
            tap = taps.get(tally.name)
            reader = None if tap is None else InputTap.from_card(tap, tally.categories, tally.missing_slot)
            if reader is not None:
                self.taps[tally.name] = reader
        self._tap_marker = next((tap.one_hot for tap in self.taps.values()), None)
        if scores is not None and self.prediction is not None and self.prediction.kind == "categorical":
            self.label_scores = LabelScores(scores, np.array(self.prediction.categories, dtype=object))
        self._lay_out_tapped()

    def _lay_out_tapped(self) -> None:
        """What a tapped batch keeps (`_Tapped`), and where each input's columns are in it."""
        untapped = [tally.name for tally in self.inputs if tally.name not in self.taps]
        tensors = [tensor for tap in self.taps.values() for tensor in (tap.one_hot, tap.missing)]
        self._untapped_columns = _getter(untapped)
        self._tap_columns = _getter(tensors)
        self._column_at = [len(untapped) + tensors.index(tap.one_hot) if (tap := self.taps.get(tally.name))
                           else untapped.index(tally.name) for tally in self.inputs]  # fmt: skip
        """Per input, its column in a `_Tapped` (a tapped input's one-hot, its missing flags next)."""

    def record(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], rows: int) -> None:
        """A scored batch (or a cached answer): its input columns and its outputs (tapped ones too), counted later."""
        if rows == 1 and self._record_row(inputs, outputs):
            return
        batch: _Batch | _Tapped
        if self._tap_marker is not None and self._tap_marker in outputs:
            # Counted off the taps: only the columns counting reads are kept, as one tuple taken in C.
            if self.label_scores is not None and self.prediction is not None:
                # The labels are read now, off the scores: held until the flush (~90 batches at 64 one-row
                # connections), a new string per label and the scores' memory cost more than these few numpy
                # calls. One-row requests, on / off: 0.962, 0.965 -> 0.970, 0.969 (18 side-by-side pairs each).
                scores = outputs[self.label_scores.scores]
                prediction = self._label_slots(self.prediction, self.label_scores, outputs[self.output], scores)
            else:
                prediction = outputs[self.output]
            batch = _Tapped((*self._untapped_columns(inputs), *self._tap_columns(outputs), prediction))
        else:
            batch = _Batch(inputs, outputs)
        with self._lock:
            self._pending.append(batch)
            self._pending_rows += rows
            full = self._pending_rows >= FLUSH_ROWS or len(self._pending) >= FLUSH_BATCHES
        if full:
            self.flush()

    def flush(self) -> None:
        """Count what is pending: one numpy pass per column over each run of pending batches of one kind."""
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
            if not pending:
                return
            found: list[list[npt.NDArray[Any]]] = [[] for _ in self.inputs]
            predicted: list[npt.NDArray[Any]] = []
            for kind, part in itertools.groupby(pending, key=type):
                inputs, prediction = self._readers[kind](list(part))
                for slots, each in zip(found, inputs, strict=True):
                    slots.append(each)
                if prediction is not None:
                    predicted.append(prediction)
            for tally, slots in zip(self.inputs, found, strict=True):
                tally.add(_one_array(slots))
            if self.prediction is not None and predicted:
                self.prediction.add(_one_array(predicted))

    def _row_slots(self, rows: list[list[Any]]) -> _RunSlots:
        """A run of one-row batches' values: each column rebuilt as an array (`_row_column`), then its slots."""
        inputs = [tally.slots(self._row_column(rows, index, tally.kind)) for index, tally in enumerate(self.inputs)]
        if self.prediction is None:
            return inputs, None
        return inputs, self.prediction.slots(self._row_column(rows, -1, self.prediction.kind))

    def _tapped_slots(self, run: list[_Tapped]) -> _RunSlots:
        """A run of tapped batches: their columns joined by one transposition, the tapped inputs read off their
        taps, the label's slots as `record` read them."""
        columns = list(zip(*run, strict=True))
        inputs = []
        for tally, at in zip(self.inputs, self._column_at, strict=True):
            tap = self.taps.get(tally.name)
            # The batcher's arrays, of one layout: joined without `_joined`'s checks (~10 us a column per flush
            # of ~90 batches); `slots` takes any dtype.
            inputs.append(tally.slots(np.concatenate(columns[at])) if tap is None
                          else tap.slots(columns[at], columns[at + 1]))  # fmt: skip
        if self.prediction is None:
            return inputs, None
        predictions = np.concatenate(columns[-1])
        return inputs, predictions if self.label_scores is not None else self.prediction.slots(predictions)

    def _batch_slots(self, run: list[_Batch]) -> _RunSlots:
        """A run of batches kept as they came (under TAPPED_ROWS rows, or a cached answer): counted by value."""
        inputs = [
            tally.slots(_joined([batch.inputs[tally.name] for batch in run], tally.kind)) for tally in self.inputs
        ]
        if self.prediction is None:
            return inputs, None
        outputs = [batch.outputs for batch in run if self.output in batch.outputs]
        if not outputs:
            return inputs, None
        if self.label_scores is not None:
            labels = _joined([part[self.output] for part in outputs], "categorical")
            scores = _one_array([part[self.label_scores.scores] for part in outputs])
            return inputs, self._label_slots(self.prediction, self.label_scores, labels, scores)
        return inputs, self.prediction.slots(_joined([part[self.output] for part in outputs], self.prediction.kind))

    def _row_column(self, rows: list[list[Any]], index: int, kind: str) -> npt.NDArray[Any]:
        """One column of one-row values as the array their batches had, then as `_joined` gives it.

        Every front end gives a model's inputs its own dtypes, so the first one-row batch's stand for all
        (checking each row's cost a third of what keeping values saves, served). Text is rebuilt as wide as
        its values need, and values the dtype cannot hold (NaN after integers) as numpy would join them."""
        assert self._row_dtypes is not None
        values = list(map(operator.itemgetter(index), rows))
        dtype = self._row_dtypes[index]
        try:
            column = np.array(values, None if dtype.kind in "US" else dtype)
        except (TypeError, ValueError, OverflowError):
            column = np.array(values)
        return _joined([column], kind)

    def _record_row(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> bool:
        """Keep a one-row batch of arrays as its values, Python scalars; False for anything else (a cached
        answer's list columns, a column of several values a row), which `record` keeps as it came.

        Kept as arrays, a stream of one-row batches (one connection) cost each flush a numpy part per
        batch and column, ~115 ns each to join and ~75 ns to check, cold by then. A scalar is ~50 ns here,
        and the flush makes one array of them a column: 3.0 -> 1.7 us a request in process, and served at
        one connection 1.053x the requests per CPU-second (18 side-by-side pairs). Batches of 2-15 rows kept
        as lists of values measured no better at 8 connections (0.997) and cost the one-row gain a third."""
        try:
            row = [inputs[name].item() for name in self._names]
            row.append(outputs[self.output].item())
        except (AttributeError, KeyError, ValueError):
            return False
        with self._lock:
            if self._row_dtypes is None:
                self._row_dtypes = [inputs[name].dtype for name in self._names] + [outputs[self.output].dtype]
            self._pending.append(row)
            self._pending_rows += 1
            full = self._pending_rows >= FLUSH_ROWS or len(self._pending) >= FLUSH_BATCHES
        if full:
            self.flush()
        return True

    def _label_slots(self, tally: Tally, reader: LabelScores, labels: Any, scores: Any) -> npt.NDArray[np.intp]:
        if labels.dtype != object:  # an integer classifier's labels are matched as text
            labels = _joined([labels], "categorical")
        return reader.slots(labels, scores, tally.slot_of)

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


class _Batch(NamedTuple):
    """A batch counted by value, as it came, until the flush."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]


class _Tapped(tuple[Any, ...]):
    """A tapped batch until the flush: its untapped inputs, each tapped input's one-hot and missing tensors
    (in the order of `QualityMonitor.inputs`), then its prediction: the label's slots when read off the
    scores, else the output."""

    __slots__ = ()


_RunSlots = tuple[list[npt.NDArray[Any]], npt.NDArray[Any] | None]
"""A run's slots: per input, and its predictions' (None without any)."""


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """`names`' values in a mapping, as a tuple taken in C (itemgetter gives a lone name's value bare)."""
    if len(names) == 1:
        name = names[0]
        return lambda mapping: (mapping[name],)
    return operator.itemgetter(*names) if names else lambda mapping: ()


def _one_array(parts: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """Consecutive parts as one array: a lone part as it is, not copied."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _joined(columns: list[Any], kind: str) -> npt.NDArray[Any]:
    """One flat array of a column's pending parts: arrays, or lists as plain JSON columns arrive (None:
    missing), as floats for numbers (None becomes NaN) and objects for categories.

    Per part only a view is taken (ravel): converting each part on its own cost ~0.5 us a part and
    input, the larger share of counting a small batch (profiled at 1-5 rows per batch)."""
    if len(columns) == 1 and isinstance(lone := columns[0], np.ndarray) and (kind == "numeric" or lone.dtype == object):
        # A lone part already of its kind (a tapped batch's labels at `record`): only flattened, without the
        # checks below, ~1 us of a ~4 us label read in process.
        return lone.reshape(-1)
    dtype = np.float64 if kind == "numeric" else object
    if all(isinstance(column, np.ndarray) for column in columns) and len({column.ndim for column in columns}) == 1:
        # The batcher's columns: arrays of one layout, joined in one call and flattened once (a ravel per
        # part cost ~0.3 us a part and column, most of counting a stream of one-row batches).
        joined = _one_array(columns).reshape(-1)
        if kind == "numeric" or joined.dtype == object:
            return joined
        return joined.astype(str).astype(object)
    parts = [column.ravel() if isinstance(column, np.ndarray) else np.asarray(column, dtype=dtype).ravel()
             for column in columns]  # fmt: skip
    if kind != "numeric":  # labels of an integer classifier are numbers; categories are matched as text
        parts = [part if part.dtype == object else part.astype(str).astype(object) for part in parts]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, dtype=None if kind == "numeric" else object)
