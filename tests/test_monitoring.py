"""The card's monitoring reference: what a server counts requests against, measured at export."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from contract import CARD_FILE, find_bin, read_card
from export.examples import EXAMPLES, train_example
from export.features import prepare_frame
from export.publish import export_pipeline
from export.training import build_preprocessor


def test_penguin_island_frequencies_are_the_training_shares(model_dir: Path) -> None:
    card = read_card((model_dir / "penguins" / "1" / CARD_FILE).read_bytes())
    assert card["monitoring"] is not None
    island = card["monitoring"]["features"]["island"]
    assert island["kind"] == "categorical"
    trained = train_example(EXAMPLES["penguins"])  # the same seeded split the examples export used
    expected = trained.train_frame["island"].value_counts(normalize=True).to_dict()
    assert island["frequencies"] == expected and math.isclose(sum(island["frequencies"].values()), 1.0)
    assert island["missing_rate"] == 0.0
    assert card["monitoring"]["rows"] == len(trained.train_frame)


def test_penguin_bill_length_has_increasing_edges_shares_summing_to_1_and_missing_values(model_dir: Path) -> None:
    card = read_card((model_dir / "penguins" / "1" / CARD_FILE).read_bytes())
    assert card["monitoring"] is not None
    bill = card["monitoring"]["features"]["bill_length_mm"]
    assert bill["kind"] == "numeric"
    edges = bill["edges"]
    assert 0 < len(edges) <= 9 and all(low < high for low, high in zip(edges, edges[1:], strict=False))
    assert len(bill["shares"]) == len(edges) + 1 and math.isclose(sum(bill["shares"]), 1.0)
    assert bill["missing_rate"] > 0  # penguins has rows without measurements
    assert bill["minimum"] is not None and bill["maximum"] is not None
    assert bill["minimum"] < edges[0] and edges[-1] <= bill["maximum"]
    # Every input has a reference, keyed by its ONNX input name.
    assert set(card["monitoring"]["features"]) == {feature["name"] for feature in card["features"]}


def test_a_classifier_references_its_predicted_classes_on_held_out_rows(model_dir: Path) -> None:
    card = read_card((model_dir / "penguins" / "1" / CARD_FILE).read_bytes())
    assert card["monitoring"] is not None and card["classes"] is not None
    prediction = card["monitoring"]["prediction"]
    assert prediction["kind"] == "classes"
    assert list(prediction["shares"]) == [str(label) for label in card["classes"]]
    assert math.isclose(sum(prediction["shares"].values()), 1.0)
    assert prediction["rows"] == card["metrics"]["holdout"]["rows"]


def test_a_regressor_references_its_held_out_predictions_in_bins(model_dir: Path) -> None:
    card = read_card((model_dir / "diabetes" / "1" / CARD_FILE).read_bytes())
    assert card["monitoring"] is not None
    prediction = card["monitoring"]["prediction"]
    assert prediction["kind"] == "bins"
    assert prediction["rows"] == card["metrics"]["holdout"]["rows"]
    assert len(prediction["edges"]) == 9 and len(prediction["shares"]) == 10
    assert math.isclose(sum(prediction["shares"]), 1.0)


def test_the_binning_rule_reproduces_the_stored_shares_on_the_training_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # 'x value' becomes input x_value; 'level' has only three values (fewer bins); 'colour' has missing ''.
    raw = pd.DataFrame(
        {
            "x value": np.where(np.arange(200) % 10 == 0, np.nan, rng.normal(size=200)),
            "level": rng.integers(0, 3, size=200).astype(float),
            "colour": rng.choice(["red", "green", "blue", ""], size=200, p=[0.5, 0.3, 0.1, 0.1]),
        }
    )
    frame = prepare_frame(raw)
    target = np.nan_to_num(frame["x value"].to_numpy()) + frame["level"].to_numpy()
    pipeline = Pipeline([("prep", build_preprocessor(frame)), ("regress", LinearRegression())]).fit(frame, target)
    published = export_pipeline(
        pipeline, name="binned", model_dir=tmp_path, training_frame=frame, check_frame=frame.iloc[:50],
        task="regression", description="binning rule", background_rows=0,
    )  # fmt: skip
    monitoring = published.card["monitoring"]
    assert monitoring is not None and monitoring["rows"] == 200

    x = monitoring["features"]["x_value"]
    assert x["kind"] == "numeric" and x["missing_rate"] == 0.1
    present = [float(value) for value in frame["x value"] if not math.isnan(value)]
    counts = Counter(find_bin(x["edges"], value) for value in present)
    assert x["shares"] == [counts[index] / len(present) for index in range(len(x["edges"]) + 1)]
    assert len(x["edges"]) == 9 and x["shares"][0] > 0  # no edge at the minimum: bin 0 holds values
    assert (x["minimum"], x["maximum"]) == (min(present), max(present))

    level = monitoring["features"]["level"]
    assert level["kind"] == "numeric" and level["edges"] == [1.0, 2.0]  # quantiles 0, 1, 2: the 0 edge dropped
    expected = (frame["level"].value_counts(normalize=True).sort_index()).tolist()
    assert level["shares"] == expected

    colour = monitoring["features"]["colour"]
    assert colour["kind"] == "categorical"
    assert colour["missing_rate"] == (frame["colour"] == "").mean()
    assert colour["frequencies"] == frame["colour"][frame["colour"] != ""].value_counts(normalize=True).to_dict()

    prediction = monitoring["prediction"]
    assert prediction["kind"] == "bins" and prediction["rows"] == 50
    predicted = pipeline.predict(frame.iloc[:50]).astype(np.float32).tolist()
    counts = Counter(find_bin(prediction["edges"], value) for value in predicted)
    assert prediction["shares"] == [counts[index] / 50 for index in range(len(prediction["edges"]) + 1)]


def test_a_numeric_column_with_no_values_has_no_range_edges_or_shares(tmp_path: Path) -> None:
    frame = prepare_frame(pd.DataFrame({"x": np.arange(20.0), "empty": np.full(20, np.nan)}))
    pipeline = Pipeline([("prep", build_preprocessor(frame[["x"]])), ("regress", LinearRegression())])
    pipeline.fit(frame, frame["x"].to_numpy())
    published = export_pipeline(
        pipeline, name="empty", model_dir=tmp_path, training_frame=frame, check_frame=frame,
        task="regression", description="an all-missing column", background_rows=0,
    )  # fmt: skip
    assert published.card["monitoring"] is not None
    empty = published.card["monitoring"]["features"]["empty"]
    assert empty == {
        "kind": "numeric",
        "minimum": None,
        "maximum": None,
        "missing_rate": 1.0,
        "edges": [],
        "shares": [],
    }
