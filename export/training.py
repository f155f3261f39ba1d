"""The seed article's training flow on any table: clean, scale, encode, cross-validate, tune.

Numeric columns: median imputation then standard scaling. Categorical columns: '' imputed as
'missing', then one-hot encoding that ignores categories unseen in training.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from contract import Task
from export import boosters
from export.features import MISSING_STRING, column_kind

SEED = 0

# The metrics reported for each task: the first one ranks grid-search candidates.
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    "regression": ("r2", "neg_mean_absolute_error"),
    "classification": ("accuracy", "f1_macro"),
}


@dataclass(frozen=True)
class EstimatorChoice:
    """A `--estimator` name: how to build it for each task it supports, and its small grid."""

    build: dict[Task, Callable[[], BaseEstimator]]
    grid: dict[str, list[Any]] = field(default_factory=dict)


ESTIMATORS: dict[str, EstimatorChoice] = {
    "linear": EstimatorChoice({"regression": LinearRegression}),
    "ridge": EstimatorChoice({"regression": lambda: Ridge(random_state=SEED)}, {"alpha": [0.1, 1.0, 10.0]}),
    "logistic": EstimatorChoice(
        {"classification": lambda: LogisticRegression(max_iter=1000, random_state=SEED)}, {"C": [0.1, 1.0, 10.0]}
    ),
    "tree": EstimatorChoice(
        {
            "regression": lambda: DecisionTreeRegressor(random_state=SEED),
            "classification": lambda: DecisionTreeClassifier(random_state=SEED),
        },
        {"max_depth": [3, 5, 8]},
    ),
    "forest": EstimatorChoice(
        {
            "regression": lambda: RandomForestRegressor(n_estimators=100, random_state=SEED),
            "classification": lambda: RandomForestClassifier(n_estimators=100, random_state=SEED),
        },
        {"max_depth": [4, 8, None]},
    ),
    "gbm": EstimatorChoice(
        {
            "regression": lambda: GradientBoostingRegressor(random_state=SEED),
            "classification": lambda: GradientBoostingClassifier(random_state=SEED),
        },
        {"max_depth": [2, 3], "n_estimators": [50, 100]},
    ),
    "hgb": EstimatorChoice(
        {
            "regression": lambda: HistGradientBoostingRegressor(random_state=SEED),
            "classification": lambda: HistGradientBoostingClassifier(random_state=SEED),
        },
        {"max_depth": [3, None], "learning_rate": [0.05, 0.1]},
    ),
    # LightGBM and XGBoost: the optional gbm extra (export/boosters.py). One thread each: the grid search
    # and cross-validation already keep the cores busy, and results do not depend on the thread count.
    "lgbm": EstimatorChoice(
        {
            "regression": lambda: _lightgbm("LGBMRegressor"),
            "classification": lambda: _lightgbm("LGBMClassifier"),
        },
        {"num_leaves": [15, 31], "n_estimators": [100, 200]},
    ),
    "xgb": EstimatorChoice(
        {
            "regression": lambda: _xgboost_regressor(),
            "classification": lambda: boosters.xgb_label_classifier()(n_estimators=100, n_jobs=1, random_state=SEED),
        },
        {"max_depth": [3, 6], "n_estimators": [100, 200]},
    ),
    "mlp": EstimatorChoice(
        {
            "regression": lambda: MLPRegressor(hidden_layer_sizes=(32,), max_iter=500, random_state=SEED),
            "classification": lambda: MLPClassifier(hidden_layer_sizes=(32,), max_iter=500, random_state=SEED),
        },
        {"hidden_layer_sizes": [(16,), (32,)], "alpha": [1e-4, 1e-2]},
    ),
}


def _lightgbm(kind: str) -> BaseEstimator:
    boosters.require()
    import lightgbm

    estimator: BaseEstimator = getattr(lightgbm, kind)(n_estimators=100, n_jobs=1, random_state=SEED, verbose=-1)
    return estimator


def _xgboost_regressor() -> BaseEstimator:
    boosters.require()
    from xgboost import XGBRegressor

    estimator: BaseEstimator = XGBRegressor(n_estimators=100, n_jobs=1, random_state=SEED)
    return estimator


@dataclass(frozen=True)
class TrainingResult:
    """A fitted pipeline and what cross-validation said about it."""

    pipeline: Pipeline
    metrics: dict[str, Any]
    search: dict[str, Any] | None


def infer_task(target: pd.Series) -> Task:
    """A numeric target is a regression target; anything else names classes."""
    return (
        "regression"
        if column_kind(target) == "numeric" and not pd.api.types.is_bool_dtype(target)
        else "classification"
    )


def build_preprocessor(frame: pd.DataFrame) -> ColumnTransformer:
    """Impute and scale numeric columns; impute and one-hot encode categorical ones."""
    numeric = [name for name in frame.columns if column_kind(frame[name]) == "numeric"]
    categorical = [name for name in frame.columns if name not in numeric]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        numeric_steps = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric_steps, numeric))
    if categorical:
        categorical_steps = Pipeline(
            [
                ("impute", SimpleImputer(missing_values=MISSING_STRING, strategy="constant", fill_value="missing")),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        transformers.append(("categorical", categorical_steps, categorical))
    return ColumnTransformer(transformers)


def cv_splitter(task: Task, rows: int, folds: int) -> KFold | StratifiedKFold:
    """K-fold for regression, stratified for classification; never more folds than rows allow."""
    splits = max(2, min(folds, rows // 2))
    if task == "classification":
        return StratifiedKFold(n_splits=splits, shuffle=True, random_state=SEED)
    return KFold(n_splits=splits, shuffle=True, random_state=SEED)


def cross_validate_pipeline(
    pipeline: Pipeline, frame: pd.DataFrame, target: pd.Series, task: Task, folds: int
) -> dict[str, Any]:
    """Cross-validated mean and standard deviation of each of the task's metrics."""
    splitter = cv_splitter(task, len(frame), folds)
    with _quiet_training():
        scores = cross_validate(pipeline, frame, target, cv=splitter, scoring=list(TASK_METRICS[task]))
    metrics: dict[str, Any] = {"folds": splitter.get_n_splits()}
    for scoring in TASK_METRICS[task]:
        values = np.asarray(scores[f"test_{scoring}"], dtype=np.float64)
        name, sign = (scoring[4:], -1.0) if scoring.startswith("neg_") else (scoring, 1.0)
        metrics[name] = {"mean": float(sign * values.mean()) + 0.0, "std": float(values.std())}
    return metrics


def search_pipeline(
    candidates: list[BaseEstimator],
    grids: list[dict[str, list[Any]]],
    frame: pd.DataFrame,
    target: pd.Series,
    task: Task,
    folds: int,
    preprocess: bool = True,
) -> tuple[Pipeline, dict[str, Any]]:
    """Grid-search over estimators and their parameters; return the refitted best pipeline."""
    steps = [("preprocess", build_preprocessor(frame))] if preprocess else []
    pipeline = Pipeline([*steps, ("model", candidates[0])])
    param_grid = [
        {"model": [candidate], **{f"model__{key}": values for key, values in grid.items()}}
        for candidate, grid in zip(candidates, grids, strict=True)
    ]
    splitter = cv_splitter(task, len(frame), folds)
    search = GridSearchCV(pipeline, param_grid, cv=splitter, scoring=TASK_METRICS[task][0], refit=True)
    with _quiet_training():
        search.fit(frame, target)
    best = search.best_estimator_
    params = {key: _jsonable(value) for key, value in search.best_params_.items()}
    summary = {
        "scoring": TASK_METRICS[task][0],
        "candidates": len(search.cv_results_["params"]),
        "best_params": params,
        "best_score": float(search.best_score_),
    }
    return best, summary


def train(
    frame: pd.DataFrame,
    target: pd.Series,
    estimator: str,
    task: Task,
    folds: int = 5,
    grid: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> TrainingResult:
    """Train the article's pipeline with one `--estimator` on a prepared frame."""
    choice = ESTIMATORS[estimator]
    if task not in choice.build:
        supported = ", ".join(choice.build)
        hint = (
            " (a numeric target is a regression one: --task classification keeps its values as classes)"
            if (task == "regression" and "classification" in supported)
            else ""
        )
        raise ValueError(f"estimator {estimator!r} does not do {task}; it does {supported}{hint}")
    model = choice.build[task]()
    search = None
    if grid and choice.grid:
        combos = int(np.prod([len(values) for values in choice.grid.values()]))
        progress(f"grid search: {combos} candidates x {folds} folds")
        pipeline, search = search_pipeline([model], [choice.grid], frame, target, task, folds)
    else:
        pipeline = Pipeline([("preprocess", build_preprocessor(frame)), ("model", model)])
    progress(f"cross-validation: {folds} folds")
    metrics = {"cv": cross_validate_pipeline(pipeline, frame, target, task, folds)}
    progress("fitting the final pipeline")
    with _quiet_training():
        pipeline.fit(frame, target)
    return TrainingResult(pipeline=pipeline, metrics=metrics, search=search)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseEstimator):
        return type(value).__name__
    if isinstance(value, tuple):
        return list(value)
    return value


class _quiet_training(warnings.catch_warnings):
    """MLPs stop at max_iter by design here; a convergence warning is expected, not a failure."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)
