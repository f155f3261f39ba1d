"""Background rows for explainers: a seeded sample of training rows, class shares kept for classifiers.

A Shapley explainer measures each feature against these rows, so they must look like the training data:
for a classifier every class keeps its training share (within one row), which a plain sample of 100 rows
from an unbalanced set need not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_BACKGROUND_ROWS = 100
DEFAULT_BACKGROUND_SEED = 0


@dataclass(frozen=True)
class Background:
    """The rows drawn and how: what the card's `background` entry records."""

    frame: pd.DataFrame
    """The chosen rows in training order, with their training index (so their labels can be looked up)."""
    seed: int
    stratified: bool


def sample_background(
    frame: pd.DataFrame, labels: pd.Series | None, rows: int, seed: int = DEFAULT_BACKGROUND_SEED
) -> Background:
    """Up to `rows` rows of `frame`; stratified by `labels` when given (classifiers), else a plain sample."""
    if rows < 1:
        raise ValueError(f"background rows must be at least 1, got {rows}")
    rng = np.random.default_rng(seed)
    count = min(rows, len(frame))
    if labels is None:
        chosen = rng.choice(len(frame), size=count, replace=False)
    else:
        chosen = _stratified(np.asarray(labels).astype(str), count, rng)
    return Background(frame.iloc[np.sort(chosen)], seed, labels is not None)


def _stratified(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices with each class's share of `count` rounded by largest remainder: off by under one row.

    Done by hand rather than with train_test_split(stratify=...), which refuses classes of one row and
    samples as large as the set; this rule has no such holes.
    """
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    exact = sizes * count / len(labels)
    quotas = np.floor(exact).astype(np.intp)
    # Ties in the remainder go to the larger class, then to the first: deterministic without the rng.
    order = np.lexsort((np.arange(len(classes)), -sizes, -(exact - quotas)))
    quotas[order[: count - int(quotas.sum())]] += 1
    picked = [
        rng.choice(np.flatnonzero(inverse == index), size=int(quota), replace=False)
        for index, quota in enumerate(quotas)
    ]
    return np.concatenate(picked) if picked else np.arange(0)
