"""A user's CSV through `export train` and `pipeline --sample`: which columns the model sees, what is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from starlette.testclient import TestClient

from export.__main__ import cli
from serve.app import create_app
from serve.settings import Settings

ROWS = 40


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def train(data: Path, out: Path, *options: str, target: str = "label") -> tuple[int, str]:
    """The cheapest training run: logistic regression (or a tree for regression), two folds, no background."""
    estimator = "tree" if target == "y" else "logistic"
    return invoke(
        "train", str(data), "--target", target, "--estimator", estimator, "--name", "m", "--folds", "2",
        "--background-rows", "0", "--out", str(out), *options,
    )  # fmt: skip


def card_of(out: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((out / "m" / "1" / "model.json").read_text())
    return card


def features_of(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {feature["name"]: feature for feature in card["features"]}


def frame(**extra: Any) -> pd.DataFrame:
    """ROWS rows: a number `x` that separates the classes of `label` (the commonest literally 'None'), a colour."""
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=ROWS), 3)
    label = np.where(x > -0.2, "None", np.where(x < -1.0, "low", "mid"))
    colour = rng.choice(["red", "blue", "None"], ROWS)
    return pd.DataFrame({"x": x, "colour": colour, **extra, "label": label, "y": 2 * x + 1})


def write(data: pd.DataFrame, path: Path, index: bool = False) -> Path:
    data.to_csv(path, index=index)
    return path


def test_a_class_named_none_stays_a_class_and_the_served_model_predicts_it(tmp_path: Path) -> None:
    data = write(frame(), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y")
    assert code == 0, output
    assert "dropping" not in output  # "None" is a label, not a missing one
    card = card_of(tmp_path / "models")
    assert card["classes"] == ["None", "low", "mid"]
    assert "None" in features_of(card)["colour"]["categories"]
    settings = Settings(model_dir=tmp_path / "models", grpc_port=None)
    with TestClient(create_app(settings)) as client:
        rows = {"x": [1.5, -2.0], "colour": ["red", "None"]}
        inputs = [
            {"name": "x", "datatype": "FP32", "shape": [2, 1], "data": rows["x"]},
            {"name": "colour", "datatype": "BYTES", "shape": [2, 1], "data": rows["colour"]},
        ]
        response = client.post("/v2/models/m/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    labels = next(output for output in response.json()["outputs"] if output["name"] == "label")
    assert labels["data"] == ["None", "low"]


def test_drop_leaves_columns_out_and_the_card_says_why(tmp_path: Path) -> None:
    customers = [f"C-{number:04d}" for number in range(ROWS)]
    data = write(frame(customer=customers), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "customer", "--drop", "y")
    assert code == 0, output
    card = card_of(tmp_path / "models")
    assert list(features_of(card)) == ["x", "colour"]
    assert card["metrics"]["data"]["left_out"] == {"customer": "--drop", "y": "--drop"}


def test_an_id_column_is_refused_with_advice_to_drop_it(tmp_path: Path) -> None:
    customers = [f"C-{number:04d}" for number in range(ROWS)]
    data = write(frame(customer=customers), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y")
    assert code == 2
    assert f"column 'customer' looks like an ID or free text ({ROWS} of {ROWS} values distinct" in output
    assert "--drop customer" in output
    assert not (tmp_path / "models").exists()


def test_a_date_column_is_refused_unless_the_user_types_it(tmp_path: Path) -> None:
    days = pd.date_range("2024-01-01", periods=ROWS, freq="3D").strftime("%d/%m/%Y")
    data = write(frame(signup=days), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y")
    assert code == 2
    assert "column 'signup' looks like dates (e.g. '01/01/2024'" in output
    assert "derive numeric parts" in output and "--drop signup" in output
    code, output = train(data, tmp_path / "models", "--drop", "y", "--categorical", "signup")
    assert code == 0, output
    assert features_of(card_of(tmp_path / "models"))["signup"]["kind"] == "categorical"


def test_a_month_name_column_is_a_category_not_a_date(tmp_path: Path) -> None:
    months = np.resize(["March", "April", "May"], ROWS)
    data = write(frame(month=months), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y")
    assert code == 0, output
    assert features_of(card_of(tmp_path / "models"))["month"]["categories"] == ["April", "March", "May"]


def test_categorical_reads_a_numeric_code_as_categories_keeping_its_text(tmp_path: Path) -> None:
    codes = np.resize(["007", "012", "", "031"], ROWS)  # a code with leading zeros and gaps
    data = write(frame(code=codes), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y", "--categorical", "code")
    assert code == 0, output
    card = card_of(tmp_path / "models")
    feature = features_of(card)["code"]
    assert (feature["kind"], feature["datatype"], feature["categories"]) == (
        "categorical",
        "BYTES",
        ["007", "012", "031"],
    )
    assert card["metrics"]["data"]["typed"] == {"code": "categorical"}


def test_numeric_on_a_column_of_text_names_the_column_and_a_bad_value(tmp_path: Path) -> None:
    data = write(frame(), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y", "--numeric", "colour")
    assert code == 2
    assert "Invalid value for --numeric: column 'colour' has" in output
    assert "values that are not numbers, e.g. " in output


def test_numeric_with_na_values_reads_a_marker_as_missing(tmp_path: Path) -> None:
    data = write(frame(size=np.resize(["1.5", "?", "2.5", "4"], ROWS)), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y", "--numeric", "size")
    assert code == 2
    assert "e.g. '?' (data row 2); --na-values ? reads them as missing" in output
    code, output = train(data, tmp_path / "models", "--drop", "y", "--numeric", "size", "--na-values", "?")
    assert code == 0, output
    size = features_of(card_of(tmp_path / "models"))["size"]
    assert (size["kind"], size["minimum"], size["maximum"], size["accepts_missing"]) == ("numeric", 1.5, 4.0, True)


@pytest.mark.parametrize("option", ["--drop", "--categorical", "--numeric"])
def test_an_unknown_column_is_named_with_the_columns_there_are(tmp_path: Path, option: str) -> None:
    data = write(frame(), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", option, "colur")
    assert code == 2
    assert f"Invalid value for {option}: column 'colur' is not in" in output
    assert "(columns: ['x', 'colour', 'label', 'y'])" in output


def test_na_values_adds_markers_and_leaves_other_strings_alone(tmp_path: Path) -> None:
    weights = np.resize(["61.5", "NA", "70", "55.25"], ROWS)  # as R writes a missing number
    data = write(frame(weight=weights), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y")
    assert code == 2
    assert f"column 'weight' holds numbers and text ('NA' in {ROWS // 4} rows): --na-values NA" in output
    code, output = train(data, tmp_path / "models", "--drop", "y", "--na-values", "NA,N/A", "--na-values", "-")
    assert code == 0, output
    card = card_of(tmp_path / "models")
    weight = features_of(card)["weight"]
    assert (weight["kind"], weight["accepts_missing"]) == ("numeric", True)
    assert "None" in features_of(card)["colour"]["categories"]  # not listed, so still a category
    assert card["metrics"]["data"]["na_values"] == ["", "NA", "N/A", "-"]


def test_a_saved_row_index_is_left_out_with_a_note(tmp_path: Path) -> None:
    data = write(frame(row=np.arange(1, ROWS + 1)), tmp_path / "data.csv", index=True)
    code, output = train(data, tmp_path / "models", "--drop", "y")
    assert code == 0, output
    assert "leaving out column 'Unnamed: 0': its header is empty" in output
    assert f"leaving out column 'row': it counts the rows, 1 to {ROWS} in order" in output
    card = card_of(tmp_path / "models")
    assert list(features_of(card)) == ["x", "colour"]
    assert set(card["metrics"]["data"]["left_out"]) == {"Unnamed: 0", "row", "y"}


def test_an_index_like_column_the_user_names_is_kept(tmp_path: Path) -> None:
    data = write(frame(row=np.arange(ROWS)), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y", "--numeric", "row")
    assert code == 0, output
    assert "leaving out" not in output
    assert features_of(card_of(tmp_path / "models"))["row"]["maximum"] == ROWS - 1


def test_rows_without_a_target_are_counted_and_reported(tmp_path: Path) -> None:
    data = frame()
    data.loc[[3, 7, 11], "y"] = np.nan
    path = write(data, tmp_path / "data.csv")
    code, output = train(path, tmp_path / "models", "--drop", "label", target="y")
    assert code == 0, output
    assert f"dropping 3 of {ROWS} rows with no 'y' (read as missing: empty: 3)" in output
    assert card_of(tmp_path / "models")["metrics"]["data"]["rows_without_target"] == 3


def test_losing_most_rows_to_a_missing_target_is_an_error(tmp_path: Path) -> None:
    data = frame()
    data.loc[: ROWS // 2 + 1, "y"] = np.nan
    path = write(data, tmp_path / "data.csv")
    code, output = train(path, tmp_path / "models", "--drop", "label", target="y")
    assert code == 2
    assert f"{ROWS // 2 + 2} of {ROWS} rows have no 'y' (empty: {ROWS // 2 + 2}): that is most of the file" in output


def test_a_missing_marker_that_is_a_class_of_the_target_is_an_error(tmp_path: Path) -> None:
    data = write(frame(), tmp_path / "data.csv")
    code, output = train(data, tmp_path / "models", "--drop", "y", "--na-values", "None")
    assert code == 2
    assert "'None' marks" in output and "rows of 'label' as missing, as many as a class" in output
    assert "leave it out of --na-values" in output


def test_the_pipeline_sample_is_read_with_the_same_missing_markers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=ROWS).astype(np.float32)
    x[::5] = np.nan
    model = Pipeline([("impute", SimpleImputer()), ("regress", LinearRegression())])
    model.fit(pd.DataFrame({"x": x}), np.nan_to_num(x) + 1)
    joblib.dump(model, tmp_path / "model.joblib")
    pd.DataFrame({"x": np.where(np.isnan(x), "NA", x.astype(str)), "y": np.nan_to_num(x) + 1}).to_csv(
        tmp_path / "sample.csv", index=False
    )
    command = ["pipeline", str(tmp_path / "model.joblib"), "--sample", str(tmp_path / "sample.csv"), "--target", "y"]
    code, output = invoke(*command, "--name", "m", "--out", str(tmp_path / "models"))
    assert code == 2
    assert "column 'x' holds numbers and text ('NA' in 8 rows): --na-values NA" in output
    code, output = invoke(*command, "--na-values", "NA", "--name", "m", "--out", str(tmp_path / "models"))
    assert code == 0, output
    assert features_of(card_of(tmp_path / "models"))["x"]["accepts_missing"] is True


def test_a_class_written_as_empty_fields_is_an_error(tmp_path: Path) -> None:
    data = frame()
    data["label"] = data["label"].replace("None", np.nan)  # what pandas writes for a Python None
    path = write(data, tmp_path / "data.csv")
    code, output = train(path, tmp_path / "models", "--drop", "y")
    assert code == 2
    assert "rows have an empty 'label', more than any class has (largest: " in output
    assert "if empty means a class, write its name in the file" in output


def test_a_number_target_with_r_missing_markers_is_refused_until_they_are_named(tmp_path: Path) -> None:
    data = frame()
    data["y"] = data["y"].astype(str).where(data.index % 10 != 0, "NA")  # R writes a missing number as NA
    path = write(data, tmp_path / "data.csv")
    code, output = train(path, tmp_path / "models", "--drop", "label", target="y")
    assert code == 2
    assert "the target 'y' holds numbers and text ('NA' in 4 rows): --na-values NA reads the text as missing" in output
    code, output = train(path, tmp_path / "models", "--drop", "label", "--na-values", "NA", target="y")
    assert code == 0, output
    assert f"dropping 4 of {ROWS} rows with no 'y' (read as missing: 'NA': 4)" in output
    assert card_of(tmp_path / "models")["task"] == "regression"


# scikit-learn notes that the sample has column names the pipeline was not fitted with: true, and harmless.
@pytest.mark.filterwarnings("ignore:X has feature names, but LinearRegression was fitted without:UserWarning")
def test_a_pipeline_fitted_without_column_names_gets_its_sample_without_the_saved_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 2)).astype(np.float32)
    model = Pipeline([("regress", LinearRegression())]).fit(x, x @ [2.0, -1.0])
    joblib.dump(model, tmp_path / "model.joblib")
    pd.DataFrame(x, columns=["a", "b"]).to_csv(tmp_path / "sample.csv")  # with the row index, header empty
    code, output = invoke(
        "pipeline", str(tmp_path / "model.joblib"), "--sample", str(tmp_path / "sample.csv"),
        "--name", "m", "--out", str(tmp_path / "models"),
    )  # fmt: skip
    assert code == 0, output
    assert "leaving out column 'Unnamed: 0': its header is empty" in output
    card = card_of(tmp_path / "models")
    assert [feature["name"] for feature in card["features"]] == ["a", "b"]
    assert card["metrics"]["data"]["left_out"] == {"Unnamed: 0": "its header is empty (a saved row index?)"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--drop", "x", "--numeric", "x"],
            "Invalid value for --numeric: column 'x' is given to both --drop and --numeric",
        ),
        (["--categorical", "label"], "Invalid value for --categorical: column 'label' is the --target"),
        (["--drop", "x", "--drop", "colour", "--drop", "y"], "no columns are left to learn from"),
    ],
    ids=["two-options", "the-target", "nothing-left"],
)
def test_contradictory_column_choices_are_refused_before_reading_rows(
    tmp_path: Path, options: list[str], message: str
) -> None:
    code, output = train(write(frame(), tmp_path / "data.csv"), tmp_path / "models", *options)
    assert code == 2
    assert message in output


def test_a_pipeline_fitted_on_text_codes_gets_them_as_text_with_categorical(tmp_path: Path) -> None:
    codes = pd.DataFrame({"code": np.resize(["007", "012", "031"], ROWS)})
    model = Pipeline([("onehot", OneHotEncoder(handle_unknown="ignore")), ("regress", LinearRegression())])
    model.fit(codes, codes["code"].map({"007": 1.0, "012": 2.0, "031": 5.0}))
    joblib.dump(model, tmp_path / "model.joblib")
    codes.to_csv(tmp_path / "sample.csv", index=False)
    command = ["pipeline", str(tmp_path / "model.joblib"), "--sample", str(tmp_path / "sample.csv"), "--name", "m"]
    code, output = invoke(*command, "--categorical", "code", "--out", str(tmp_path / "models"))
    assert code == 0, output
    feature = features_of(card_of(tmp_path / "models"))["code"]
    assert (feature["kind"], feature["categories"]) == ("categorical", ["007", "012", "031"])
