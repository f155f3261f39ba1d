"""Column typing: which columns are numeric (FP32) and which are categorical (STRING).

Numeric columns are cast to float32 *before* training and conversion, so scikit-learn and ONNX Runtime
see exactly the same numbers; string columns keep missing values as the empty string, the one
missing marker a `tensor(string)` can carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from contract import KIND_TO_DATATYPE, FeatureCard, Kind

MISSING_STRING = ""
MAX_LISTED_CATEGORIES = 1000


@dataclass(frozen=True)
class Feature:
    """One input column as the model card describes it."""

    name: str
    """The ONNX input's name (skl2onnx turns characters other than [A-Za-z0-9_] into '_')."""
    kind: Kind
    datatype: str
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    accepts_missing: bool = False
    column: str = ""
    """The training column's name, when it differs from the input's."""

    def to_json(self) -> FeatureCard:
        return FeatureCard(name=self.name, kind=self.kind, datatype=self.datatype, minimum=self.minimum,
                           maximum=self.maximum, categories=list(self.categories),
                           accepts_missing=self.accepts_missing, column=self.column)  # fmt: skip


def column_kind(series: pd.Series) -> Kind:
    """Numbers and booleans are numeric; everything else is a categorical string column."""
    return "numeric" if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series) else "categorical"


def prepare_frame(frame: pd.DataFrame, kinds: dict[str, Kind] | None = None) -> pd.DataFrame:
    """Cast numeric columns to float32 and categorical ones to str with '' for missing."""
    kinds = kinds or {str(name): column_kind(frame[name]) for name in frame.columns}
    prepared: dict[str, Any] = {}
    for name, kind in kinds.items():
        column = frame[name]
        if kind == "numeric":
            prepared[name] = pd.to_numeric(column, errors="raise").astype(np.float32)
        else:
            text = column.astype(object).where(column.notna(), MISSING_STRING)
            prepared[name] = text.map(str).astype(object)
    return pd.DataFrame(prepared, index=frame.index)


def describe_features(frame: pd.DataFrame, accepts_missing: dict[str, bool], input_names: list[str]) -> list[Feature]:
    """Describe prepared columns (in the model's input order): numeric ranges, known categories."""
    features = []
    for column_name, name in zip(frame.columns, input_names, strict=True):
        column = frame[column_name]
        original = "" if column_name == name else str(column_name)
        if column_kind(column) == "numeric":
            values = column.to_numpy(dtype=np.float32)
            finite = values[np.isfinite(values)]
            features.append(
                Feature(
                    name=name,
                    kind="numeric",
                    datatype=KIND_TO_DATATYPE["numeric"],
                    minimum=float(finite.min()) if finite.size else None,
                    maximum=float(finite.max()) if finite.size else None,
                    accepts_missing=accepts_missing[str(column_name)],
                    column=original,
                )
            )
        else:
            seen = sorted({value for value in column if value != MISSING_STRING})[:MAX_LISTED_CATEGORIES]
            features.append(
                Feature(
                    name=name,
                    kind="categorical",
                    datatype=KIND_TO_DATATYPE["categorical"],
                    categories=tuple(seen),
                    accepts_missing=accepts_missing[str(column_name)],
                    column=original,
                )
            )
    return features
