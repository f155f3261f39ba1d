"""Screening a CSV's columns for what cannot be a feature as read: a saved row index, an ID or free text,
dates, numbers mixed with text.

Each check answers why (a reason or the advice a refusal gives), or None; export/table.py decides
what to do with it (leave the column out, refuse it) and never asks about a column the user typed.
The target gets one check too: losing a class, or most of the file, to rows read as missing. Notes
say, without changing anything, what a user may want to change: a task, a rare class, a column.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

# Fewer rows than this tell nothing about a column's values being unique or counting rows.
MIN_ROWS_TO_JUDGE = 20
# A string column with more distinct values than this share names rows instead of grouping them: an ID, free text.
MAX_DISTINCT_SHARE = 0.9
# "Mostly dates": this share of the distinct values has a date's shape and parses as one.
DATE_SHARE = 0.8
MAX_DATE_CHECKS = 500
"""Distinct values parsed when looking for dates: enough to judge, cheap on any file."""
# Dates as people write them, with a year: 2024-03-01, 1/3/2024, 01.03.24, Mar 1 2024, 1 March 2024.
# A bare month name or number is not a date: a "month" column of "March" is a category.
DATE_SHAPE = re.compile(
    r"\d{4}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|[A-Za-z]{3,9}\.? \d{1,2},? \d{4}|\d{1,2} [A-Za-z]{3,9}\.? \d{4}"
)
# pandas names a column whose header is empty "Unnamed: <position>": in practice a saved row index.
UNNAMED = re.compile(r"Unnamed: \d+")
# Rows dropped for a missing target may be at most this share of the file. For a classifier, a group of
# them of at least NOTICEABLE_TARGET_LOSS of the file that is as large as a class looks like a class read as
# missing: for a marker the user listed (a class "None" and --na-values None), as large as the smallest class;
# for empty fields, which are missing on purpose more often, larger than the largest class.
MAX_TARGET_LOSS = 0.5
NOTICEABLE_TARGET_LOSS = 0.1
MAX_QUOTED = 3
"""Example values quoted in a message."""
FEW_CLASSES = 10
"""A whole-number target with at most this many values reads like classes: said, not decided, on auto."""
RARE_CLASS = 0.05
"""A class under this share of the rows gets a note: accuracy hides a model that never predicts it."""


def row_index_reason(column: pd.Series, counting: bool) -> str | None:
    """Why `column` looks like a saved row index: no header, or (`counting`) integers counting the rows in order."""
    if UNNAMED.fullmatch(str(column.name)):
        return "its header is empty (a saved row index?)"
    rows = len(column)
    if not counting or rows < MIN_ROWS_TO_JUDGE or not pd.api.types.is_integer_dtype(column):
        return None
    first = int(column.iloc[0])
    if first in (0, 1) and (column.to_numpy() == np.arange(first, first + rows)).all():
        return f"it counts the rows, {first} to {first + rows - 1} in order (a saved row index)"
    return None


def mixed_refusal(column: pd.Series, keep: str) -> str | None:
    """Mostly numbers plus some text (an R file's "NA", a "?"): neither reading is safe to guess.

    `keep` is the advice for reading every value as text.
    """
    present = column.dropna()
    parsed = pd.to_numeric(present, errors="coerce")
    if not len(present) or parsed.notna().sum() <= len(present) / 2:
        return None
    text = present[parsed.isna()].value_counts().head(MAX_QUOTED)
    if text.empty:  # numbers only (read as numbers already, or as text by --categorical)
        return None
    quoted = ", ".join(f"{value!r} in {count} rows" for value, count in text.items())
    return (
        f"holds numbers and text ({quoted}): --na-values {','.join(map(str, text.index))} reads the text as missing, "
        + keep
    )


def date_refusal(column: pd.Series) -> str | None:
    """Dates (most distinct values have a date's shape and parse as one): the advice, or None."""
    distinct = pd.Series(column.dropna().astype(str).unique()[:MAX_DATE_CHECKS])
    shaped = distinct[distinct.str.contains(DATE_SHAPE)]
    if not len(distinct) or len(shaped) < DATE_SHARE * len(distinct):
        return None
    parsed = pd.to_datetime(shaped, errors="coerce", format="mixed")
    if parsed.notna().sum() < DATE_SHARE * len(distinct):
        return None
    return (
        f"looks like dates (e.g. {quote(shaped)}): derive numeric parts (year, month, day of week) as new "
        f"columns, or leave it out with --drop {column.name} (--categorical {column.name} keeps each date a category)"
    )


def id_refusal(column: pd.Series) -> str | None:
    """An ID or free text (almost every value distinct): the advice, or None."""
    present = column.dropna()
    distinct = present.nunique()
    if len(present) < MIN_ROWS_TO_JUDGE or distinct <= MAX_DISTINCT_SHARE * len(present):
        return None
    return (
        f"looks like an ID or free text ({distinct} of {len(present)} values distinct, e.g. {quote(present)}): "
        f"leave it out with --drop {column.name} (--categorical {column.name} keeps it as categories)"
    )


def quote(values: pd.Series) -> str:
    """The first MAX_QUOTED values, quoted, for a message."""
    return ", ".join(repr(str(value)) for value in values.iloc[:MAX_QUOTED])


def target_loss_refusal(labels: pd.Series, target: str, without: dict[str, int], rows: int, task: str) -> str | None:
    """Why losing these rows to missing targets is refused (a group as large as a class, or most of the file), or None.

    The class check comes first: when both hold, it is the one that says what went wrong.
    """
    lost = sum(without.values())
    classes = labels.value_counts().to_dict() if task == "classification" else {}
    for marker, count in without.items():
        if count < NOTICEABLE_TARGET_LOSS * rows or not classes:
            continue
        smallest, largest = min(classes, key=classes.__getitem__), max(classes, key=classes.__getitem__)
        if marker and count >= classes[smallest]:
            return (
                f"{marker!r} marks {count} of {rows} rows of {target!r} as missing, as many as a class (smallest: "
                f"{smallest!r}, {classes[smallest]} rows): if {marker!r} is a class, leave it out of "
                "--na-values (by default only empty fields are missing)"
            )
        if not marker and count > classes[largest]:
            return (
                f"{count} of {rows} rows have an empty {target!r}, more than any class has (largest: "
                f"{largest!r}, {classes[largest]} rows): if empty means a class, write its name in the file; "
                "otherwise remove those rows"
            )
    if lost > MAX_TARGET_LOSS * rows:
        return (
            f"{lost} of {rows} rows have no {target!r} ({describe_markers(without)}): that is most of the file; "
            "fill in the target or remove those rows (only empty fields and --na-values are missing)"
        )
    return None


def describe_markers(without: dict[str, int]) -> str:
    """{"": 3, "NA": 2} -> "empty: 3, 'NA': 2": how the missing targets were written."""
    return ", ".join(f"{'empty' if token == '' else repr(token)}: {count}" for token, count in without.items())


def notes(frame: pd.DataFrame, labels: pd.Series, target: str, task: str, chosen_by_user: bool) -> list[str]:
    """What to say, changing nothing: a few whole numbers learned as a regression (on auto), a class too rare
    for accuracy to notice a model that never predicts it, a column with one value, a header pandas renamed."""
    said = []
    if task == "regression":
        values = pd.to_numeric(labels, errors="coerce").dropna()
        if not chosen_by_user and len(values) and (values == values.round()).all() and values.nunique() <= FEW_CLASSES:
            said.append(f"target {target!r} has {values.nunique()} whole-number values and is learned as a "
                        "regression; --task classification learns them as classes")  # fmt: skip
    else:
        shares = labels.value_counts(normalize=True)
        if shares.iloc[-1] < RARE_CLASS:
            said.append(f"class {shares.index[-1]!r} is {shares.iloc[-1]:.1%} of the rows: a model that never "
                        "predicts it still scores a high accuracy; read f1_macro in the card")  # fmt: skip
    for name in frame.columns:
        if frame[name].nunique(dropna=False) <= 1:
            said.append(
                f"column {name!r} holds one value in every row: it cannot inform the model (--drop leaves it out)"
            )
        base, dot, number = str(name).rpartition(".")
        if dot and number.isdigit() and base in frame.columns:
            said.append(
                f"column {name!r} is a second {base!r} in the header, renamed by pandas: rename one in the file"
            )
    return said


def not_in(name: str, path: Path, columns: list[str]) -> str:
    """A column named that the file lacks; a file read as one column whose name holds the others is not
    comma-separated, which is said."""
    message = f"column {name!r} is not in {path} (columns: {columns})"
    if len(columns) == 1 and any(mark in columns[0] for mark in ";\t|"):
        message += "; the file reads as one column: tabserve reads comma-separated files, so convert it first"
    return message
