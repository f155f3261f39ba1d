"""Every estimator family publishes on mixed-type data built to break float32, and the server agrees with scikit-learn.

The data has missing numbers and strings (imputed), categories (one literally "None"), a column of adjacent
float32 pairs (a split between them sits one ulp from both: LightGBM's double thresholds rounded to float32
send one side the wrong way) and a seeded forest whose probabilities tie exactly on a held-out row. The
default tolerances hold for every family; no test loosens them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeRegressor

from contract import GOLDEN_ATOL, GOLDEN_RTOL, Task
from export.__main__ import cli
from export.convert import convert_pipeline, with_column_inputs
from export.features import prepare_frame
from export.fidelity import on_knife_edge
from export.parity import Tolerance, check_parity
from export.precision import PRECISIONS
from export.publish import export_pipeline
from export.training import ESTIMATORS, train
from export.trees import TREES
from loadtest.synthetic import mixed_table
from tests.conftest import read_card, running_server

TASKS = ("regression", "binary", "multiclass")
FAMILIES = ("linear", "ridge", "logistic", "tree", "forest", "gbm", "hgb", "mlp", "lgbm", "xgb")
CASES = [
    pytest.param(family, task, id=f"{family}-{task}")
    for family in FAMILIES
    for task in TASKS
    if ("regression" if task == "regression" else "classification") in ESTIMATORS[family].build
]
HELD_OUT_ROWS = 60


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[Any, pd.DataFrame]]]:
    """Every (family, task) trained on its table and published into one repository; name -> (pipeline, rows)."""
    out = tmp_path_factory.mktemp("fidelity")
    fitted: dict[str, tuple[Any, pd.DataFrame]] = {}
    splits = {}
    for task in TASKS:
        frame, labels = mixed_table(task)
        splits[task] = train_test_split(prepare_frame(frame), labels, test_size=0.3, random_state=0)
    for case in CASES:
        family, task = (str(value) for value in case.values)
        train_x, test_x, train_y, test_y = splits[task]
        kind: Task = "regression" if task == "regression" else "classification"
        result = train(train_x, train_y, family, kind, folds=2)
        name = f"{family}-{task}"
        export_pipeline(
            result.pipeline, name=name, model_dir=out, training_frame=train_x, check_frame=test_x,
            task=kind, description=name, background_rows=0,  # no importance: not what this checks
        )  # fmt: skip
        fitted[name] = (result.pipeline, test_x.iloc[:HELD_OUT_ROWS])
    return out, fitted


def v2_request(rows: pd.DataFrame, card: dict[str, Any]) -> dict[str, Any]:
    """One tensor per column; null for a missing number, '' for a missing string (as golden.json writes them)."""
    inputs = []
    for feature, column in zip(card["features"], rows.columns, strict=True):
        values = rows[column].tolist()
        if feature["datatype"] == "FP32":
            values = [None if np.isnan(value) else value for value in values]
        inputs.append(
            {"name": feature["name"], "datatype": feature["datatype"], "shape": [len(rows), 1], "data": values}
        )
    return {"inputs": inputs}


@pytest.mark.slow
def test_every_family_publishes_and_serves_scikit_learns_answers(published: Any) -> None:
    model_dir, fitted = published
    with running_server(model_dir) as url, httpx.Client(base_url=url, timeout=30) as client:
        for name, (pipeline, rows) in fitted.items():
            card = read_card(model_dir, name)
            assert card["parity"]["passed"], name
            response = client.post(f"/v2/models/{name}/infer", json=v2_request(rows, card))
            assert response.status_code == 200, (name, response.text)
            outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
            if card["task"] == "classification":
                label, probabilities = (output["name"] for output in card["outputs"])
                assert outputs[label] == [str(value) for value in pipeline.predict(rows)], name
                served = np.asarray(outputs[probabilities], dtype=np.float64).reshape(len(rows), -1)
                wanted = pipeline.predict_proba(rows)
            else:
                served = np.asarray(next(iter(outputs.values())), dtype=np.float64)
                wanted = np.asarray(pipeline.predict(rows), dtype=np.float64)
            np.testing.assert_allclose(served, wanted, rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL, err_msg=name)


def test_the_card_records_the_precision_chosen_and_what_failed_before_it(published: Any) -> None:
    model_dir, fitted = published
    precisions = {name: read_card(model_dir, name)["parity"] for name in fitted}
    # The seeded forest ties 0.5 / 0.5 on a held-out row: float32 sums break the tie, double sums do not.
    assert precisions["forest-binary"]["precision"] == "float64-trees"
    # LightGBM's double thresholds between adjacent float32 values: rounding to nearest flips the upper side.
    for task in TASKS:
        tried = precisions[f"lgbm-{task}"]["precisions_tried"]
        assert [attempt["precision"] for attempt in tried] == ["float32", "float64-trees"]
        assert not tried[0]["passed"] and tried[0]["problems"] and tried[1]["passed"]
    assert precisions["linear-regression"]["precision"] == "float32"
    assert precisions["linear-regression"]["precisions_tried"] == [
        {"precision": "float32", "passed": True, "problems": []}
    ]
    # The inputs stay FP32 on the wire whatever the precision: the model saw float32 values only.
    for name in fitted:
        card = read_card(model_dir, name)
        assert {spec["datatype"] for spec in card["inputs"]} == {"FP32", "BYTES"}, name


def test_a_one_ulp_nudge_finds_the_column_on_a_split_threshold() -> None:
    # Two float32 steps apart (scikit-learn does not split values closer than 1e-7): the split is one step from each.
    low = np.float32(1.1)
    high = np.nextafter(np.nextafter(low, np.float32(2)), np.float32(2))
    frame = pd.DataFrame({"edge": np.array([low, high] * 20, dtype=np.float32), "other": np.float32(5.0)})
    tree = DecisionTreeRegressor().fit(frame, np.tile([0.0, 1.0], 20))
    assert on_knife_edge(tree, frame.iloc[[1]], Tolerance()) == [f"edge={float(high)!r}"]
    assert on_knife_edge(tree, pd.DataFrame({"edge": [np.float32(3.0)], "other": [np.float32(5.0)]}), Tolerance()) == []


def test_refusal_names_the_precisions_tried_and_the_rows_features(tmp_path: Path) -> None:
    frame, labels = mixed_table("binary", rows=200)
    frame.assign(y=labels).to_csv(tmp_path / "table.csv", index=False)
    # The MLP's float32 probabilities differ from scikit-learn's by ~1e-7: nothing passes a zero tolerance.
    result = CliRunner().invoke(
        cli,
        ["train", str(tmp_path / "table.csv"), "--target", "y", "--estimator", "mlp", "--name", "strict",
         "--folds", "2", "--atol", "0", "--rtol", "0", "--out", str(tmp_path / "models")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "parity check failed: output 'probabilities'" in result.output
    assert "tried precisions float32, float64-trees, none agrees" in result.output
    assert "imputed (missing) in that row:" in result.output
    assert "on a split threshold (a one-ulp nudge changes scikit-learn's answer):" in result.output
    assert "nothing was published" in result.output
    assert not any((tmp_path / "models").rglob("*.onnx"))


def publish_user_pipeline(model: Any, sample: pd.DataFrame, labels: pd.Series, folder: Path) -> dict[str, Any]:
    joblib.dump(model, folder / "model.joblib")
    sample.assign(y=labels).to_csv(folder / "sample.csv", index=False)
    result = CliRunner().invoke(
        cli,
        ["pipeline", str(folder / "model.joblib"), "--sample", str(folder / "sample.csv"), "--target", "y",
         "--name", "mine", "--out", str(folder / "models")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return read_card(folder / "models", "mine")


@pytest.mark.parametrize("estimator", [HistGradientBoostingRegressor, HistGradientBoostingClassifier])
def test_user_pipeline_with_hist_gradient_boosting_on_raw_nans_publishes(estimator: Any, tmp_path: Path) -> None:
    frame, labels = mixed_table("regression" if estimator is HistGradientBoostingRegressor else "binary", rows=300)
    numbers = prepare_frame(frame[["age", "income", "score", "rating"]])
    # No imputer: the NaNs reach the booster, which routes them itself (missing_go_to_left).
    card = publish_user_pipeline(estimator(max_iter=30, random_state=0).fit(numbers, labels), numbers, labels, tmp_path)
    assert card["parity"]["passed"] and card["estimator"] == estimator.__name__
    assert all(feature["accepts_missing"] for feature in card["features"][:3])


@pytest.mark.parametrize("function", [np.log1p, np.log, np.sqrt, np.exp, np.expm1, np.abs], ids=lambda f: f.__name__)
def test_user_pipeline_with_a_numpy_function_transformer_publishes(function: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    numbers = pd.DataFrame({"x": rng.uniform(0.5, 3.0, 200), "z": rng.normal(size=200)}).astype(np.float32)
    labels = pd.Series(np.log1p(numbers["x"]) * 3 + numbers["z"], name="y")
    model = Pipeline(
        [
            ("columns", ColumnTransformer([("f", FunctionTransformer(function), ["x"])], remainder="passthrough")),
            ("regress", Ridge()),
        ]
    ).fit(numbers, labels)
    card = publish_user_pipeline(model, numbers, labels, tmp_path)
    assert card["parity"]["passed"] and card["parity"]["precision"] == "float32"


def _lightgbm_classifier() -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=30, verbose=-1, random_state=0)


def _xgboost_classifier() -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=30, random_state=0)


@pytest.mark.parametrize("booster", [_lightgbm_classifier, _xgboost_classifier], ids=["lightgbm", "xgboost"])
def test_user_pipeline_with_a_stock_booster_publishes(booster: Any, tmp_path: Path) -> None:
    frame, labels = mixed_table("binary", rows=300)
    numbers = prepare_frame(frame[["edge", "age", "income", "score", "rating"]])
    targets = pd.Series((labels == "yes").astype(np.int64), name="y")  # stock XGBClassifier wants 0..k-1
    card = publish_user_pipeline(booster().fit(numbers, targets), numbers, targets, tmp_path)
    assert card["parity"]["passed"] and card["classes"] == [0, 1]
    # The adjacent float32 pairs in "edge" break LightGBM's rounded thresholds; XGBoost compares in float32.
    expected = "float64-trees" if booster is _lightgbm_classifier else "float32"
    assert card["parity"]["precision"] == expected


@pytest.mark.parametrize("estimator", ["lgbm", "xgb"])
def test_train_cli_grid_searches_the_boosters_on_a_csv(estimator: str, tmp_path: Path) -> None:
    frame, labels = mixed_table("multiclass", rows=240)
    frame.assign(y=labels).to_csv(tmp_path / "table.csv", index=False)
    result = CliRunner().invoke(
        cli,
        ["train", str(tmp_path / "table.csv"), "--target", "y", "--estimator", estimator, "--grid", "--folds", "2",
         "--name", "boosted", "--out", str(tmp_path / "models")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    card = read_card(tmp_path / "models", "boosted")
    assert card["search"]["candidates"] == 4 and card["parity"]["passed"]
    assert sorted(card["classes"]) == ["high", "low", "mid"]
    assert set(card["search"]["best_params"]) > {"model"}


@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda precision: precision.name)
@pytest.mark.parametrize("kind", TREES, ids=lambda kind: kind.__name__)
def test_every_tree_ensemble_routes_raw_nans_as_scikit_learn(kind: Any, precision: Any) -> None:
    frame, labels = mixed_table("binary" if "Classifier" in kind.__name__ else "regression", rows=300)
    numbers = prepare_frame(frame[["edge", "age", "income", "score", "rating"]])
    extra = {"max_iter": 20} if "HistGradient" in kind.__name__ else {"max_depth": 6}
    # No imputer: scikit-learn >= 1.3 trees learn where a NaN goes (skl2onnx alone sent every NaN right).
    model = with_column_inputs(kind(random_state=0, **extra).fit(numbers, labels), numbers)
    onnx_model = convert_pipeline(model, numbers, precision)
    report, _ = check_parity(model, onnx_model.SerializeToString(), numbers, Tolerance())
    if precision.name == "float32" and kind.__name__.startswith("HistGradient"):
        # HistGradientBoosting compares double values with double thresholds: float32 rounding flips rows.
        assert not report.passed
        return
    assert report.passed, report.problems
    if precision.name == "float64-trees":
        trees = [node for node in onnx_model.graph.node if node.op_type.startswith("TreeEnsemble")]
        assert trees and "nodes_values_as_tensor" in {attribute.name for attribute in trees[0].attribute}
