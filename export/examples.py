"""The built-in examples: deterministic, trained on data that ships inside installed packages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeRegressor

from contract import Task
from export.features import prepare_frame
from export.training import SEED, cross_validate_pipeline, search_pipeline


@dataclass(frozen=True)
class Example:
    """One built-in model: its data, its candidates and how it is validated."""

    description: str
    task: Task
    load: Callable[[], tuple[pd.DataFrame, pd.Series]]
    candidates: Callable[[], list[BaseEstimator]]
    grids: list[dict[str, list[Any]]] = field(default_factory=list)
    test_size: float = 0.2
    folds: int = 5
    preprocess: bool = True
    """False: the estimator alone, as the seed article fits it (no imputer, so a missing value is an error)."""


def _age_weight() -> tuple[pd.DataFrame, pd.Series]:
    # The seed article's table, verbatim. Least squares gives weight = age + 40, so age 35 -> 75.0
    # (the article prints coef 0.75, intercept 60 and 74.25, which its own code does not produce).
    frame = pd.DataFrame({"age": [20, 25, 30, 35, 40]})
    return frame, pd.Series([60.0, 65.0, 70.0, 75.0, 80.0], name="weight")


def _diabetes() -> tuple[pd.DataFrame, pd.Series]:
    data = load_diabetes(as_frame=True)
    return data.data, data.target.rename("progression")


def _breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    # Class names, not 0/1, so the model's label output says what it means.
    labels = pd.Series(data.target_names[data.target], name="diagnosis", index=data.frame.index)
    return data.data.rename(columns=lambda column: column.replace(" ", "_")), labels


def _penguins() -> tuple[pd.DataFrame, pd.Series]:
    from palmerpenguins import load_penguins

    frame = load_penguins()
    target = frame.pop("species").astype(str).rename("species")
    # Numeric and string columns, with missing values in both (2 rows of numbers, 11 of sex).
    return frame.drop(columns=["year"]), target


EXAMPLES: dict[str, Example] = {
    "age-weight": Example(
        description="The seed article's linear regression: weight from age (least squares: weight = age + 40).",
        task="regression",
        load=_age_weight,
        candidates=lambda: [LinearRegression()],
        grids=[{}],
        test_size=0.0,
        preprocess=False,
    ),
    "diabetes": Example(
        description="Diabetes progression after a year (scikit-learn's bundled data); model picked by CV grid search.",
        task="regression",
        load=_diabetes,
        candidates=lambda: [
            LinearRegression(),
            Ridge(random_state=SEED),
            DecisionTreeRegressor(random_state=SEED),
            GradientBoostingRegressor(random_state=SEED),
        ],
        grids=[{}, {"alpha": [0.1, 1.0, 10.0]}, {"max_depth": [3, 5]}, {"max_depth": [2, 3], "n_estimators": [100]}],
    ),
    "breast-cancer": Example(
        description="Breast tumour diagnosis (malignant or benign): StandardScaler + MLP neural network, tuned by CV.",
        task="classification",
        load=_breast_cancer,
        candidates=lambda: [MLPClassifier(max_iter=300, random_state=SEED)],
        grids=[{"hidden_layer_sizes": [(16,), (32,)], "alpha": [1e-4, 1e-2]}],
    ),
    "penguins": Example(
        description="Penguin species from island, sex and measurements (with missing values): random forest.",
        task="classification",
        load=_penguins,
        candidates=lambda: [RandomForestClassifier(n_estimators=100, random_state=SEED)],
        grids=[{"max_depth": [4, 8]}],
    ),
}


@dataclass(frozen=True)
class TrainedExample:
    pipeline: BaseEstimator
    train_frame: pd.DataFrame
    check_frame: pd.DataFrame
    train_labels: pd.Series
    check_labels: pd.Series
    metrics: dict[str, Any]
    search: dict[str, Any]
    target: str


def train_example(example: Example) -> TrainedExample:
    """Split, grid-search with CV on the training part, score the held-out part."""
    raw, target = example.load()
    frame = prepare_frame(raw)
    if example.test_size:
        stratify = target if example.task == "classification" else None
        train_x, test_x, train_y, test_y = train_test_split(
            frame, target, test_size=example.test_size, random_state=SEED, stratify=stratify
        )
    else:  # too few rows to hold any out: parity runs on the training rows and the edge rows
        train_x, test_x, train_y, test_y = frame, frame, target, target
    pipeline, search = search_pipeline(
        example.candidates(), example.grids, train_x, train_y, example.task, example.folds, example.preprocess
    )
    metrics: dict[str, Any] = {"cv": cross_validate_pipeline(pipeline, train_x, train_y, example.task, example.folds)}
    if example.test_size:
        metrics["holdout"] = {"rows": len(test_x), "score": float(pipeline.score(test_x, test_y))}
    return TrainedExample(pipeline, train_x, test_x, train_y, test_y, metrics, search, str(target.name))
