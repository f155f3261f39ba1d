"""The HTTP surface through Starlette's TestClient: routes, answers, and every client mistake as a 4xx."""

from __future__ import annotations

import gc
import gzip
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from serve.app import create_app
from serve.settings import Settings
from tests.conftest import golden_rows, read_golden

PENGUIN = {
    "island": "Dream", "bill_length_mm": 45.1, "bill_depth_mm": 17.0, "flipper_length_mm": 200.0,
    "body_mass_g": 3800.0, "sex": "female",
}  # fmt: skip


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=model_dir, grpc_port=None, max_body_bytes=64 * 1024, max_request_rows=100)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def v2_tensor(name: str, values: list[Any], datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [len(values), 1], "data": values}


def penguin_request(**changes: Any) -> dict[str, Any]:
    inputs = [
        v2_tensor(name, [value], "BYTES" if isinstance(value, str) else "FP32") for name, value in PENGUIN.items()
    ]
    return {"inputs": inputs, **changes}


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


def test_seed_endpoint_predicts_75_for_age_35(client: TestClient) -> None:
    response = client.post("/predict", json={"age": 35})
    assert response.json() == {"predicted_weight": 75.0}


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2").json()
    assert metadata["name"] == "tabserve" and "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_carries_features_categories_and_classes(client: TestClient) -> None:
    metadata = client.get("/v2/models/penguins").json()
    assert metadata["name"] == "penguins" and metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert {"name": "island", "datatype": "BYTES", "shape": [-1, 1]} in metadata["inputs"]
    assert metadata["outputs"][1] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    parameters = metadata["parameters"]
    assert parameters["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    island = next(feature for feature in parameters["features"] if feature["name"] == "island")
    assert island["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert client.get("/v2/models/penguins/versions/1").json() == metadata


def test_infer_answers_like_the_golden_vectors(client: TestClient, model_dir: Path) -> None:
    golden = read_golden(model_dir, "diabetes")
    body = {"id": "req-7", "inputs": [{"name": k, **v} for k, v in golden["inputs"].items()]}
    response = client.post("/v2/models/diabetes/infer", content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "req-7" and result["model_name"] == "diabetes" and result["model_version"] == "1"
    (output,) = result["outputs"]
    assert output["shape"] == golden["outputs"]["variable"]["shape"]
    assert output["data"] == pytest.approx(golden["outputs"]["variable"]["data"], rel=1e-4, abs=1e-4)


def test_infer_accepts_nested_data_and_returns_only_requested_outputs(client: TestClient) -> None:
    request = penguin_request(outputs=[{"name": "label"}])
    for tensor in request["inputs"]:
        tensor["data"] = [tensor["data"]]  # [[value]]: nested as the shape says
    result = client.post("/v2/models/penguins/infer", json=request).json()
    assert [output["name"] for output in result["outputs"]] == ["label"]
    assert result["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["Chinstrap"]}


def test_records_endpoint_gives_labels_and_probabilities_by_class(client: TestClient) -> None:
    response = client.post("/v1/models/penguins:predict", json={"instances": [PENGUIN, {"island": "Biscoe"}]})
    predictions = response.json()["predictions"]
    assert predictions[0]["label"] == "Chinstrap"
    assert set(predictions[0]["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert sum(predictions[1]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_records_endpoint_matches_golden_rows_including_missing_values(client: TestClient, model_dir: Path) -> None:
    golden = read_golden(model_dir, "penguins")
    instances = [{k: v for k, v in row.items() if v not in (None, "")} for row in golden_rows(golden)]
    response = client.post("/v1/models/penguins/versions/1:predict", json={"instances": instances})
    labels = [prediction["label"] for prediction in response.json()["predictions"]]
    assert labels == golden["outputs"]["label"]["data"]


def test_golden_vectors_are_served_for_load_tests_and_other_runtimes(client: TestClient, model_dir: Path) -> None:
    assert client.get("/v1/models/penguins/golden").json() == read_golden(model_dir, "penguins")


def test_stats_and_config_follow_triton(client: TestClient) -> None:
    client.post("/predict", json={"age": 30})
    stats = client.get("/v2/models/age-weight/stats").json()["model_stats"][0]
    assert stats["name"] == "age-weight" and stats["inference_count"] >= 1
    assert stats["inference_stats"]["success"]["count"] >= 1
    everything = client.get("/v2/models/stats").json()["model_stats"]
    assert {item["name"] for item in everything} == {"age-weight", "breast-cancer", "diabetes", "penguins"}
    config = client.get("/v2/models/penguins/config").json()
    assert config["max_batch_size"] == 2048
    assert config["input"][0] == {"name": "island", "data_type": "TYPE_STRING", "dims": [1]}


def test_gzip_body_is_inflated(client: TestClient) -> None:
    body = gzip.compress(orjson.dumps({"instances": [{"age": 35}]}))
    response = client.post("/v1/models/age-weight:predict", content=body, headers={"Content-Encoding": "gzip"})
    assert response.json()["predictions"] == [75.0]


BAD_INFER = [
    pytest.param({"inputs": [v2_tensor("height", [1.0])]}, "unexpected input 'height' for model 'age-weight'; expected ['age']", id="unknown-input"),
    pytest.param({"inputs": [v2_tensor("age", [1.0], "FP64")]}, "input 'age': datatype 'FP64' does not match the model's 'FP32'", id="wrong-datatype"),
    pytest.param({"inputs": [{**v2_tensor("age", [1.0]), "shape": [1, 2]}]}, "input 'age': shape [1, 2] does not match the model's [-1, 1] (-1 = any)", id="wrong-shape"),
    pytest.param({"inputs": [{**v2_tensor("age", [1.0, 2.0]), "shape": [1, 1]}]}, "input 'age' has 2 values; its shape needs 1", id="count-mismatch"),
    pytest.param({"inputs": [v2_tensor("age", ["thirty"])]}, "input 'age' is FP32: expected numbers, got 'thirty'", id="non-numeric"),
    pytest.param({"inputs": [v2_tensor("age", [True])]}, "input 'age' is FP32: expected numbers, got True", id="boolean"),
    pytest.param({"inputs": [v2_tensor("age", [1e39])]}, "input 'age' is FP32: 1e+39 is beyond its range (-3.402823e+38 to 3.402823e+38)", id="overflow"),
    pytest.param({"inputs": [{**v2_tensor("age", [1.0, -1e300]), "shape": [2, 1]}]}, "input 'age' is FP32: -1e+300 is beyond its range", id="overflow-in-a-later-row"),
    pytest.param({"inputs": [{**v2_tensor("age", [3.4028235e38, 1e39]), "shape": [2, 1]}]}, "input 'age' is FP32: 1e+39 is beyond its range", id="overflow-after-the-largest-value"),
    pytest.param({"inputs": [{"datatype": "FP32", "shape": [1, 1], "data": [35]}]}, "inputs[0] has no 'name'; expected one of ['age']", id="no-name"),
    pytest.param({"inputs": [{**v2_tensor("age", [1.0]), "name": 5}]}, "inputs[0]: 'name' must be one of ['age'], got int 5", id="non-string-name"),
    pytest.param({"inputs": [{**v2_tensor("age", [1.0]), "parameters": [1]}]}, "input 'age': 'parameters' must be an object, got list [1]", id="parameters-not-an-object"),
    pytest.param({"inputs": [{**v2_tensor("age", [1.0]), "shape": [-1, 1]}]}, "input 'age': shape [-1, 1] has a negative size; a request gives its real sizes", id="negative-shape"),
    pytest.param({"instances": [{"age": 35}]}, "the request has no 'inputs' (a non-empty list of tensors); it has list [\"instances\"]", id="records-body"),
    pytest.param({"inputs": [{**v2_tensor("age", [[1.0], [2.0, 3.0]]), "shape": [2, 1]}]}, "input 'age': 'data' is not a regular array", id="ragged"),
    pytest.param({"inputs": []}, "'inputs' must be a non-empty list of tensors, got list []", id="no-inputs"),
    pytest.param({"inputs": "é" * 100}, "'inputs' must be a non-empty list of tensors, got str \"éé", id="non-ascii-cut-in-the-message"),
    pytest.param({"inputs": [v2_tensor("age", [1.0]), v2_tensor("age", [1.0])]}, "input 'age' appears more than once", id="duplicate"),
    pytest.param({"inputs": [{**v2_tensor("age", []), "shape": [0, 1]}]}, "the request has 0 rows; expected at least 1", id="zero-rows"),
    pytest.param({"inputs": [{"name": "age", "datatype": "FP32", "shape": [1, 1]}]}, "input 'age' has neither 'data' nor parameters.binary_data_size", id="no-data"),
    pytest.param({"inputs": [v2_tensor("age", [1.0])], "outputs": [{"name": "nope"}]}, "outputs[0] asks for 'nope'; model 'age-weight' has outputs ['variable']", id="unknown-output"),
    pytest.param({"inputs": [v2_tensor("age", [1.0])], "id": 5}, "'id' must be a string, got int 5", id="non-string-id"),
    pytest.param([1, 2], "expected a JSON object with 'inputs', got list [1,2]", id="not-an-object"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), BAD_INFER)
def test_infer_rejects_bad_input_with_400_naming_what_was_wrong(client: TestClient, body: Any, message: str) -> None:
    assert error_of(client.post("/v2/models/age-weight/infer", json=body), 400).startswith(message)


def with_tensor(input_name: str, **changes: Any) -> dict[str, Any]:
    request = penguin_request()
    request["inputs"] = [
        {**tensor, **changes} if tensor["name"] == input_name else tensor for tensor in request["inputs"]
    ]
    return request


# Requests near the edge of what the plain-request parse takes: each must get the same answer from it
# as from the full parse, which a tensor carrying "parameters" is sent through.
EDGE_REQUESTS = [
    pytest.param(penguin_request(), id="plain"),
    pytest.param(with_tensor("body_mass_g", data=[3800]), id="integer-for-float"),
    pytest.param(with_tensor("body_mass_g", data=[True]), id="boolean-for-float"),
    pytest.param(with_tensor("body_mass_g", data=["3800"]), id="string-for-float"),
    pytest.param(with_tensor("body_mass_g", data=[3.5e38]), id="beyond-fp32"),
    pytest.param(with_tensor("body_mass_g", data=[2**64]), id="huge-integer"),
    pytest.param(with_tensor("body_mass_g", data=[None]), id="null-is-missing"),
    pytest.param(with_tensor("sex", data=[7]), id="number-for-string"),
    pytest.param(with_tensor("sex", shape=[1, True]), id="boolean-dimension"),
    pytest.param(with_tensor("sex", shape=[1]), id="one-dimension"),
    pytest.param(with_tensor("sex", shape=[2, 1]), id="rows-disagree"),
    pytest.param(with_tensor("sex", datatype="FP32"), id="wrong-datatype"),
    pytest.param(with_tensor("sex", name="island"), id="duplicate"),
    pytest.param(with_tensor("sex", data=[["female"]]), id="nested"),
    pytest.param(penguin_request(id="abc", outputs=[{"name": "label"}]), id="id-and-outputs"),
]


@pytest.mark.parametrize("request_body", EDGE_REQUESTS)
def test_plain_requests_get_the_same_answer_as_fully_checked_ones(client: TestClient, request_body: Any) -> None:
    checked = {**request_body, "inputs": [{**tensor, "parameters": {}} for tensor in request_body["inputs"]]}
    plain = client.post("/v2/models/penguins/infer", json=request_body)
    full = client.post("/v2/models/penguins/infer", json=checked)
    assert (plain.status_code, plain.json()) == (full.status_code, full.json())
    assert plain.status_code in (200, 400)


def raw_values(values: list[Any], datatype: str) -> bytes:
    """Triton's binary layout: little-endian FP32, or each string as a 4-byte length and its bytes."""
    if datatype == "FP32":
        return struct.pack(f"<{len(values)}f", *values)
    encoded = [value if isinstance(value, bytes) else value.encode() for value in values]
    return b"".join(struct.pack("<I", len(raw)) + raw for raw in encoded)


def binary_infer(
    client: TestClient, raw: dict[str, bytes], rows: int = 1, checked: bool = False, model: str = "penguins"
) -> Any:
    """POST input name -> raw bytes as a binary-data request; `checked` adds a tensor parameter, which sends
    it through the full parse."""
    datatypes = {"island": "BYTES", "sex": "BYTES"}  # every other input here is FP32
    extra: dict[str, Any] = {"note": "checked"} if checked else {}
    inputs: list[dict[str, Any]] = [
        {"name": name, "datatype": datatypes.get(name, "FP32"), "shape": [rows, 1],
         "parameters": {**extra, "binary_data_size": len(chunk)}}
        for name, chunk in raw.items()
    ]  # fmt: skip
    header = orjson.dumps({"inputs": inputs})
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return client.post(f"/v2/models/{model}/infer", content=header + b"".join(raw.values()), headers=headers)


def penguin_binary(**changes: bytes) -> dict[str, bytes]:
    raw = {name: raw_values([value], "BYTES" if isinstance(value, str) else "FP32") for name, value in PENGUIN.items()}
    return {**raw, **changes}


def penguin_binary_rows(rows: int, **changes: bytes) -> dict[str, bytes]:
    return {**{name: chunk * rows for name, chunk in penguin_binary().items()}, **changes}


# Binary requests near the edge of what the plain parse takes, and past it (small tensors unpack into
# lists, larger ones are viewed in place).
EDGE_BINARY = [
    pytest.param(penguin_binary(), 1, id="plain"),
    pytest.param(penguin_binary_rows(3), 3, id="three-rows"),
    pytest.param(penguin_binary(bill_length_mm=raw_values([math.nan], "FP32")), 1, id="nan-is-missing"),
    pytest.param(penguin_binary(bill_length_mm=raw_values([math.inf], "FP32")), 1, id="infinity"),
    pytest.param(penguin_binary(island=raw_values(["Dréam"], "BYTES")), 1, id="non-ascii-string"),
    pytest.param(penguin_binary(island=raw_values(["x" * 200], "BYTES")), 1, id="length-prefix-over-127"),
    pytest.param(penguin_binary(island=raw_values([""], "BYTES")), 1, id="empty-string"),
    pytest.param(penguin_binary(island=raw_values([b"\xff"], "BYTES")), 1, id="not-utf8"),
    pytest.param(penguin_binary(island=b"\x05\x00"), 1, id="truncated-length"),
    pytest.param(penguin_binary(island=b"\x09\x00\x00\x00Dream"), 1, id="length-past-the-end"),
    pytest.param(penguin_binary(island=raw_values(["Dream", "Biscoe"], "BYTES")), 1, id="extra-string"),
    pytest.param(penguin_binary(island=b""), 1, id="no-string"),
    pytest.param(penguin_binary(body_mass_g=b"\x00\x00\x80"), 1, id="fp32-short"),
    pytest.param(penguin_binary(body_mass_g=raw_values([3800.0, 1.0], "FP32")), 1, id="fp32-long"),
    pytest.param(penguin_binary(body_mass_g=raw_values([-math.inf], "FP32")), 1, id="negative-infinity"),
    pytest.param(penguin_binary(body_mass_g=raw_values([3.4028234663852886e38], "FP32")), 1, id="largest-fp32"),
    pytest.param(penguin_binary_rows(65), 65, id="rows-past-small-tensors"),
    pytest.param(penguin_binary_rows(65, bill_length_mm=raw_values([39.1] * 64 + [math.nan], "FP32")), 65, id="nan-in-a-large-tensor"),
    pytest.param(penguin_binary_rows(65, bill_length_mm=raw_values([39.1] * 64 + [math.inf], "FP32")), 65, id="infinity-in-a-large-tensor"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "rows"), EDGE_BINARY)
def test_plain_binary_requests_get_the_same_answer_as_fully_checked_ones(
    client: TestClient, raw: dict[str, bytes], rows: int
) -> None:
    plain = binary_infer(client, raw, rows)
    full = binary_infer(client, raw, rows, checked=True)
    assert (plain.status_code, plain.content) == (full.status_code, full.content)
    assert plain.status_code in (200, 400), plain.text


def test_binary_request_answers_like_json(client: TestClient) -> None:
    as_json = client.post("/v2/models/penguins/infer", json=penguin_request()).json()
    as_binary = binary_infer(client, penguin_binary()).json()
    assert as_binary == as_json and as_json["outputs"][0]["data"] == ["Chinstrap"]


BAD_BINARY = [
    pytest.param(penguin_binary(island=raw_values([b"\xff"], "BYTES")), "input 'island': BYTES element 0 is not valid UTF-8", id="not-utf8"),
    pytest.param(penguin_binary(island=b"\x05\x00"), "input 'island': BYTES element 0 has a truncated length prefix", id="truncated"),
    pytest.param(penguin_binary(island=b"\x09\x00\x00\x00Dream"), "input 'island': BYTES element 0 claims 9 bytes, only 5 remain", id="past-the-end"),
    pytest.param(penguin_binary(island=raw_values(["Dream", "Biscoe"], "BYTES")), "input 'island': binary data holds 1 BYTES elements in 19 bytes, the shape needs 1", id="extra"),
    pytest.param(penguin_binary(body_mass_g=b"\x00\x00\x80"), "input 'body_mass_g': binary_data_size is 3 bytes, but 1 FP32 values take 4", id="short-number"),
    pytest.param(penguin_binary(bill_length_mm=raw_values([math.inf], "FP32")), "input 'bill_length_mm' contains an infinite value", id="infinity"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "message"), BAD_BINARY)
def test_bad_binary_data_is_400_naming_the_element(client: TestClient, raw: dict[str, bytes], message: str) -> None:
    assert error_of(binary_infer(client, raw), 400).startswith(message)


def test_binary_nan_without_an_imputer_is_400(client: TestClient) -> None:
    response = binary_infer(client, {"age": raw_values([math.nan], "FP32")}, model="age-weight")
    assert "contains NaN (a missing value), but model 'age-weight' has no imputer" in error_of(response, 400)


def test_missing_input_is_named(client: TestClient) -> None:
    request = penguin_request()
    request["inputs"] = request["inputs"][1:]
    message = error_of(client.post("/v2/models/penguins/infer", json=request), 400)
    assert message.startswith("missing input(s) ['island'] for model 'penguins'")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"", "empty request body; expected a JSON object", id="empty"),
        pytest.param(b'{"inputs": [', "malformed JSON", id="truncated"),
        pytest.param(b'{"inputs": [{"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [NaN]}]}', "malformed JSON: NaN is not a JSON number; send null for a missing value", id="nan-literal"),
        pytest.param(b'{"inputs": [{"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [Infinity]}]}', "malformed JSON: Infinity is not a JSON number", id="infinity-literal"),
        pytest.param(b'{"inputs": [{"name": "NaN", "datatype": "FP32", "shape": [1, 1], "data": [1.0]', "malformed JSON: unexpected end of data", id="nan-in-a-string-is-no-hint"),
        pytest.param(b"null", "expected a JSON object with 'inputs', got null", id="null"),
        pytest.param(b'{"note": "to inf and beyond",}', "malformed JSON: trailing comma", id="a-word-in-a-string-is-no-hint"),
        pytest.param(b'{"inputs": "\xff"}', "the body is not UTF-8 text, as JSON must be: byte 0xff at offset 12", id="not-utf8"),
    ],
)  # fmt: skip
def test_unparseable_bodies_are_400(client: TestClient, body: bytes, message: str) -> None:
    assert error_of(client.post("/v2/models/age-weight/infer", content=body), 400).startswith(message)


def test_unknown_model_and_version_are_404_naming_what_exists(client: TestClient) -> None:
    message = error_of(client.post("/v2/models/nope/infer", json=penguin_request()), 404)
    assert message == "unknown model 'nope'; available: ['age-weight', 'breast-cancer', 'diabetes', 'penguins']"
    message = error_of(client.get("/v2/models/penguins/versions/9"), 404)
    assert message == "model 'penguins' has no version '9'; available: [1]"
    assert error_of(client.get("/v2/nowhere"), 404) == "no route for GET /v2/nowhere"


def test_wrong_method_is_405(client: TestClient) -> None:
    message = error_of(client.get("/v2/models/penguins/infer"), 405)
    assert message == "method GET is not allowed on /v2/models/penguins/infer; allowed: POST"


def test_body_over_the_limit_is_413_from_content_length(client: TestClient) -> None:
    message = error_of(client.post("/v2/models/age-weight/infer", content=b"x" * (64 * 1024 + 1)), 413)
    assert message == "the body has 65537 bytes; the limit is 65536"


def test_gzip_bomb_is_413(client: TestClient) -> None:
    bomb = gzip.compress(b" " * (10 * 1024 * 1024))
    message = error_of(client.post("/predict", content=bomb, headers={"Content-Encoding": "gzip"}), 413)
    assert message == "the body inflates beyond the limit of 65536 bytes"


def test_too_many_rows_is_413(client: TestClient) -> None:
    message = error_of(
        client.post("/v2/models/age-weight/infer", json={"inputs": [v2_tensor("age", [1.0] * 101)]}), 413
    )
    assert message == "the request has 101 rows; the limit is 100 per request"


BAD_RECORDS = [
    pytest.param({"instances": [{"age": "35"}]}, "instances[0].age must be a number, got '35'", id="string-number"),
    pytest.param({"instances": [{}]}, "instances[0] lacks 'age', which model 'age-weight' needs (it has no imputer)", id="missing-no-imputer"),
    pytest.param({"instances": [{"age": 1, "height": 2}]}, "instances[0] has unknown field(s) ['height']; expected ['age']", id="unknown-field"),
    pytest.param({"instances": "age"}, "'instances' must be a list of records, got str", id="not-a-list"),
    pytest.param({"instances": []}, "the request has 0 rows; expected at least 1", id="empty"),
    pytest.param({"instances": [5]}, "instances[0] must be an object of feature values, got 5", id="not-an-object"),
    pytest.param({"instances": [{"age": 1e39}]}, "input 'age' is FP32: 1e+39 is beyond its range (-3.402823e+38 to 3.402823e+38)", id="overflow"),
    pytest.param({"age": "35"}, "'age' must be a number, got '35'", id="bare-record-string-number"),
    pytest.param({"age": 1, "height": 2}, "the record has unknown field(s) ['height']; expected ['age']", id="bare-record-unknown-field"),
    pytest.param([35], 'expected a JSON object: one record of feature values, or {"instances": [records]}; got list [35]', id="a-list"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), BAD_RECORDS)
def test_records_reject_bad_input_with_400(client: TestClient, body: Any, message: str) -> None:
    assert error_of(client.post("/v1/models/age-weight:predict", json=body), 400) == message


def test_records_reject_a_number_for_a_category(client: TestClient) -> None:
    message = error_of(client.post("/v1/models/penguins:predict", json={"instances": [{**PENGUIN, "island": 3}]}), 400)
    assert message == "instances[0].island must be a string, got 3"


def test_the_cyclic_gc_threshold_is_raised_while_serving_and_restored_after(model_dir: Path) -> None:
    before = gc.get_threshold()
    with TestClient(create_app(Settings(model_dir=model_dir, grpc_port=None, gc_threshold=12_345, poll_interval_s=0))):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(ValueError, match="SERVE_GC_THRESHOLD must be > 0, got 0"):
        Settings(gc_threshold=0)


def test_cache_statistics_count_real_hits_and_misses(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, grpc_port=None, cache_max_entries=10, poll_interval_s=0)
    with TestClient(create_app(settings)) as cached:
        for _ in range(3):
            assert cached.post("/predict", json={"age": 35}).json() == {"predicted_weight": 75.0}
        cached.post("/predict", json={"age": 36})
        stats = cached.get("/v2/models/age-weight/stats").json()["model_stats"][0]["inference_stats"]
    assert (stats["cache_hit"]["count"], stats["cache_miss"]["count"]) == (2, 2)
    assert stats["cache_hit"]["ns"] > 0 and stats["cache_miss"]["ns"] > 0
    assert stats["success"]["count"] == 2, "hits run no batch"


def test_a_nan_answer_is_the_callers_400_not_a_200_with_a_made_up_label(tmp_path: Path) -> None:
    """log1p below -1 is NaN in the graph, where scikit-learn raises: a 400 naming the output, not null."""
    import joblib
    import numpy as np
    import pandas as pd
    from click.testing import CliRunner
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from export.__main__ import cli

    frame = pd.DataFrame({"x": np.linspace(0, 10, 60)})
    model = make_pipeline(FunctionTransformer(np.log1p), LinearRegression()).fit(frame, 3 * np.log1p(frame["x"]))
    joblib.dump(model, tmp_path / "model.joblib")
    frame.to_csv(tmp_path / "sample.csv", index=False)
    exported = CliRunner().invoke(cli, ["pipeline", str(tmp_path / "model.joblib"), "--sample",
                                        str(tmp_path / "sample.csv"), "--name", "logs", "--out", str(tmp_path / "m")])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    with TestClient(create_app(Settings(model_dir=tmp_path / "m", grpc_port=None))) as client:
        assert client.post("/v1/models/logs:predict", json={"x": 1.0}).json()["predictions"][0] == pytest.approx(
            3 * math.log1p(1.0), abs=1e-5
        )
        message = error_of(client.post("/v1/models/logs:predict", json={"instances": [{"x": 1.0}, {"x": -5.0}]}), 400)
        assert message == "model logs/1 failed on this input: its output 'variable' is NaN for this input, " \
                          "outside what the model computes"  # fmt: skip
        v2 = client.post("/v2/models/logs/infer", json={"inputs": [v2_tensor("x", [-5.0])]})
        assert "its output 'variable' is NaN" in error_of(v2, 400)
        many = client.post("/v2/models/logs/infer", json={"inputs": [v2_tensor("x", [1.0] * 99 + [-5.0])]})
        assert "its output 'variable' is NaN" in error_of(many, 400), "over 64 values numpy looks"
        infinite = client.post("/v2/models/logs/infer", json={"inputs": [v2_tensor("x", [-1.0] * 100)]})
        assert "its output 'variable' is infinite" in error_of(infinite, 400)
