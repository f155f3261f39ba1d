"""Reading a user's CSV into a prepared frame: which fields are missing, which columns the model sees, as what.

Only empty fields are missing unless the user names more (`--na-values`), so a class literally called
"None" or "NA" stays a class. Columns that cannot be features (export/screening.py says which) are left
out with a note (a saved row index) or refused with advice (IDs, free text, dates, numbers mixed with
text); `--drop`, `--categorical` and `--numeric` always win over what is inferred.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd

from contract import Kind, Task
from export import screening
from export.features import column_kind, prepare_frame
from export.screening import (
    MAX_QUOTED,
    date_refusal,
    describe_markers,
    id_refusal,
    mixed_refusal,
    row_index_reason,
    target_loss_refusal,
)
from export.training import infer_task


@dataclass(frozen=True)
class ColumnChoices:
    """What the user said about columns: left out, typed by hand, and which strings besides '' mean missing."""

    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    na_values: tuple[str, ...] = ()


class TableError(ValueError):
    """A CSV or a column choice that cannot become a frame; `option` names the option to change, if there is one."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Table:
    """A prepared frame (float32 numbers, '' for missing strings), and how the file was read."""

    frame: pd.DataFrame
    task: Task
    rows_read: int
    rows_without_target: int
    left_out: dict[str, str]
    """Column -> why the model does not see it."""
    typed: dict[str, Kind]
    """The columns the user typed with --categorical/--numeric."""
    na_values: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """How the file became the training frame, for the card's metrics["data"]."""
        return {
            "rows": self.rows_read,
            "rows_without_target": self.rows_without_target,
            "na_values": ["", *self.na_values],
            "left_out": dict(self.left_out),
            "typed": dict(self.typed),
        }


def split_na_values(values: Sequence[str]) -> tuple[str, ...]:
    """('NA,None', '?') -> ('NA', 'None', '?'): each --na-values is a comma-separated list."""
    tokens = (token.strip() for value in values for token in value.split(","))
    return tuple(dict.fromkeys(token for token in tokens if token))


def read_training_table(
    path: Path, target: str, choices: ColumnChoices, task: Task | None, note: Callable[[str], None]
) -> tuple[Table, pd.Series]:
    """Read a CSV to train on: the target's labels split off, unusable columns left out or refused, the rest typed.

    `task` None infers it from the target. Raises TableError naming the column and what to do.
    """
    columns = _check_names(path, choices, target)
    frame = _read(path, choices)
    rows = len(frame)
    left_out = dict.fromkeys(choices.drop, "--drop")
    left_out |= _row_indexes(frame, choices, {target, *choices.drop}, note, counting=True)
    labels = frame.pop(target)
    # A number target with R's "NA" in it would otherwise pass for hundreds of classes.
    mixed = None if task == "classification" else mixed_refusal(labels, "--task classification keeps them as classes")
    if mixed:
        raise TableError(f"the target {target!r} {mixed}")
    frame = frame.drop(columns=list(left_out))
    if frame.columns.empty:
        raise TableError(f"no columns are left to learn from: besides the target {target!r}, all were left out")
    frame, labels, without = _drop_missing_target(path, columns, frame, labels, target, choices, note)
    chosen = task or infer_task(labels)
    _refuse(target_loss_refusal(labels, target, without, rows, chosen))
    if chosen == "classification":
        labels = _class_labels(labels)
    for said in screening.notes(frame, labels, target, chosen, chosen_by_user=task is not None):
        note(said)
    prepared = _prepare(frame, choices, judge=True)
    table = Table(prepared, chosen, rows, sum(without.values()), left_out, _typed(choices), choices.na_values)
    return table, labels


def read_sample_table(
    path: Path,
    choices: ColumnChoices,
    target: str | None,
    task: Task,
    expected: Sequence[str] | None,
    note: Callable[[str], None],
) -> tuple[Table, pd.Series | None]:
    """Read a fitted pipeline's sample: `expected` (its fitted column names, if it knows them) picks the columns.

    The pipeline already decided what its inputs are, so nothing is left out or refused on the guess
    of an ID or a date; numbers mixed with text are still refused, as they cannot be read one way.
    """
    columns = _check_names(path, choices, target)
    frame = _read(path, choices).drop(columns=list(choices.drop))
    rows = len(frame)
    left_out = dict.fromkeys(choices.drop, "--drop")
    if expected is None:
        # A pipeline fitted on unnamed columns takes them by position: a saved row index would shift them all.
        left_out |= _row_indexes(frame, choices, {target} if target else set(), note, counting=False)
        frame = frame.drop(columns=[name for name in left_out if name in frame.columns])
    labels: pd.Series | None = None
    without: dict[str, int] = {}
    if target is not None:
        labels = frame.pop(target)
        frame, labels, without = _drop_missing_target(path, columns, frame, labels, target, choices, note)
        _refuse(target_loss_refusal(labels, target, without, rows, task))
    if expected is not None:
        missing = [name for name in expected if name not in frame.columns]
        if missing:
            raise TableError(f"the sample lacks columns the pipeline was fitted on: {missing}", "--sample")
        frame = frame[list(expected)]
    prepared = _prepare(frame, choices, judge=False)
    table = Table(prepared, task, rows, sum(without.values()), left_out, _typed(choices), choices.na_values)
    return table, labels


def _check_names(path: Path, choices: ColumnChoices, target: str | None) -> list[str]:
    """Every column the user named exists, is named once, and is not the target; returns the header."""
    columns = [str(name) for name in _read(path, choices, header_only=True).columns]
    if target is not None and target not in columns:
        raise TableError(screening.not_in(target, path, columns), "--target")
    seen: dict[str, str] = {}
    for option, names in (
        ("--drop", choices.drop),
        ("--categorical", choices.categorical),
        ("--numeric", choices.numeric),
    ):
        for name in names:
            if name not in columns:
                raise TableError(screening.not_in(name, path, columns), option)
            if name == target:
                raise TableError(f"column {name!r} is the --target: {option} chooses among the features", option)
            if name in seen and seen[name] != option:
                raise TableError(f"column {name!r} is given to both {seen[name]} and {option}: choose one", option)
            seen[name] = option
    return columns


def _read(path: Path, choices: ColumnChoices, header_only: bool = False) -> pd.DataFrame:
    # keep_default_na=False: pandas would otherwise read "None", "NA", "null", "nan"... as missing, and a
    # class of that name would vanish with its rows. --categorical columns are read as text, so a code
    # such as "007" keeps its zeros and a code column with gaps does not become "7.0".
    try:
        frame = pd.read_csv(
            path,
            keep_default_na=False,
            na_values=["", *choices.na_values],
            dtype={name: str for name in choices.categorical},
            nrows=0 if header_only else None,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise TableError(f"{path} is not a readable CSV: {exc}") from exc
    if frame.empty and not header_only:
        raise TableError(f"{path} has no rows")
    return frame


def _row_indexes(
    frame: pd.DataFrame, choices: ColumnChoices, skip: set[str], note: Callable[[str], None], counting: bool
) -> dict[str, str]:
    """The columns that look like a saved row index, each with why; a column the user typed is never one.

    `counting` also takes an integer column that counts the rows; otherwise only a column with no header.
    """
    skip = skip | set(choices.categorical) | set(choices.numeric)
    found = {}
    for name in frame.columns:
        reason = None if name in skip else row_index_reason(frame[name], counting)
        if reason:
            found[str(name)] = reason
            note(f"leaving out column {name!r}: {reason} (name it with --numeric or --categorical to keep it)")
    return found


def _drop_missing_target(
    path: Path,
    columns: list[str],
    frame: pd.DataFrame,
    labels: pd.Series,
    target: str,
    choices: ColumnChoices,
    note: Callable[[str], None],
) -> tuple[pd.DataFrame, pd.Series, dict[str, int]]:
    """Rows whose target is missing cannot be learned from: drop them, saying how many and as what they were read."""
    missing = labels.isna()
    if not missing.any():
        return frame, labels, {}
    without = {"": int(missing.sum())}
    if choices.na_values:
        # Which marker each missing target was written as: a token like "None" may be a class in disguise.
        raw = pd.read_csv(path, usecols=[columns.index(target)], dtype=str, keep_default_na=False).iloc[:, 0]
        without = {str(token): int(count) for token, count in raw[missing.to_numpy()].value_counts().items()}
    read_as = describe_markers(without)
    note(f"dropping {int(missing.sum())} of {len(labels)} rows with no {target!r} (read as missing: {read_as})")
    return frame[~missing], labels[~missing], without


def _refuse(message: str | None) -> None:
    if message:
        raise TableError(message)


def _class_labels(labels: pd.Series) -> pd.Series:
    """Integer classes stay integers (also when gaps made pandas read them as floats); any other label is a string."""
    if pd.api.types.is_float_dtype(labels) and (labels == labels.round()).all():
        labels = labels.astype("int64")
    return labels if pd.api.types.is_integer_dtype(labels) else labels.map(str)


def _prepare(frame: pd.DataFrame, choices: ColumnChoices, judge: bool) -> pd.DataFrame:
    """Type every column (the user's word first, then inference) and refuse, all at once, those that cannot be read.

    `judge` also refuses what looks like an ID, free text or dates: for training, where the columns are ours to pick.
    """
    frame = frame.copy()
    kinds: dict[str, Kind] = {}
    refusals: list[str] = []
    for name in frame.columns:
        column = frame[name]
        if name in choices.numeric:
            frame[name] = _parse_numbers(column)
            kinds[name] = "numeric"
        elif name in choices.categorical:
            kinds[name] = "categorical"
        else:
            kinds[name] = column_kind(column)
            if kinds[name] == "categorical":
                keep = f"--categorical {name} keeps every value as a category"
                refusal = mixed_refusal(column, keep) or (date_refusal(column) or id_refusal(column) if judge else None)
                if refusal:
                    refusals.append(f"column {name!r} {refusal}")
    if len(refusals) == 1:
        raise TableError(refusals[0])
    if refusals:
        raise TableError(
            f"{len(refusals)} columns cannot be used as they are:\n" + "\n".join(f"- {line}" for line in refusals)
        )
    return prepare_frame(frame, kinds)


def _parse_numbers(column: pd.Series) -> pd.Series:
    parsed = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & parsed.isna()
    if bad.any():
        value, markers = column[bad].iloc[0], column[bad].unique()
        # A few markers among numbers are missing values in disguise; many are text that is not a number at all.
        advice = (
            f"; --na-values {','.join(map(str, markers))} reads them as missing" if len(markers) <= MAX_QUOTED else ""
        )
        raise TableError(
            f"column {column.name!r} has {int(bad.sum())} of {int(column.notna().sum())} values that are not "
            f"numbers, e.g. {value!r} (data row {int(bad.to_numpy().argmax()) + 1}){advice}",
            "--numeric",
        )
    return parsed


def _typed(choices: ColumnChoices) -> dict[str, Kind]:
    typed: dict[str, Kind] = {}
    for kind, names in (("categorical", choices.categorical), ("numeric", choices.numeric)):
        typed.update((name, cast(Kind, kind)) for name in names)
    return typed
