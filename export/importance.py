"""Permutation importance at export: how much the held-out score drops when one raw column is shuffled.

It is model-agnostic and measured on the pipeline scikit-learn fitted (not on the ONNX graph), per raw
training column, so the card says which columns matter in the user's terms before any request arrives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier
from sklearn.inspection import permutation_importance

from contract import ColumnImportance, ImportanceCard

IMPORTANCE_REPEATS = 5
MAX_IMPORTANCE_ROWS = 1000
"""n_repeats x columns x rows predictions: capped so export stays quick on large hold-out sets."""
IMPORTANCE_SEED = 0


def measure_importance(
    pipeline: BaseEstimator, frame: pd.DataFrame, labels: pd.Series, columns: list[str], seed: int = IMPORTANCE_SEED
) -> ImportanceCard:
    """Permutation importance of each column of `frame` (named `columns` in the card), largest mean first."""
    if len(frame) > MAX_IMPORTANCE_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=MAX_IMPORTANCE_ROWS, replace=False))
        frame, labels = frame.iloc[keep], labels.iloc[keep]
    # scoring=None: the estimator's own score, the one the card's holdout metric reports.
    result: Any = permutation_importance(
        pipeline, frame, labels, n_repeats=IMPORTANCE_REPEATS, random_state=seed, scoring=None
    )
    entries = [
        ColumnImportance(column=column, mean=float(mean) + 0.0, std=float(std))
        for column, mean, std in zip(columns, result.importances_mean, result.importances_std, strict=True)
    ]
    entries.sort(key=lambda entry: -entry["mean"])
    return ImportanceCard(
        method="permutation",
        scoring="accuracy" if is_classifier(pipeline) else "r2",  # what estimator.score computes
        repeats=IMPORTANCE_REPEATS,
        rows=len(frame),
        seed=seed,
        columns=entries,
    )
