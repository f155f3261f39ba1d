"""What export leaves for the explainer: background rows drawn from training, importance on held-out rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from contract import BACKGROUND_FILE
from export.background import DEFAULT_BACKGROUND_ROWS, sample_background
from export.examples import EXAMPLES, train_example
from tests.conftest import read_card


def test_background_holds_the_default_rows_encoded_like_golden_inputs(model_dir: Path) -> None:
    card = read_card(model_dir, "penguins")
    background = json.loads((model_dir / "penguins" / "1" / BACKGROUND_FILE).read_text())
    assert card["background"] == {"file": BACKGROUND_FILE, "rows": 100, "seed": 0, "stratified": True}
    assert card["files"]["background"] == BACKGROUND_FILE
    assert (background["rows"], background["seed"], background["stratified"]) == (100, 0, True)
    types = {spec["name"]: spec["datatype"] for spec in card["inputs"]}
    assert {name: tensor["datatype"] for name, tensor in background["inputs"].items()} == types
    assert all(tensor["shape"] == [100, 1] and len(tensor["data"]) == 100 for tensor in background["inputs"].values())
    sex = background["inputs"]["sex"]["data"]
    assert set(sex) <= {"male", "female", ""} and all(isinstance(value, str) for value in sex)


def test_a_training_set_smaller_than_the_default_is_taken_whole_unstratified_for_regression(model_dir: Path) -> None:
    card = read_card(model_dir, "age-weight")  # five training rows
    assert card["background"] == {"file": BACKGROUND_FILE, "rows": 5, "seed": 0, "stratified": False}
    background = json.loads((model_dir / "age-weight" / "1" / BACKGROUND_FILE).read_text())
    assert sorted(background["inputs"]["age"]["data"]) == [20.0, 25.0, 30.0, 35.0, 40.0]


def test_penguin_background_keeps_each_class_share_within_one_row(model_dir: Path) -> None:
    trained = train_example(EXAMPLES["penguins"])
    drawn = sample_background(trained.train_frame, trained.train_labels, DEFAULT_BACKGROUND_ROWS)
    written = json.loads((model_dir / "penguins" / "1" / BACKGROUND_FILE).read_text())["inputs"]
    # The file holds exactly this sample (same rows, same order), so its class shares are these.
    assert written["bill_length_mm"]["data"] == [
        None if np.isnan(value) else value for value in drawn.frame["bill_length_mm"].astype(float).tolist()
    ]
    drawn_counts = trained.train_labels.loc[drawn.frame.index].value_counts()
    expected = trained.train_labels.value_counts(normalize=True) * DEFAULT_BACKGROUND_ROWS
    assert (drawn_counts - expected).abs().max() < 1.0


def test_stratified_sampling_of_an_unbalanced_set_with_a_one_row_class_is_within_one_row() -> None:
    labels = pd.Series(["rare"] * 1 + ["few"] * 10 + ["many"] * 989)
    frame = pd.DataFrame({"x": np.arange(len(labels), dtype=np.float32)})
    drawn = sample_background(frame, labels, 100, seed=3)
    counts = labels.loc[drawn.frame.index].value_counts()
    assert len(drawn.frame) == 100 and drawn.stratified
    # Shares 98.9, 1.0 and 0.1 rows: largest remainder gives the spare row to "many" (train_test_split refuses this).
    assert counts.to_dict() == {"many": 99, "few": 1}
    assert drawn.frame.index.equals(sample_background(frame, labels, 100, seed=3).frame.index)  # seeded


def test_importance_has_one_sorted_entry_per_raw_column(model_dir: Path) -> None:
    for name, scoring in [("penguins", "accuracy"), ("diabetes", "r2")]:
        card = read_card(model_dir, name)
        importance = card["importance"]
        assert (importance["method"], importance["scoring"], importance["repeats"]) == ("permutation", scoring, 5)
        assert 0 < importance["rows"] <= 1000 and importance["seed"] == 0
        columns = [entry["column"] for entry in importance["columns"]]
        assert sorted(columns) == sorted(feature["column"] or feature["name"] for feature in card["features"])
        means = [entry["mean"] for entry in importance["columns"]]
        assert means == sorted(means, reverse=True) and means[0] > 0
        assert all(entry["std"] >= 0 for entry in importance["columns"])
