"""Explanations: exact Shapley values against shap's, the axioms, sampling's error, the endpoints and their limits."""

from __future__ import annotations

import json
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from export.__main__ import cli as export_cli
from serve import shapley
from tests.conftest import golden_rows, read_card, read_golden, running_server

ATOL = 1e-6


@pytest.fixture(scope="module")
def explain_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples, plus a binary classifier and a 10-column tree (both small enough for exact mode) and a
    version exported without background data."""
    from palmerpenguins import load_penguins
    from sklearn.datasets import load_diabetes

    out = tmp_path_factory.mktemp("explain-models")
    for name in ("age-weight", "breast-cancer", "penguins"):
        shutil.copytree(model_dir / name, out / name)
    data = tmp_path_factory.mktemp("explain-data")
    penguins = load_penguins().drop(columns=["year"])
    penguins["species"] = np.where(penguins["species"] == "Adelie", "Adelie", "other")
    penguins.to_csv(data / "adelie.csv", index=False)
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(data / "diabetes.csv", index=False)
    exports = [
        [str(data / "adelie.csv"), "--target", "species", "--estimator", "logistic", "--name", "adelie"],
        [str(data / "diabetes.csv"), "--target", "target", "--estimator", "tree", "--name", "diabetes-tree"],
        [str(data / "adelie.csv"), "--target", "species", "--estimator", "logistic", "--name", "bare",
         "--background-rows", "0"],
    ]  # fmt: skip
    for arguments in exports:
        result = CliRunner().invoke(export_cli, ["train", *arguments, "--out", str(out), "--folds", "2"])
        assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def url(explain_dir: Path) -> Iterator[str]:
    with running_server(explain_dir) as base:
        yield base


def tensors(document: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """golden.json / background.json tensors as arrays (null in a float tensor is NaN)."""
    arrays = {}
    for name, tensor in document.items():
        data = tensor["data"]
        if tensor["datatype"] == "BYTES":
            arrays[name] = np.array(data, dtype=object).reshape(tensor["shape"])
        else:
            values = [np.nan if value is None else value for value in data]
            arrays[name] = np.array(values, dtype=np.float32).reshape(tensor["shape"])
    return arrays


def shap_values(folder: Path, rows: dict[str, np.ndarray[Any, Any]], output: str) -> tuple[Any, Any]:
    """shap's exact interventional values, over the same background, of the ONNX model's `output`.

    shap maskers take numbers, so a string column travels as a code into its vocabulary and back.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # shap's colormaps use a matplotlib API on import
        import shap

    background = tensors(json.loads((folder / "background.json").read_text())["inputs"])
    names = list(rows)
    vocabularies = {
        name: sorted(set(background[name].ravel()) | set(rows[name].ravel()))
        for name in names
        if rows[name].dtype == object
    }

    def encode(arrays: dict[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        columns = []
        for name in names:
            column = arrays[name].ravel()
            if name in vocabularies:
                column = np.array([vocabularies[name].index(value) for value in column], dtype=np.float64)
            columns.append(column.astype(np.float64))
        return np.stack(columns, axis=1)

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    def model(matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        feed = {}
        for j, name in enumerate(names):
            column = matrix[:, j]
            if name in vocabularies:
                feed[name] = np.array([vocabularies[name][int(code)] for code in column], dtype=object)[:, None]
            else:
                feed[name] = column.astype(np.float32)[:, None]
        result: np.ndarray[Any, Any] = session.run([output], feed)[0].astype(np.float64)
        return result.reshape(len(matrix), -1) if result.ndim > 1 and result.shape[1] > 1 else result.reshape(-1)

    encoded_background = encode(background)
    masker = shap.maskers.Independent(encoded_background, max_samples=len(encoded_background))
    explained = shap.explainers.Exact(model, masker)(encode(rows))
    return explained.values, explained.base_values


def v2_inputs(rows: dict[str, np.ndarray[Any, Any]], model: dict[str, Any]) -> list[dict[str, Any]]:
    by_name = {tensor["name"]: tensor for tensor in model["inputs"]}
    inputs = []
    for name, array in rows.items():
        data = [None if isinstance(value, float) and np.isnan(value) else value for value in array.ravel().tolist()]
        inputs.append({"name": name, "datatype": by_name[name]["datatype"], "shape": list(array.shape), "data": data})
    return inputs


@pytest.mark.parametrize(
    "name, output",
    [("diabetes-tree", "variable"), ("adelie", "probabilities"), ("penguins", "probabilities")],
)
def test_exact_values_agree_with_shap_including_unseen_categories_and_missing_values(
    url: str, explain_dir: Path, name: str, output: str
) -> None:
    """Regression, binary and multi-class; the golden rows end with unseen categories and missing values."""
    golden = read_golden(explain_dir, name)
    rows = tensors(golden["inputs"])
    picks = np.r_[0:3, len(next(iter(rows.values()))) - 3 : len(next(iter(rows.values())))]
    rows = {key: value[picks] for key, value in rows.items()}
    if name != "diabetes-tree":  # its numbers have no imputer: no golden row leaves one out
        missing = [(array == "") if array.dtype == object else np.isnan(array) for array in rows.values()]
        assert np.any(missing), "the explained rows include a missing value"
        categories = {feature["name"]: feature["categories"] for feature in read_card(explain_dir, name)["features"]}
        unseen = [value for key, array in rows.items() if categories[key] for value in array.ravel()
                  if value not in categories[key] and value != ""]  # fmt: skip
        assert unseen, "and a category the model never saw"
    model = httpx.get(f"{url}/v2/models/{name}").json()
    response = httpx.post(f"{url}/v2/models/{name}/explain", json={"inputs": v2_inputs(rows, model)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "exact" and body["additivity_error"] < 1e-5
    ours = np.array([[row[column] for column in body["columns"]] for row in body["values"]])  # (n, M, K)
    theirs, base = shap_values(explain_dir / name / "1", rows, output)
    theirs = np.asarray(theirs).reshape(ours.shape)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(base).reshape(len(picks), -1)[0], body["base_values"], atol=ATOL)
    # The prediction is the one inference gives, and base value + values add up to it.
    prediction = np.array(body["prediction"])
    np.testing.assert_allclose(np.array(body["base_values"]) + ours.sum(axis=1), prediction, atol=1e-5)


def test_shapley_axioms_on_a_hand_built_model() -> None:
    """An ignored column gets 0, two symmetric columns get equal values, and the values add up."""

    def score(feed: dict[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        a, b, ignored = (feed[name].astype(np.float64)[:, 0] for name in ("a", "b", "ignored"))
        return np.stack([(a + b) ** 2 + a * b, 3 * a * b], axis=1)

    generator = np.random.default_rng(7)
    shared = generator.normal(size=(40, 1))
    background = {"a": shared, "b": shared.copy(), "ignored": generator.normal(size=(40, 1))}
    rows = {"a": np.array([[1.5], [-2.0]]), "b": np.array([[1.5], [-2.0]]), "ignored": np.array([[9.0], [0.1]])}
    for method in ("exact", "permutation"):
        explanation = shapley.explain(score, rows, background, method=method, permutations=8)
        values = explanation.values
        np.testing.assert_allclose(values[:, 2], 0, atol=1e-12)
        np.testing.assert_allclose(values[:, 0], values[:, 1], atol=1e-12)
        assert explanation.additivity_error < 1e-12
        np.testing.assert_allclose(explanation.base_values, score(background).mean(axis=0))


def test_permutation_values_are_within_three_standard_errors_of_exact_on_ten_columns(url: str) -> None:
    golden = httpx.get(f"{url}/v1/models/diabetes-tree/golden").json()
    record = golden_rows(golden)[0]

    def explain(parameters: dict[str, Any]) -> dict[str, Any]:
        body = {"instances": [record], "parameters": parameters}
        response = httpx.post(f"{url}/v1/models/diabetes-tree:explain", json=body, timeout=60)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    exact = explain({"method": "exact"})
    sampled = explain({"method": "permutation", "permutations": 64, "seed": 3})
    assert sampled["method"] == "permutation" and sampled["permutations"] == 64
    assert sampled["additivity_error"] < 1e-5, "sampled values add up too: every order sums to the same total"
    errors = sampled["standard_errors"][0]
    differing = 0
    for column in exact["columns"]:
        (want,), (got,), (error,) = exact["values"][0][column], sampled["values"][0][column], errors[column]
        assert abs(got - want) <= 3 * error + 1e-9, (column, got, want, error)
        differing += error > 0
    assert differing >= 5, "a tree's columns interact: sampling has an error to report"


def test_records_explain_names_columns_outputs_and_matches_inference(url: str) -> None:
    record = {"island": "Dream", "bill_length_mm": 39.0, "bill_depth_mm": None, "flipper_length_mm": 190.0,
              "body_mass_g": 3700.0, "sex": "unknown-sex"}  # fmt: skip
    explained = httpx.post(f"{url}/v1/models/penguins:explain", json={"instances": [record]}, timeout=60).json()
    predicted = httpx.post(f"{url}/v1/models/penguins:predict", json={"instances": [record]}).json()
    probabilities = predicted["predictions"][0]["probabilities"]
    assert explained["outputs"] == list(probabilities)
    assert set(explained["columns"]) == set(record)
    np.testing.assert_allclose(explained["prediction"][0], list(probabilities.values()), atol=1e-6)
    assert explained["rows_evaluated"] == 2**6 * explained["background_rows"] + 1
    assert explained["model_version"] == "1" and explained["standard_errors"] is None
    assert explained["seconds"] > 0
    versioned = httpx.post(f"{url}/v2/models/penguins/versions/1/explain", json={
        "id": "why", "inputs": [{"name": key, "datatype": "BYTES" if isinstance(value, str) else "FP32",
                                 "shape": [1, 1], "data": [value]} for key, value in record.items()]})  # fmt: skip
    assert versioned.status_code == 200, versioned.text
    assert versioned.json()["id"] == "why" and versioned.json()["values"] == explained["values"]


BAD_REQUESTS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], int, str]] = [
    ("penguins", lambda body: {**body, "parameters": {"method": "shapley"}}, 400, "'exact' or 'permutation'"),
    ("penguins", lambda body: {**body, "parameters": {"method": "permutation", "permutations": 3}}, 400, "even"),
    ("penguins", lambda body: {**body, "parameters": {"seed": -1}}, 400, "parameters.seed"),
    ("penguins", lambda body: {**body, "parameters": "fast"}, 400, "'parameters' must be an object"),
    ("penguins", lambda body: {"instances": body["instances"] * 17}, 413, "SERVE_MAX_EXPLAIN_ROWS"),
    ("breast-cancer", lambda body: {**body, "parameters": {"method": "exact"}}, 400, "up to 12 columns"),
    ("breast-cancer", lambda body: {**body, "parameters": {"method": "permutation", "permutations": 10_000}}, 413,
     "SERVE_MAX_EXPLAIN_MODEL_ROWS"),
    ("bare", lambda body: body, 409, "--background-rows"),
    ("penguins", lambda body: {"instances": [{"island": 3}]}, 400, "must be a string"),
]  # fmt: skip


@pytest.mark.parametrize("name, change, status, words", BAD_REQUESTS)
def test_bad_explain_requests_get_a_4xx_naming_the_problem(
    url: str, name: str, change: Callable[[dict[str, Any]], dict[str, Any]], status: int, words: str
) -> None:
    golden = httpx.get(f"{url}/v1/models/{name}/golden").json()
    body = change({"instances": golden_rows(golden)[:1]})
    response = httpx.post(f"{url}/v1/models/{name}:explain", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_explanations_have_their_own_in_flight_limit_and_a_deadline(explain_dir: Path) -> None:
    env = {"SERVE_MAX_EXPLAIN_IN_FLIGHT": "1", "SERVE_REQUEST_TIMEOUT_S": "3",
           "SERVE_MAX_EXPLAIN_MODEL_ROWS": "100000000"}  # fmt: skip
    with running_server(explain_dir, env) as base:
        golden = httpx.get(f"{base}/v1/models/breast-cancer/golden").json()
        slow = {"instances": golden_rows(golden)[:16], "parameters": {"method": "permutation", "permutations": 2000}}
        answers: list[httpx.Response] = []

        def explain_slowly() -> None:
            answers.append(httpx.post(f"{base}/v1/models/breast-cancer:explain", json=slow, timeout=30))

        first = threading.Thread(target=explain_slowly)
        first.start()
        wait_for_metric(base, "tabserve_explain_in_flight 1.0")
        refused = httpx.post(f"{base}/v1/models/penguins:explain", json={"instances": [{}]})
        assert refused.status_code == 503 and "SERVE_MAX_EXPLAIN_IN_FLIGHT" in refused.json()["error"], refused.text
        assert refused.headers["retry-after"] == "1"
        # Inference goes on while the explanation holds its thread.
        inferred = httpx.post(f"{base}/v1/models/breast-cancer:predict", json={"instances": golden_rows(golden)[:1]})
        assert inferred.status_code == 200
        first.join(30)
        assert answers[0].status_code == 504 and "did not finish within 3 s" in answers[0].json()["error"]
        wait_for_metric(base, 'tabserve_rejected_requests_total{reason="explain_in_flight"} 1.0')
        wait_for_metric(base, "tabserve_explain_in_flight 0.0")


def wait_for_metric(base: str, line: str, timeout_s: float = 10.0) -> None:
    give_up = time.monotonic() + timeout_s
    while line not in httpx.get(f"{base}/metrics").text.splitlines():
        assert time.monotonic() < give_up, f"/metrics never showed {line!r}"
        time.sleep(0.02)


def test_explain_metrics_count_requests_rows_and_latency_by_model_apart_from_inference(url: str) -> None:
    golden = httpx.get(f"{url}/v1/models/age-weight/golden").json()
    httpx.post(f"{url}/predict", json={"age": 35}).raise_for_status()  # so that inference has its samples
    before = httpx.get(f"{url}/metrics").text
    response = httpx.post(f"{url}/v1/models/age-weight:explain", json={"instances": golden_rows(golden)[:2]})
    assert response.status_code == 200, response.text
    refused = httpx.post(f"{url}/v1/models/age-weight:explain", json={"instances": [{"age": "old"}]})
    assert refused.status_code == 400
    rows = response.json()["rows_evaluated"]
    after = httpx.get(f"{url}/metrics").text

    def delta(sample: str) -> float:
        def value(text: str) -> float:
            found = [line.split()[-1] for line in text.splitlines() if line.startswith(sample + " ")]
            return float(found[0]) if found else 0.0

        return value(after) - value(before)

    assert delta('tabserve_explain_requests_total{model="age-weight",status="200"}') == 1
    assert delta('tabserve_explain_requests_total{model="age-weight",status="400"}') == 1
    assert delta('tabserve_explanations_total{method="exact",model="age-weight"}') == 1
    background = response.json()["background_rows"]
    assert delta('tabserve_explain_rows_evaluated_total{model="age-weight"}') == rows == 2 * 2 * background + 2
    assert delta('tabserve_explain_duration_seconds_count{model="age-weight"}') == 2
    # Explanations are not inference: the inference request counts and latencies do not move.
    inference = 'tabserve_request_duration_seconds_count{model="age-weight",protocol="rest",version="1"}'
    assert inference + " " in before and delta(inference) == 0


def test_explain_needs_a_key_like_inference(explain_dir: Path) -> None:
    with running_server(explain_dir, {"SERVE_API_KEYS": "k1"}) as base:
        body = {"instances": [{"age": 35}]}
        assert httpx.post(f"{base}/v1/models/age-weight:explain", json=body).status_code == 401
        keyed = httpx.post(f"{base}/v1/models/age-weight:explain", json=body, headers={"X-API-Key": "k1"})
        assert keyed.status_code == 200, keyed.text
