"""The gRPC front end against stock tritonclient.grpc (sync and aio) and grpcio, on real servers on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtest.servers import clean_env, free_port
from serve.grpc import open_inference_pb2 as pb
from tests.conftest import EXAMPLE_NAMES, read_golden, running_server, self_signed_certificate

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
AGE = np.array([[35.0], [20.0]], dtype=np.float32)
LOG: list[Path] = [Path()]
"""The shared server's log file, once the fixture has started it."""


@pytest.fixture(scope="module")
def grpc_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(REST base URL, gRPC address) of one server with both front ends and an access log (in `LOG`)."""
    port = free_port()
    log = LOG[0] = tmp_path_factory.mktemp("grpc") / "server.log"
    env = {"SERVE_ACCESS_LOG": "true", "SERVE_MAX_BATCH_DELAY_MS": "0"}
    with running_server(model_dir, env, "--grpc-port", str(port), log_path=log) as url:
        yield url, f"127.0.0.1:{port}"


def golden_inputs(golden: dict[str, Any]) -> list[triton.InferInput]:
    inputs = []
    for name, tensor in golden["inputs"].items():
        dtype = object if tensor["datatype"] == "BYTES" else np.float32
        values = [np.nan if value is None else value for value in tensor["data"]]
        array = np.array(values, dtype=dtype).reshape(tensor["shape"])
        item = triton.InferInput(name, list(array.shape), tensor["datatype"])
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(InferenceServerException) as raised:
        call()
    code = raised.value.status()
    return grpc.StatusCode[code.removeprefix("StatusCode.")] if isinstance(code, str) else code


def test_health_metadata_config_statistics_and_index(grpc_server: tuple[str, str]) -> None:
    client = triton.InferenceServerClient(grpc_server[1])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("penguins")
    metadata = client.get_server_metadata()
    assert metadata.name == "tabserve" and "binary_tensor_data" in metadata.extensions
    model = client.get_model_metadata("penguins", as_json=True)
    assert (
        model["versions"] == ["1"] and {"name": "island", "datatype": "BYTES", "shape": ["-1", "1"]} in model["inputs"]
    )
    config = client.get_model_config("penguins").config
    assert config.max_batch_size == 2048 and config.input[0].name == "island" and config.input[0].data_type == 13
    client.infer("age-weight", [age_input()])
    stats = client.get_inference_statistics("age-weight").model_stats[0]
    assert stats.name == "age-weight" and stats.inference_count >= 2 and stats.inference_stats.success.count >= 1
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {item["name"] for item in index} == set(EXAMPLE_NAMES)
    assert status_of(lambda: client.is_model_ready("nope")) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: client.get_model_metadata("penguins", "7")) == grpc.StatusCode.NOT_FOUND


def age_input(array: np.ndarray[Any, Any] = AGE, datatype: str = "FP32") -> triton.InferInput:
    item = triton.InferInput("age", list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_answers_its_golden_vectors_bit_for_bit_like_rest(
    grpc_server: tuple[str, str], model_dir: Path, name: str
) -> None:
    url, address = grpc_server
    golden = read_golden(model_dir, name)
    answer = triton.InferenceServerClient(address).infer(name, golden_inputs(golden), request_id="golden")
    assert answer.get_response().id == "golden"
    rest = httpx.post(f"{url}/v2/models/{name}/infer", json=rest_request(golden)).json()
    for output in rest["outputs"]:
        got = answer.as_numpy(output["name"])
        want = golden["outputs"][output["name"]]
        if want["datatype"] == "BYTES":
            assert [value.decode() for value in got.ravel()] == output["data"] == want["data"]
        else:
            # REST's JSON prints each float32 in its shortest form, which reads back to the same bits.
            same = np.array(output["data"], dtype=got.dtype).view(np.uint8) == got.ravel().view(np.uint8)
            assert same.all(), "the same bits as REST"
            np.testing.assert_allclose(got.ravel(), want["data"], rtol=1e-4, atol=1e-4)


def rest_request(golden: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": [{"name": name, **tensor} for name, tensor in golden["inputs"].items()]}


def typed_request(model: str, golden: dict[str, Any]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, tensor in golden["inputs"].items():
        item = request.inputs.add(name=name, datatype=tensor["datatype"], shape=tensor["shape"])
        if tensor["datatype"] == "BYTES":
            item.contents.bytes_contents.extend(value.encode() for value in tensor["data"])
        else:
            item.contents.fp32_contents.extend(np.nan if value is None else value for value in tensor["data"])
    return request


@pytest.mark.parametrize("name", ["penguins", "diabetes"])
def test_typed_contents_answer_like_raw_contents(grpc_server: tuple[str, str], model_dir: Path, name: str) -> None:
    golden = read_golden(model_dir, name)
    with grpc.insecure_channel(grpc_server[1]) as channel:
        typed = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(typed_request(name, golden))
    raw = triton.InferenceServerClient(grpc_server[1]).infer(name, golden_inputs(golden)).get_response()
    assert list(typed.raw_output_contents) == list(raw.raw_output_contents)
    assert [output.name for output in typed.outputs] == [output.name for output in raw.outputs]


BAD = [
    pytest.param(lambda: [age_input(AGE.astype(np.float64), "FP64")], "datatype 'FP64' does not match the model's 'FP32'", id="datatype"),
    pytest.param(lambda: [age_input(np.array([[np.inf]], dtype=np.float32))], "contains an infinite value", id="infinity"),
    pytest.param(lambda: [age_input(np.array([[np.nan]], dtype=np.float32))], "has no imputer for it", id="nan-not-imputed"),
    pytest.param(lambda: [age_input(), age_input()], "input 'age' appears more than once", id="duplicate"),
]  # fmt: skip


@pytest.mark.parametrize(("inputs", "message"), BAD)
def test_bad_input_is_invalid_argument_with_rests_message(
    grpc_server: tuple[str, str], inputs: Any, message: str
) -> None:
    client = triton.InferenceServerClient(grpc_server[1])
    with pytest.raises(InferenceServerException) as raised:
        client.infer("age-weight", inputs())
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT" and message in raised.value.message()


def test_unknown_model_and_version_are_not_found_and_large_requests_pass(grpc_server: tuple[str, str]) -> None:
    client = triton.InferenceServerClient(grpc_server[1])
    assert status_of(lambda: client.infer("nope", [age_input()])) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: client.infer("age-weight", [age_input()], model_version="9")) == grpc.StatusCode.NOT_FOUND
    big = np.zeros((5000, 1), dtype=np.float32)
    assert client.infer("age-weight", [age_input(big)], client_timeout=30).as_numpy("variable").shape == (5000, 1)


def test_raw_contents_that_do_not_match_the_inputs_are_invalid_argument(grpc_server: tuple[str, str]) -> None:
    request = service_pb2.ModelInferRequest(model_name="age-weight")
    request.inputs.add(name="age", datatype="FP32", shape=[2, 1])
    request.raw_input_contents.append(np.array([35.0], dtype=np.float32).tobytes())  # one value for two rows
    with grpc.insecure_channel(grpc_server[1]) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "binary_data_size is 4 bytes, but 2 FP32 values take 8" in str(raised.value.details())


def test_the_aio_client_and_the_health_and_reflection_services(grpc_server: tuple[str, str]) -> None:
    async def scenario() -> list[Any]:
        client = triton_aio.InferenceServerClient(grpc_server[1])
        try:
            answers = await asyncio.gather(*[client.infer("age-weight", [age_input()]) for _ in range(8)])
            return [answer.as_numpy("variable").ravel().tolist() for answer in answers]
        finally:
            await client.close()

    assert asyncio.run(scenario()) == [[75.0, 60.0]] * 8
    with grpc.insecure_channel(grpc_server[1]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {service.name for service in listed.list_services_response.service}
        assert {"inference.GRPCInferenceService", "tabserve.v2.ExplainService", "grpc.health.v1.Health"} <= names
        described = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService")])))  # fmt: skip
        assert described.file_descriptor_response.file_descriptor_proto, "grpcurl can describe the service"


def test_grpc_requests_are_counted_and_logged_with_their_protocol(grpc_server: tuple[str, str]) -> None:
    url, address = grpc_server
    triton.InferenceServerClient(address).infer("age-weight", [age_input()], headers={"x-request-id": "grpc-probe-1"})
    metrics = httpx.get(f"{url}/metrics").text
    assert 'tabserve_requests_total{model="age-weight",protocol="grpc",status="200",version="1"}' in metrics
    line = next(json.loads(row.split(": ", 1)[1]) for row in LOG[0].read_text().splitlines() if "grpc-probe-1" in row)
    assert line["protocol"] == "grpc" and line["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert (line["model"], line["rows"], line["status"]) == ("age-weight", 2, 200)


def test_rest_and_grpc_requests_share_micro_batches_and_deadlines_are_kept(model_dir: Path, tmp_path: Path) -> None:
    # A 200 ms batch delay: requests arriving together wait for each other, whichever front end they came by.
    port, log = free_port(), tmp_path / "server.log"
    env = {"SERVE_ACCESS_LOG": "true", "SERVE_MAX_BATCH_DELAY_MS": "200"}
    with running_server(model_dir, env, "--grpc-port", str(port), log_path=log) as url:
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        one = np.array([[35.0]], dtype=np.float32)
        # Each thread sets up its client first and all send at once: six threads each building an httpx
        # client on a slow machine arrived over more than the 200 ms (two batches of three), which says
        # nothing about the server.
        together = threading.Barrier(6)

        def by_grpc() -> None:
            together.wait()
            client.infer("age-weight", [age_input(one)])

        def by_rest() -> None:
            with httpx.Client(base_url=url) as http:
                together.wait()
                http.post("/predict", json={"age": 35})

        threads = [threading.Thread(target=send) for send in (by_grpc, by_rest) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        # A request due in 50 ms cannot wait out the 200 ms delay: the server answers DEADLINE_EXCEEDED,
        # whether the deadline came as tritonclient's `timeout` parameter (us) or as the call's gRPC deadline.
        with pytest.raises(InferenceServerException) as late:
            client.infer("age-weight", [age_input(one)], timeout=50_000)
        assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED" and "passed its deadline" in late.value.message()
        assert status_of(lambda: client.infer("age-weight", [age_input(one)], client_timeout=0.05)) == (
            grpc.StatusCode.DEADLINE_EXCEEDED
        )
    lines = [json.loads(row.split(": ", 1)[1]) for row in log.read_text().splitlines() if '"batch_rows"' in row]
    lines = [line for line in lines if line["status"] == 200]
    assert sorted(line["protocol"] for line in lines) == ["grpc"] * 3 + ["rest"] * 3
    assert {line["batch_rows"] for line in lines} == {6}, "all six one-row requests ran in one batch"


def test_keys_guard_grpc_as_rest_and_tls_uses_the_same_certificate(model_dir: Path, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    env = {"SERVE_API_KEYS": "user-key", "SERVE_ADMIN_KEYS": "admin-key"}
    args = ("--grpc-port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    with running_server(model_dir, env, *args):
        client = triton.InferenceServerClient(f"localhost:{port}", ssl=True, root_certificates=str(cert))
        infer = client.infer
        assert status_of(lambda: infer("age-weight", [age_input()])) == grpc.StatusCode.UNAUTHENTICATED
        wrong = {"authorization": "Bearer nope"}
        assert status_of(lambda: infer("age-weight", [age_input()], headers=wrong)) == grpc.StatusCode.PERMISSION_DENIED
        user, admin = {"authorization": "Bearer user-key"}, {"x-api-key": "admin-key"}
        assert infer("age-weight", [age_input()], headers=user).as_numpy("variable").ravel().tolist() == [75.0, 60.0]
        unload = client.unload_model
        assert status_of(lambda: unload("diabetes", headers=user)) == grpc.StatusCode.PERMISSION_DENIED
        unload("diabetes", headers=admin, unload_dependents=True)  # accepted: nothing depends on a model here
        assert status_of(lambda: client.is_model_ready("diabetes", headers=user)) == grpc.StatusCode.NOT_FOUND
        # As over REST, a load parameter tabserve cannot honour is refused, not ignored.
        config = lambda: client.load_model("diabetes", headers=admin, config="{}")  # noqa: E731
        assert status_of(config) == grpc.StatusCode.INVALID_ARGUMENT
        client.load_model("diabetes", headers=admin)
        assert client.is_model_ready("diabetes", headers=user)
        plain = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert status_of(lambda: plain.is_server_live()) == grpc.StatusCode.UNAVAILABLE, "no plaintext on a TLS port"


def test_a_grpc_port_in_use_is_an_error_not_a_second_server(model_dir: Path, grpc_server: tuple[str, str]) -> None:
    taken = grpc_server[1].rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "serve", "--model-dir", str(model_dir), "--port", str(free_port()), "--grpc-port", taken],
        capture_output=True, text=True, timeout=60, env=_clean_env(),
    )  # fmt: skip
    assert result.returncode != 0
    assert taken in result.stdout + result.stderr


def _clean_env() -> dict[str, str]:
    return clean_env({"SERVE_SHUTDOWN_DRAIN_S": "0"})


def test_the_generated_messages_match_the_proto(tmp_path: Path) -> None:
    env = {**_clean_env(), "PATH": f"{Path(sys.executable).parent}:{_clean_env().get('PATH', '')}"}
    subprocess.run(["bash", str(ROOT / "scripts" / "gen-grpc.sh"), str(tmp_path)], check=True, env=env, cwd=ROOT)
    for name in ("open_inference_pb2.py", "open_inference_pb2.pyi"):
        assert (tmp_path / name).read_text() == (ROOT / "serve" / "grpc" / name).read_text(), (
            f"run scripts/gen-grpc.sh ({name})"
        )


def random_request(rng: np.random.Generator) -> service_pb2.ModelInferRequest:
    """A ModelInferRequest built from random choices of names, datatypes, shapes, contents and raw bytes."""
    datatypes = ["FP32", "FP64", "BYTES", "INT64", "BOOL", "FP16", "UINT8", "nonsense", ""]
    request = service_pb2.ModelInferRequest(model_name=str(rng.choice(["age-weight", "penguins", "nope", ""])))
    raw = bool(rng.integers(2))
    for _ in range(int(rng.integers(0, 4))):
        name = str(rng.choice(["age", "island", "sex", "body_mass_g", "x", ""]))
        shape = [int(value) for value in rng.integers(-2, 4, size=int(rng.integers(0, 4)))]
        tensor = request.inputs.add(name=name, datatype=str(rng.choice(datatypes)), shape=shape)
        if raw:
            request.raw_input_contents.append(rng.bytes(int(rng.integers(0, 24))))
        elif rng.integers(2):
            tensor.contents.fp32_contents.extend(rng.normal(size=int(rng.integers(0, 4))).tolist())
        else:
            tensor.contents.bytes_contents.extend([rng.bytes(3), b"Dream"])
    if rng.integers(4) == 0:
        request.raw_input_contents.append(b"\x00")  # one more than there are inputs
    if rng.integers(3) == 0:
        request.parameters["timeout"].int64_param = int(rng.integers(-5, 10**6))
    if rng.integers(3) == 0:
        request.outputs.add(name=str(rng.choice(["variable", "label", "nope"])))
    return request


@pytest.mark.parametrize("rpc", ["infer", "explain"])
def test_random_infer_requests_get_a_precise_status_never_internal_or_unknown(
    grpc_server: tuple[str, str], rpc: str
) -> None:
    rng = np.random.default_rng(20261202)
    seen: set[grpc.StatusCode] = set()
    with grpc.insecure_channel(grpc_server[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelInfer if rpc == "infer" else explain_stub(channel)
        for _ in range(400):
            try:
                call(random_request(rng), timeout=10)
                seen.add(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                seen.add(exc.code())
                assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()
        assert stub.ModelInfer(typed_request_for_age(), timeout=10).model_name == "age-weight", "still serving"
    assert {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND} <= seen


def typed_request_for_age() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="age-weight")
    request.inputs.add(name="age", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(35.0)
    return request


def explain_stub(channel: grpc.Channel) -> Any:
    """tabserve.v2.ExplainService/ModelExplain: tritonclient's ModelInferRequest in (the same wire format)."""
    return channel.unary_unary(
        "/tabserve.v2.ExplainService/ModelExplain",
        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelExplainResponse.FromString,
    )


def first_rows(golden: dict[str, Any], rows: int) -> dict[str, Any]:
    """The golden file with only its first `rows` input rows (one column per input)."""
    inputs = {
        name: {**tensor, "shape": [rows, 1], "data": tensor["data"][:rows]} for name, tensor in golden["inputs"].items()
    }
    return {**golden, "inputs": inputs}


def test_model_explain_answers_what_rest_explain_answers(grpc_server: tuple[str, str], model_dir: Path) -> None:
    url, address = grpc_server
    golden = first_rows(read_golden(model_dir, "penguins"), 3)
    request = typed_request("penguins", golden)
    request.id = "why-grpc"
    request.parameters["method"].string_param = "exact"
    sampled_request = typed_request("breast-cancer", first_rows(read_golden(model_dir, "breast-cancer"), 1))
    sampled_request.parameters["permutations"].int64_param = 4
    with grpc.insecure_channel(address) as channel:
        answer = explain_stub(channel)(request, timeout=30)
        sampled = explain_stub(channel)(sampled_request, timeout=30)
        sampled_request.parameters["method"].string_param = "exact"
        with pytest.raises(grpc.RpcError) as refused:
            explain_stub(channel)(sampled_request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "up to 12 columns" in refused.value.details()
    inputs = [{**tensor, "name": name} for name, tensor in golden["inputs"].items()]
    rest = httpx.post(f"{url}/v2/models/penguins/explain", json={"inputs": inputs}, timeout=30).json()
    assert (answer.id, answer.method, list(answer.outputs)) == ("why-grpc", "exact", rest["outputs"])
    assert list(answer.base_values) == rest["base_values"] and answer.rows_evaluated == rest["rows_evaluated"]
    assert len(answer.rows) == len(rest["values"]) == 3
    for row, values, prediction in zip(answer.rows, rest["values"], rest["prediction"], strict=True):
        assert list(row.prediction) == prediction
        assert {column.column: list(column.values) for column in row.columns} == values
    assert sampled.method == "permutation" and sampled.permutations == 4 and len(sampled.rows[0].columns) == 30
    assert all(len(column.standard_errors) == 2 for column in sampled.rows[0].columns)
    assert sampled.additivity_error < 1e-5
