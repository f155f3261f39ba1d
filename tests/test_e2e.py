"""A real uvicorn server on loopback: many concurrent clients, tritonclient in both encodings."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.conftest import EXAMPLE_NAMES, golden_rows, read_golden

pytestmark = pytest.mark.slow


def row_request(golden: dict[str, Any], row: int) -> dict[str, Any]:
    inputs = [
        {"name": name, "datatype": tensor["datatype"], "shape": [1, 1], "data": [tensor["data"][row]]}
        for name, tensor in golden["inputs"].items()
    ]
    return {"id": f"row-{row}", "inputs": inputs}


def expected_row(golden: dict[str, Any], row: int) -> dict[str, Any]:
    expected = {}
    for name, tensor in golden["outputs"].items():
        width = int(np.prod(tensor["shape"][1:]))
        expected[name] = tensor["data"][row * width : (row + 1) * width]
    return expected


def without_missing_rows(golden: dict[str, Any]) -> dict[str, Any]:
    rows = golden_rows(golden)
    keep = [row for row, values in enumerate(rows) if None not in values.values()]
    inputs = {
        name: {**tensor, "shape": [len(keep), 1], "data": [tensor["data"][row] for row in keep]}
        for name, tensor in golden["inputs"].items()
    }
    outputs = {}
    for name, tensor in golden["outputs"].items():
        picked = [expected_row(golden, row)[name] for row in keep]
        data = [value for part in picked for value in part]
        outputs[name] = {**tensor, "shape": [len(keep), *tensor["shape"][1:]], "data": data}
    return {"inputs": inputs, "outputs": outputs}


def assert_matches(outputs: dict[str, list[Any]], expected: dict[str, list[Any]], context: str) -> None:
    for name, want in expected.items():
        got = outputs[name]
        if want and isinstance(want[0], str):
            assert got == want, context
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=context)


def test_many_concurrent_clients_each_get_their_own_golden_answer(server_url: str, model_dir: Path) -> None:
    goldens = {name: read_golden(model_dir, name) for name in EXAMPLE_NAMES}
    rng = random.Random(3)
    jobs = []
    for _ in range(600):
        name = rng.choice(EXAMPLE_NAMES)
        row = rng.randrange(len(golden_rows(goldens[name])))
        jobs.append((name, row))

    async def scenario() -> list[tuple[str, int, httpx.Response]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server_url, limits=limits, timeout=30) as client:
            semaphore = asyncio.Semaphore(64)

            async def one(name: str, row: int) -> tuple[str, int, httpx.Response]:
                async with semaphore:
                    body = row_request(goldens[name], row)
                    return name, row, await client.post(f"/v2/models/{name}/infer", json=body)

            return list(await asyncio.gather(*(one(name, row) for name, row in jobs)))

    before = httpx.get(f"{server_url}/v2/models/stats").json()["model_stats"]
    for name, row, response in asyncio.run(scenario()):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == f"row-{row}" and body["model_name"] == name
        outputs = {output["name"]: output["data"] for output in body["outputs"]}
        assert_matches(outputs, expected_row(goldens[name], row), f"{name} row {row}")
    after = httpx.get(f"{server_url}/v2/models/stats").json()["model_stats"]
    executions = sum(item["execution_count"] for item in after) - sum(item["execution_count"] for item in before)
    requests = sum(item["inference_stats"]["success"]["count"] for item in after) - sum(
        item["inference_stats"]["success"]["count"] for item in before
    )
    assert requests == len(jobs)
    assert executions < requests, "concurrent requests were batched together"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_stock_tritonclient_gets_the_golden_outputs(server_url: str, model_dir: Path, name: str, binary: bool) -> None:
    golden = read_golden(model_dir, name)
    if not binary:
        # tritonclient's JSON encoding writes a missing value as the literal NaN, which is not JSON and which
        # tabserve rejects (a JSON client sends null instead); those rows go in the binary variant only.
        golden = without_missing_rows(golden)
    client = triton.InferenceServerClient(server_url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    inputs = []
    for spec in metadata["inputs"]:
        tensor = golden["inputs"][spec["name"]]
        dtype: Any = object if tensor["datatype"] == "BYTES" else np.float32
        data = [np.nan if value is None else value for value in tensor["data"]]
        array = np.array(data, dtype=dtype).reshape(tensor["shape"])
        infer_input = triton.InferInput(spec["name"], list(array.shape), tensor["datatype"])
        infer_input.set_data_from_numpy(array, binary_data=binary)
        inputs.append(infer_input)
    outputs = [triton.InferRequestedOutput(spec["name"], binary_data=binary) for spec in metadata["outputs"]]
    result = client.infer(name, inputs, outputs=outputs, request_id="golden")
    assert result.get_response()["id"] == "golden"
    for output_name, tensor in golden["outputs"].items():
        got = result.as_numpy(output_name)
        assert list(got.shape) == tensor["shape"]
        if tensor["datatype"] == "BYTES":
            assert [value.decode() if isinstance(value, bytes) else value for value in got.ravel()] == tensor["data"]
        else:
            np.testing.assert_allclose(got.ravel(), tensor["data"], rtol=1e-4, atol=1e-4)
    assert client.get_model_config(name)["max_batch_size"] > 0
    stats = client.get_inference_statistics(name)["model_stats"]
    assert stats[0]["inference_count"] > 0
    client.close()


def test_tritonclient_default_request_gets_all_outputs_in_binary(server_url: str) -> None:
    client = triton.InferenceServerClient(server_url.removeprefix("http://"))
    age = triton.InferInput("age", [2, 1], "FP32")
    age.set_data_from_numpy(np.array([[35.0], [20.0]], dtype=np.float32))
    result = client.infer("age-weight", [age])  # no outputs: binary_data_output for all of them
    assert result.as_numpy("variable").tolist() == [[75.0], [60.0]]
    assert result.get_output("variable")["parameters"]["binary_data_size"] == 8
    client.close()


def test_requests_whose_client_left_are_dropped_before_running(model_dir: Path) -> None:
    """Queued behind a long batch (run in a thread, so the loop stays free), abandoned requests never run.

    The batch size is the default: the 30 would fit one batch, so this holds for a short queue too.
    """
    from loadtest.payloads import ModelPayloads
    from tests.conftest import running_server

    env = {"SERVE_INLINE_BATCH_ROWS": "0", "SERVE_MAX_REQUEST_ROWS": "50000"}
    golden = read_golden(model_dir, "penguins")
    inputs = [{"name": name, "datatype": tensor["datatype"]} for name, tensor in golden["inputs"].items()]
    payloads = ModelPayloads("penguins", inputs, [], golden)
    big = payloads.v2_binary([row % payloads.rows for row in range(50_000)])
    small = payloads.v2_json([0])
    with running_server(model_dir, env) as url:
        host, port = url.removeprefix("http://").split(":")

        def request_bytes(body: bytes, headers: dict[str, str]) -> bytes:
            lines = [f"POST {big.path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
            lines += [f"{key}: {value}" for key, value in headers.items()]
            return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

        with socket.create_connection((host, int(port))) as long_running:
            long_running.sendall(request_bytes(big.body, big.headers))
            time.sleep(0.01)
            for _ in range(30):  # each asks, then hangs up without waiting for the answer
                with socket.create_connection((host, int(port))) as impatient:
                    impatient.sendall(request_bytes(small.body, small.headers))
            long_running.settimeout(30)
            assert long_running.recv(12) == b"HTTP/1.1 200"
        time.sleep(0.2)
        stats = httpx.get(f"{url}/v2/models/penguins/stats").json()["model_stats"][0]["inference_stats"]
    ran = stats["success"]["count"] + stats["fail"]["count"]
    assert ran <= 3, f"{ran - 1} of 30 abandoned requests still ran"
