"""A user's pipeline read on tabserve's missing strings: '' on the wire, where pandas gave it NaN.

tabserve spells a missing string as '' (JSON and ONNX string tensors have no NaN), and so does every
frame the exporter prepares (export/table.py). A pipeline fitted on a pandas frame saw NaN instead. Its
SimpleImputer looks for NaN in string columns, which skl2onnx refuses to convert ("The converter is
implemented when the missing values are string"). A OneHotEncoder fitted on NaN learned it as a
category of its own, which the converted graph would never match: a missing value would be scored as
an unseen one, and a parity check fed '' on both sides would not see it.

`for_empty_strings` gives a copy whose steps read '' where the original's read NaN, and proves it
before anything uses it: the copy on '' and the original on NaN answer the same, exactly, on the rows
given and on each of them with each string column missing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from export.features import column_kind

MAX_CHECK_ROWS = 200


def is_scalar_nan(value: Any) -> bool:
    """NaN as scikit-learn stores a missing value (a float, in object arrays and in missing_values)."""
    return isinstance(value, float) and math.isnan(value)


class MissingStringsError(Exception):
    """The pipeline reads NaN in string columns in a way its copy for '' does not reproduce."""


def for_empty_strings(pipeline: BaseEstimator, frame: pd.DataFrame) -> tuple[BaseEstimator, list[str]]:
    """(the pipeline reading '' as its missing strings, the steps changed for it); `pipeline` itself when
    no step reads NaN in strings, or when it was fitted on '' already. `frame` is prepared ('' for missing
    strings). Raises MissingStringsError when a step's NaN cannot be read as '', or the copy answers otherwise."""
    steps = list(_fitted_steps("", pipeline))
    if any(_fitted_on_empty_strings(step) for _, step in steps):
        return pipeline, []  # like tabserve's own pipelines: '' is what it saw, and what it will get
    for path, step in steps:
        if isinstance(step, OrdinalEncoder) and any(_holds_nan(categories) for categories in step.categories_):
            raise MissingStringsError(
                f"step {path!r} (OrdinalEncoder) learned NaN as a category and encodes it as "
                f"{step.encoded_missing_value!r}, which skl2onnx does not convert: a missing value would be scored "
                "as another; impute the strings before it (SimpleImputer(strategy='constant', fill_value='missing'))"
            )
    changed = [path for path, step in steps if _reads_nan_strings(step)]
    if not changed:
        return pipeline, []
    adapted = copy.deepcopy(pipeline)
    for path, step in _fitted_steps("", adapted):
        if path in changed:
            _read_empty_strings(step)
    rows = _with_each_string_missing(frame.head(MAX_CHECK_ROWS))
    as_fitted = rows.copy()
    strings = [name for name in rows.columns if column_kind(rows[name]) == "categorical"]
    as_fitted[strings] = as_fitted[strings].replace("", np.nan)
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        if not hasattr(pipeline, method):
            continue
        try:
            theirs, ours = getattr(pipeline, method)(as_fitted), getattr(adapted, method)(rows)
            same = np.array_equal(np.asarray(theirs), np.asarray(ours))
        except Exception as exc:  # the copy (or the original, on NaN) fails where the other does not
            cause = (str(exc).strip().splitlines() or [""])[0]
            raise MissingStringsError(
                f"the pipeline reads missing strings as NaN ({', '.join(changed)}), and its copy reading them as "
                f"'' cannot be checked against it ({method}: {type(exc).__name__}: {cause}); fill missing strings "
                "with '' before fitting"
            ) from exc
        if not same:
            raise MissingStringsError(
                f"the pipeline reads missing strings as NaN ({', '.join(changed)}), and its copy reading them as "
                f"'' (tabserve's missing string) answers differently in {method}: impute strings before any other "
                "step, or fill them with '' before fitting"
            )
    return adapted, changed


def _fitted_on_empty_strings(step: Any) -> bool:
    """Whether a fitted step saw '' as a value: an encoder with '' among its categories (and no NaN), an
    imputer that found '' most frequent. Such a pipeline was fitted on '' for missing: it is left as it is."""
    if isinstance(step, OneHotEncoder | OrdinalEncoder):
        return any(
            categories.dtype == object and "" in categories.tolist() and not _holds_nan(categories)
            for categories in step.categories_
        )
    if isinstance(step, SimpleImputer):
        return "" in getattr(step, "statistics_", np.array([])).tolist()
    return False


def _reads_nan_strings(step: Any) -> bool:
    """A fitted step that looks for NaN in strings, and that `_read_empty_strings` can make look for ''."""
    if isinstance(step, SimpleImputer):
        statistics = getattr(step, "statistics_", np.array([])).tolist()
        # Strings only (an imputer over numbers and strings at once must keep NaN), and no indicator (which
        # skl2onnx does not convert for strings: left for its refusal).
        return (
            is_scalar_nan(step.missing_values)
            and bool(statistics)
            and all(isinstance(value, str) for value in statistics)
            and not getattr(step, "add_indicator", False)
        )
    if isinstance(step, OneHotEncoder):
        return any(_holds_nan(categories) and "" not in categories.tolist() for categories in step.categories_)
    return False


def _read_empty_strings(step: Any) -> None:
    """Make a step `_reads_nan_strings` found look for '' where it looked for NaN."""
    if isinstance(step, SimpleImputer):
        step.missing_values = ""
        return
    for index, categories in enumerate(step.categories_):
        if _holds_nan(categories) and "" not in categories.tolist():
            step.categories_[index] = np.array(["" if is_scalar_nan(v) else v for v in categories], dtype=object)


def _holds_nan(categories: Any) -> bool:
    return bool(categories.dtype == object and any(is_scalar_nan(value) for value in categories))


def _fitted_steps(prefix: str, estimator: Any) -> Iterator[tuple[str, Any]]:
    """Every fitted estimator under Pipelines, ColumnTransformers and FeatureUnions, with its path."""
    children: list[tuple[str, Any]] = []
    if isinstance(estimator, Pipeline):
        children = list(estimator.steps)
    elif isinstance(estimator, ColumnTransformer):
        children = [(name, step) for name, step, _ in estimator.transformers_]  # the fitted ones
    elif isinstance(estimator, FeatureUnion):
        children = list(estimator.transformer_list)
    yield (prefix or type(estimator).__name__, estimator)
    for name, child in children:
        if not isinstance(child, str):  # "drop" / "passthrough"
            yield from _fitted_steps(f"{prefix}/{name}" if prefix else name, child)


def _with_each_string_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`, then for each string column a copy of its first row with that column missing ('')."""
    strings = [name for name in frame.columns if column_kind(frame[name]) == "categorical"]
    extra = []
    for name in strings:
        row = frame.iloc[:1].copy()
        row[name] = ""
        extra.append(row)
    return pd.concat([frame, *extra], ignore_index=True)
