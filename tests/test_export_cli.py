"""The export command line on the user's own data: train, pipeline, refusals, versions."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from export.__main__ import cli
from export.repository import publish, versions


@pytest.fixture(scope="module")
def penguins_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from palmerpenguins import load_penguins

    path = tmp_path_factory.mktemp("data") / "penguins.csv"
    load_penguins().to_csv(path, index=False)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_train_on_a_csv_cross_validates_and_publishes(penguins_csv: Path, tmp_path: Path) -> None:
    code, output = invoke(
        "train",
        str(penguins_csv),
        "--target",
        "body_mass_g",
        "--estimator",
        "ridge",
        "--grid",
        "--name",
        "mass",
        "--out",
        str(tmp_path),
    )
    assert code == 0, output
    card = json.loads((tmp_path / "mass" / "1" / "model.json").read_text())
    assert card["task"] == "regression"
    assert card["search"]["candidates"] == 3
    assert set(card["metrics"]["cv"]) == {"folds", "r2", "mean_absolute_error"}
    assert card["metrics"]["cv"]["r2"]["mean"] > 0.5
    assert "grid search: 3 candidates x 5 folds" in output
    kinds = {feature["name"]: feature["kind"] for feature in card["features"]}
    assert kinds["species"] == "categorical" and kinds["year"] == "numeric"


def test_train_classifier_with_string_target(penguins_csv: Path, tmp_path: Path) -> None:
    code, output = invoke(
        "train",
        str(penguins_csv),
        "--target",
        "species",
        "--estimator",
        "gbm",
        "--name",
        "species",
        "--folds",
        "3",
        "--out",
        str(tmp_path),
    )
    assert code == 0, output
    card = json.loads((tmp_path / "species" / "1" / "model.json").read_text())
    assert card["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert card["parity"]["label_mismatches"] == 0


def test_train_refuses_an_estimator_that_does_not_fit_the_task(penguins_csv: Path, tmp_path: Path) -> None:
    code, output = invoke(
        "train",
        str(penguins_csv),
        "--target",
        "species",
        "--estimator",
        "linear",
        "--name",
        "x",
        "--out",
        str(tmp_path),
    )
    assert code == 2
    assert "estimator 'linear' does not do classification" in output


def test_pipeline_command_publishes_a_saved_pipeline(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x1": rng.normal(size=50), "x2": rng.normal(size=50)})
    target = 3 * frame["x1"] - frame["x2"] + 1
    model = Pipeline([("regress", LinearRegression())]).fit(frame.astype(np.float32), target)
    joblib.dump(model, tmp_path / "model.joblib")
    frame.assign(y=target).to_csv(tmp_path / "sample.csv", index=False)
    code, output = invoke(
        "pipeline",
        str(tmp_path / "model.joblib"),
        "--sample",
        str(tmp_path / "sample.csv"),
        "--target",
        "y",
        "--name",
        "linear",
        "--out",
        str(tmp_path / "models"),
    )
    assert code == 0, output
    card = json.loads((tmp_path / "models" / "linear" / "1" / "model.json").read_text())
    assert [feature["name"] for feature in card["features"]] == ["x1", "x2"]
    assert [feature["accepts_missing"] for feature in card["features"]] == [False, False]
    assert card["metrics"]["sample"]["score"] > 0.999
    # The sample is the training set: all 50 rows (no classes to stratify by), importance scored as r2.
    assert card["background"] == {"file": "background.json", "rows": 50, "seed": 0, "stratified": False}
    assert card["importance"]["scoring"] == "r2" and card["importance"]["columns"][0]["column"] == "x1"


def test_background_rows_0_writes_no_background(penguins_csv: Path, tmp_path: Path) -> None:
    code, output = invoke(
        "train", str(penguins_csv), "--target", "species", "--estimator", "tree", "--name", "species",
        "--folds", "2", "--background-rows", "0", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, output
    folder = tmp_path / "species" / "1"
    card = json.loads((folder / "model.json").read_text())
    assert card["background"] is None and "background" not in card["files"]
    assert not (folder / "background.json").exists()
    assert set(card["digests"]) == {"model.onnx", "golden.json"}
    assert card["importance"]["scoring"] == "accuracy"  # held-out labels given: importance does not depend on it


def test_unconvertible_step_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(1, 21, dtype=np.float32)})
    # log1p, log, sqrt, exp, expm1 and abs convert (export/functions.py); a cube root does not.
    model = Pipeline([("root", FunctionTransformer(np.cbrt)), ("regress", LinearRegression())]).fit(
        frame, frame["x"] * 2
    )
    joblib.dump(model, tmp_path / "model.joblib")
    frame.to_csv(tmp_path / "sample.csv", index=False)
    code, output = invoke(
        "pipeline",
        str(tmp_path / "model.joblib"),
        "--sample",
        str(tmp_path / "sample.csv"),
        "--name",
        "rooted",
        "--out",
        str(tmp_path / "models"),
    )
    assert code == 1
    # The user's pipeline sits behind tabserve's per-column front as step "pipeline".
    assert "cannot convert step 'pipeline/root'" in output and "FunctionTransformer(func=cbrt)" in output
    assert "nothing was published" in output
    assert versions(tmp_path / "models", "rooted") == []
    assert not any((tmp_path / "models").rglob("*.onnx"))


def test_parity_failure_names_the_output_and_row_and_writes_nothing(penguins_csv: Path, tmp_path: Path) -> None:
    # The MLP's float32 probabilities differ from scikit-learn's by ~1e-7: a zero tolerance must refuse it.
    code, output = invoke(
        "train",
        str(penguins_csv),
        "--target",
        "species",
        "--estimator",
        "mlp",
        "--name",
        "strict",
        "--folds",
        "2",
        "--atol",
        "0",
        "--rtol",
        "0",
        "--out",
        str(tmp_path),
    )
    assert code == 1, output
    assert "parity check failed: output 'probabilities'" in output
    assert "worst row" in output
    assert versions(tmp_path, "strict") == []
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").iterdir())


def test_versions_increment_and_racing_exporters_get_distinct_versions(tmp_path: Path) -> None:
    for expected in (1, 2):
        code, output = invoke("examples", "--only", "age-weight", "--out", str(tmp_path))
        assert code == 0, output
        assert versions(tmp_path, "age-weight")[-1] == expected
    card = json.loads((tmp_path / "age-weight" / "2" / "model.json").read_text())
    assert card["version"] == 2

    published: list[int] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        published.append(publish(tmp_path, "raced", lambda version: {"v.txt": str(version).encode()})[0])

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(published) == [1, 2, 3, 4]
    for version in published:
        assert (tmp_path / "raced" / str(version) / "v.txt").read_text() == str(version)


def string_frame(rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    """A pandas frame as users have them: NaN for a missing city and a missing age; a label per row."""
    rng = np.random.default_rng(0)
    cities = np.array(["Paris", "Lyon", "Nice", "Lille", None], dtype=object)
    frame = pd.DataFrame({"age": rng.uniform(18, 80, rows), "income": rng.normal(50000, 15000, rows),
                          "city": rng.choice(cities, rows)})  # fmt: skip
    frame.loc[rng.choice(rows, 20, replace=False), "age"] = np.nan
    labels = np.where(frame["age"].fillna(40) > 50, "old", np.where(frame["city"].isna(), "unknown", "young"))
    return frame, labels


def segment_model(strings: Any, frame: pd.DataFrame, labels: np.ndarray) -> Pipeline:
    """Age and income imputed and scaled, the city through `strings`, then a logistic regression: fitted."""
    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    return Pipeline([
        ("pre", ColumnTransformer([("num", numbers, ["age", "income"]), ("cat", strings, ["city"])])),
        ("classify", LogisticRegression(max_iter=1000)),
    ]).fit(frame, labels)  # fmt: skip


def export_segments(model: Pipeline, frame: pd.DataFrame, labels: np.ndarray, folder: Path) -> tuple[int, str]:
    """`export pipeline` on `model` saved with joblib, its frame (labels as 'segment') the sample."""
    joblib.dump(model, folder / "model.joblib")
    frame.assign(segment=labels).to_csv(folder / "sample.csv", index=False)
    return invoke("pipeline", str(folder / "model.joblib"), "--sample", str(folder / "sample.csv"),
                  "--target", "segment", "--name", "segments", "--out", str(folder / "models"))  # fmt: skip


@pytest.mark.parametrize(
    "categories",
    [
        # The pipeline of the brief: strings imputed with a constant, then one-hot encoded.
        pytest.param(
            lambda: make_pipeline(
                SimpleImputer(strategy="constant", fill_value="missing"), OneHotEncoder(handle_unknown="ignore")
            ),
            id="imputed",
        ),  # fmt: skip
        # No imputer: the encoder learned NaN as a category of its own.
        pytest.param(lambda: OneHotEncoder(handle_unknown="ignore"), id="nan-category"),
    ],
)
def test_a_pipeline_fitted_on_nan_strings_answers_a_missing_string_as_scikit_learn_does(
    tmp_path: Path, categories: Any
) -> None:
    frame, labels = string_frame()
    model = segment_model(categories(), frame, labels)
    code, output = export_segments(model, frame, labels, tmp_path)
    assert code == 0, output
    assert "missing strings read as '' (tabserve's), not NaN" in output
    # Served, a missing city is '' (tabserve's missing string); to scikit-learn it is NaN, as it was fitted.
    rows = pd.DataFrame({"age": [44.0, 60.0, np.nan], "income": [53281.79, 40000.0, 61000.0],
                         "city": np.array([None, None, "Paris"], dtype=object)})  # fmt: skip
    session = ort.InferenceSession(
        tmp_path / "models" / "segments" / "1" / "model.onnx", providers=["CPUExecutionProvider"]
    )
    label, probabilities = session.run(None, {
        "age": rows[["age"]].to_numpy(np.float32), "income": rows[["income"]].to_numpy(np.float32),
        "city": rows[["city"]].fillna("").to_numpy(object),
    })  # fmt: skip
    assert label.tolist() == model.predict(rows).tolist() == ["unknown", "old", "young"]
    np.testing.assert_allclose(probabilities, model.predict_proba(rows), atol=1e-6)


def test_an_ordinal_encoder_that_learned_nan_is_refused_naming_it(tmp_path: Path) -> None:
    # skl2onnx ignores encoded_missing_value: a missing city would be scored as another category.
    frame, labels = string_frame()
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)
    model = segment_model(encoder, frame, labels)
    code, output = export_segments(model, frame, labels, tmp_path)
    assert code == 1, output
    assert "step 'pre/cat' (OrdinalEncoder) learned NaN as a category and encodes it as -2" in output
    assert "nothing was published" in output and not (tmp_path / "models").exists()


@pytest.mark.parametrize("imputed", [False, True], ids=["encoded", "imputed-then-encoded"])
def test_a_pipeline_fitted_on_empty_strings_is_left_as_it_is(tmp_path: Path, imputed: bool) -> None:
    # Missing strings filled with '' before fitting: the encoder learned '' as a category, and an imputer
    # looking for NaN never saw one. Nothing is changed: made to read '', that imputer would turn a missing
    # city into its fill value, which the fitted pipeline never did (skl2onnx refuses it as it stands).
    frame, labels = string_frame()
    frame["city"] = frame["city"].fillna("")
    strings = OneHotEncoder(handle_unknown="ignore")
    if imputed:
        strings = make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"), strings)
    model = segment_model(strings, frame, labels)
    code, output = export_segments(model, frame, labels, tmp_path)
    assert "missing strings read as ''" not in output
    if imputed:
        assert code == 1 and "The converter is implemented when the missing values are string" in output, output
    else:
        assert code == 0, output


def test_a_model_file_that_is_not_a_fitted_estimator_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    frame, labels = string_frame(60)
    frame.assign(segment=labels).to_csv(tmp_path / "sample.csv", index=False)
    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    (tmp_path / "garbage.joblib").write_bytes(b"not a pickle at all")
    joblib.dump(LinearRegression(), tmp_path / "unfitted.joblib")
    expected = {
        "dict": "holds a dict, not a scikit-learn estimator or pipeline with predict",
        "garbage": "is not a joblib file",
        "unfitted": "holds an estimator that was never fitted",
    }
    # A custom step whose module is not importable where the export runs (pickled here, then taken away).
    (tmp_path / "userlib").mkdir()
    (tmp_path / "userlib" / "__init__.py").write_text("class Step:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import userlib  # type: ignore[import-not-found]

        joblib.dump(userlib.Step(), tmp_path / "custom.joblib")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("userlib", None)
    expected["custom"] = "needs module 'userlib', which this Python cannot import"
    # A custom step defined in the script that saved it (its __main__), which no other Python has.
    scripted = type("Scripted", (), {"__module__": "__main__"})
    sys.modules["__main__"].Scripted = scripted  # type: ignore[attr-defined]
    try:
        joblib.dump(scripted(), tmp_path / "scripted.joblib")
    finally:
        delattr(sys.modules["__main__"], "Scripted")
    expected["scripted"] = "needs a class this Python cannot find"
    for name, message in expected.items():
        code, output = invoke("pipeline", str(tmp_path / f"{name}.joblib"), "--sample", str(tmp_path / "sample.csv"),
                              "--name", name, "--out", str(tmp_path / "models"))  # fmt: skip
        assert code == 2 and message in output, output  # 2: a usage error (an exception would exit 1)
    # A classifier asked to score a numeric column: named, on --target.
    model = segment_model(OneHotEncoder(handle_unknown="ignore"), frame, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    frame.assign(price=np.arange(60) * 1.5).to_csv(tmp_path / "priced.csv", index=False)
    code, output = invoke("pipeline", str(tmp_path / "model.joblib"), "--sample", str(tmp_path / "priced.csv"),
                          "--target", "price", "--name", "priced", "--out", str(tmp_path / "models"))  # fmt: skip
    assert code == 2 and "the pipeline cannot score column 'price'" in output, output
    assert not (tmp_path / "models").exists()


def test_a_numeric_target_of_few_whole_values_and_a_semicolon_file_get_a_hint(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"age": rng.uniform(18, 80, 120), "city": rng.choice(["a", "b", "c"], 120)})
    frame["churn"] = (frame["age"] > 50).astype(int)
    frame.to_csv(tmp_path / "churn.csv", index=False)
    frame.to_csv(tmp_path / "semicolons.csv", index=False, sep=";")
    out = ("--out", str(tmp_path / "models"))
    code, output = invoke("train", str(tmp_path / "semicolons.csv"), "--target", "churn", "--estimator", "tree",
                          "--name", "s", *out)  # fmt: skip
    assert code == 2 and "the file reads as one column: tabserve reads comma-separated files" in output, output
    code, output = invoke("train", str(tmp_path / "churn.csv"), "--target", "churn", "--estimator", "logistic",
                          "--name", "c", *out)  # fmt: skip
    assert code == 2 and "--task classification keeps its values as classes" in output, output
    code, output = invoke("train", str(tmp_path / "churn.csv"), "--target", "churn", "--estimator", "tree",
                          "--folds", "2", "--name", "c", *out)  # fmt: skip
    assert code == 0, output
    assert "target 'churn' has 2 whole-number values and is learned as a regression" in output


def test_a_rare_class_a_constant_column_and_a_repeated_header_get_notes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = ["amount,amount,country,fraud"]
    for index in range(200):
        rows.append(f"{rng.uniform(1, 100):.2f},{rng.uniform(1, 100):.2f},FR,{'yes' if index % 50 == 0 else 'no'}")
    (tmp_path / "fraud.csv").write_text("\n".join(rows) + "\n")
    code, output = invoke("train", str(tmp_path / "fraud.csv"), "--target", "fraud", "--estimator", "tree",
                          "--folds", "2", "--name", "fraud", "--out", str(tmp_path / "models"))  # fmt: skip
    assert code == 0, output
    assert "class 'yes' is 2.0% of the rows: a model that never predicts it still scores a high accuracy" in output
    assert "column 'country' holds one value in every row" in output
    assert "column 'amount.1' is a second 'amount' in the header, renamed by pandas" in output


def test_a_graph_onnxruntime_cannot_run_is_refused_naming_it_not_a_traceback(tmp_path: Path) -> None:
    # skl2onnx converts a string imputer's add_indicator into a graph whose Gather reads out of bounds.
    frame, labels = string_frame()
    frame["city"] = frame["city"].fillna("")
    strings = make_pipeline(SimpleImputer(missing_values="", strategy="constant", fill_value="?", add_indicator=True),
                            OneHotEncoder(handle_unknown="ignore"))  # fmt: skip
    model = segment_model(strings, frame, labels)
    code, output = export_segments(model, frame, labels, tmp_path)
    assert code == 1, output
    assert "skl2onnx converted the pipeline, but onnxruntime cannot run the graph" in output
    assert "nothing was published" in output and not (tmp_path / "models").exists()
