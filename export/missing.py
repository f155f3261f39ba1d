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
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder
from sklearn.utils._missing import is_scalar_nan

from export.features import column_kind

MAX_CHECK_ROWS = 200


class MissingStringsError(Exception):
    """The pipeline reads NaN in string columns in a way its copy for '' does not reproduce."""


def for_empty_strings(pipeline: BaseEstimator, frame: pd.DataFrame) -> tuple[BaseEstimator, list[str]]:
    """(the pipeline reading '' as its missing strings, the steps changed for it); `pipeline` itself when
    no step reads NaN in strings. `frame` is prepared ('' for missing strings)."""
    adapted = copy.deepcopy(pipeline)
    changed = [path for path, step in _fitted_steps("", adapted) if _read_empty_strings(step)]
    if not changed:
        return pipeline, []
    rows = _with_each_string_missing(frame.head(MAX_CHECK_ROWS))
    as_fitted = rows.copy()
    strings = [name for name in rows.columns if column_kind(rows[name]) == "categorical"]
    as_fitted[strings] = as_fitted[strings].replace("", np.nan)
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        if not hasattr(pipeline, method):
            continue
        theirs, ours = getattr(pipeline, method)(as_fitted), getattr(adapted, method)(rows)
        if not np.array_equal(np.asarray(theirs), np.asarray(ours)):
            raise MissingStringsError(
                f"the pipeline reads missing strings as NaN ({', '.join(changed)}), and its copy reading them as "
                f"'' (tabserve's missing string) answers differently in {method}: impute strings before any other "
                "step, or fill them with '' before fitting"
            )
    return adapted, changed


def _read_empty_strings(step: Any) -> bool:
    """Make a fitted step that looks for NaN in strings look for '' instead; whether it did."""
    if isinstance(step, SimpleImputer):
        if not is_scalar_nan(step.missing_values) or getattr(step, "statistics_", np.array([])).dtype != object:
            return False
        step.missing_values = ""
        if getattr(step, "indicator_", None) is not None:
            step.indicator_.missing_values = ""
        return True
    if isinstance(step, OneHotEncoder | OrdinalEncoder):
        found = False
        for index, categories in enumerate(step.categories_):
            if categories.dtype == object and any(is_scalar_nan(value) for value in categories):
                if "" in categories.tolist():  # '' is a category already: NaN cannot become it
                    continue
                step.categories_[index] = np.array(["" if is_scalar_nan(v) else v for v in categories], dtype=object)
                found = True
        return found
    return False


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
