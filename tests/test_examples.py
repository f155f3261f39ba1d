"""Every built-in example exports, passes the parity gate, and describes itself fully."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import EXAMPLE_NAMES, read_card, read_golden

V2_TO_NUMPY: dict[str, Any] = {"FP32": np.float32, "BYTES": object, "INT64": np.int64}


def golden_feed(golden: dict[str, Any]) -> dict[str, Any]:
    feed = {}
    for name, tensor in golden["inputs"].items():
        values = [np.nan if value is None else value for value in tensor["data"]]
        feed[name] = np.array(values, dtype=V2_TO_NUMPY[tensor["datatype"]]).reshape(tensor["shape"])
    return feed


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_is_published_with_passing_parity(model_dir: Path, name: str) -> None:
    card = read_card(model_dir, name)
    parity = card["parity"]
    # The gate ran on real rows, every output of the model, and what it recorded is within the tolerance it
    # recorded: a card whose figures contradict its verdict (or a gate that checked nothing) fails here.
    assert parity["rows"] > parity["edge_rows"] > 0
    assert set(parity["outputs"]) == {output["name"] for output in card["outputs"]}
    assert parity["label_mismatches"] == (0 if card["task"] == "classification" else None)
    for output in parity["outputs"].values():
        assert output["failing_rows"] == 0
        assert output["max_abs_error"] <= 1e-4


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_card_describes_inputs_outputs_features_and_provenance(model_dir: Path, name: str) -> None:
    card = read_card(model_dir, name)
    folder = model_dir / name / "1"
    assert card["format"] == "tabserve.model/2"
    assert (card["name"], card["version"]) == (name, 1)
    assert card["sha256"] == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert [spec["name"] for spec in card["inputs"]] == [feature["name"] for feature in card["features"]]
    assert all(spec["shape"] == [-1, 1] for spec in card["inputs"])
    assert {"scikit-learn", "skl2onnx", "onnxruntime", "opset"} <= set(card["versions"])
    assert card["metrics"]["cv"]["folds"] >= 2
    session = ort.InferenceSession(folder / "model.onnx", providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[0]) for i in session.get_inputs()] == [(spec["name"], None) for spec in card["inputs"]]
    assert session.get_modelmeta().custom_metadata_map["tabserve.task"] == card["task"]
    if card["task"] == "classification":
        assert [spec["name"] for spec in card["outputs"]] == ["label", "probabilities"]
        assert card["outputs"][1]["shape"] == [-1, len(card["classes"])]
    else:
        assert [spec["name"] for spec in card["outputs"]] == ["variable"]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_golden_vectors_reproduce_with_onnxruntime(model_dir: Path, name: str) -> None:
    golden = read_golden(model_dir, name)
    session = ort.InferenceSession(model_dir / name / "1" / "model.onnx", providers=["CPUExecutionProvider"])
    names = list(golden["outputs"])
    results = dict(zip(names, session.run(names, golden_feed(golden)), strict=True))
    for output, tensor in golden["outputs"].items():
        got = results[output]
        assert list(got.shape) == tensor["shape"]
        if tensor["datatype"] == "BYTES":
            assert got.ravel().tolist() == tensor["data"]
        else:
            np.testing.assert_allclose(got.ravel(), np.array(tensor["data"], dtype=np.float64), rtol=1e-4, atol=1e-4)


def test_age_weight_scores_age_35_as_75(model_dir: Path) -> None:
    session = ort.InferenceSession(model_dir / "age-weight" / "1" / "model.onnx", providers=["CPUExecutionProvider"])
    (prediction,) = session.run(None, {"age": np.array([[35.0]], dtype=np.float32)})
    assert prediction.tolist() == [[75.0]]


def test_mixed_type_example_has_string_inputs_with_known_categories_and_missing_values(model_dir: Path) -> None:
    card = read_card(model_dir, "penguins")
    kinds = {feature["name"]: feature for feature in card["features"]}
    assert kinds["island"]["datatype"] == "BYTES"
    assert kinds["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert kinds["bill_length_mm"]["datatype"] == "FP32"
    assert all(feature["accepts_missing"] for feature in card["features"])
    golden = read_golden(model_dir, "penguins")
    assert None in golden["inputs"]["bill_length_mm"]["data"], "edge rows with a missing number are in the golden set"
    assert "" in golden["inputs"]["sex"]["data"], "edge rows with a missing category are in the golden set"


def test_diabetes_model_was_chosen_by_grid_search_over_several_families(model_dir: Path) -> None:
    card = read_card(model_dir, "diabetes")
    assert card["search"]["candidates"] >= 4
    assert card["estimator"] in {"LinearRegression", "Ridge", "DecisionTreeRegressor", "GradientBoostingRegressor"}
    assert card["metrics"]["cv"]["r2"]["mean"] > 0.3
