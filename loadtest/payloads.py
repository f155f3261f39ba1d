"""Request bodies built from what a server says about its models (metadata + golden vectors).

Nothing here is specific to one model: any model in the repository, the user's own included, gets
single-row, batch, records, binary and bad payloads, each with the answer it must get back.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract import BY_V2


@dataclass(frozen=True)
class Payload:
    """One request: its body, its headers, and what a correct answer contains."""

    path: str
    body: bytes
    headers: dict[str, str]
    expected_status: int
    expected: dict[str, list[Any]] | None = None
    """Output name -> flat values, for a 200; None when only the status is checked."""
    binary: bool = False


@dataclass(frozen=True)
class ModelPayloads:
    name: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    golden: dict[str, Any]

    @property
    def rows(self) -> int:
        first = next(iter(self.golden["inputs"].values()))
        return int(first["shape"][0])

    def column(self, name: str, rows: list[int]) -> list[Any]:
        data = self.golden["inputs"][name]["data"]
        return [data[row] for row in rows]

    def expected(self, rows: list[int]) -> dict[str, list[Any]]:
        expected = {}
        for name, tensor in self.golden["outputs"].items():
            width = int(np.prod(tensor["shape"][1:]))
            expected[name] = [value for row in rows for value in tensor["data"][row * width : (row + 1) * width]]
        return expected

    def v2_json(self, rows: list[int]) -> Payload:
        inputs = [
            {
                "name": spec["name"],
                "datatype": spec["datatype"],
                "shape": [len(rows), 1],
                "data": self.column(spec["name"], rows),
            }
            for spec in self.inputs
        ]
        body = json.dumps({"inputs": inputs}).encode()
        return Payload(
            f"/v2/models/{self.name}/infer", body, {"Content-Type": "application/json"}, 200, self.expected(rows)
        )

    def v2_binary(self, rows: list[int]) -> Payload:
        """Triton's binary tensor extension: every input and output as raw bytes after a JSON header."""
        header_inputs, chunks = [], []
        for spec in self.inputs:
            raw = encode_binary(self.column(spec["name"], rows), spec["datatype"])
            chunks.append(raw)
            header_inputs.append(
                {
                    "name": spec["name"],
                    "datatype": spec["datatype"],
                    "shape": [len(rows), 1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
        header = json.dumps({"inputs": header_inputs, "parameters": {"binary_data_output": True}}).encode()
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
        return Payload(
            f"/v2/models/{self.name}/infer", header + b"".join(chunks), headers, 200, self.expected(rows), binary=True
        )

    def grpc_request(self, rows: list[int]) -> Any:
        """The same rows as a gRPC ModelInferRequest (tritonclient's messages), every input in raw contents."""
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelInferRequest(model_name=self.name)
        for spec in self.inputs:
            request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=[len(rows), 1])
            request.raw_input_contents.append(encode_binary(self.column(spec["name"], rows), spec["datatype"]))
        return request

    def records(self, rows: list[int]) -> Payload:
        instances = [
            {
                spec["name"]: value
                for spec in self.inputs
                if (value := self.golden["inputs"][spec["name"]]["data"][row]) is not None
            }
            for row in rows
        ]
        body = json.dumps({"instances": instances}).encode()
        return Payload(
            f"/v1/models/{self.name}:predict", body, {"Content-Type": "application/json"}, 200, self.expected(rows)
        )

    def shifted(self, feature: str, factor: float, rows: list[int]) -> Payload:
        """Records with `feature` multiplied by `factor` (a unit change: grams sent as milligrams), so the
        server's drift monitoring has something to find; only the status is checked, not the answer."""
        payload = self.records(rows)
        document = json.loads(payload.body)
        for instance in document["instances"]:
            if instance.get(feature) is not None:
                instance[feature] *= factor
        return Payload(payload.path, json.dumps(document).encode(), payload.headers, 200, None)

    def first_number(self) -> str:
        """The model's first numeric input: the drift scenario's default feature to shift."""
        return str(next(spec["name"] for spec in self.inputs if spec["datatype"] in ("FP32", "FP64")))

    def bad(self) -> list[Payload]:
        """Client mistakes and the status each must get: a correct 4xx counts as success."""
        good = json.loads(self.v2_json([0]).body)
        wrong_type = json.loads(self.v2_json([0]).body)
        wrong_type["inputs"][0]["datatype"] = "INT8"
        wrong_shape = json.loads(self.v2_json([0]).body)
        wrong_shape["inputs"][0]["shape"] = [1, 7]
        missing = {"inputs": good["inputs"][1:]} if len(good["inputs"]) > 1 else {"inputs": []}
        path = f"/v2/models/{self.name}/infer"
        json_headers = {"Content-Type": "application/json"}
        return [
            Payload(path, b'{"inputs": [', json_headers, 400),
            Payload(path, json.dumps(wrong_type).encode(), json_headers, 400),
            Payload(path, json.dumps(wrong_shape).encode(), json_headers, 400),
            Payload(path, json.dumps(missing).encode(), json_headers, 400),
            Payload(f"/v2/models/{self.name}-missing/infer", json.dumps(good).encode(), json_headers, 404),
        ]


def encode_binary(values: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(raw)) + raw for raw in (str(value).encode() for value in values))
    array = np.array([np.nan if value is None else value for value in values], dtype=BY_V2[datatype].numpy)
    return array.tobytes()


def decode_outputs(body: bytes, header_length: str | None) -> dict[str, list[Any]]:
    """A V2 response's outputs as flat lists, JSON or binary."""
    header = body[: int(header_length)] if header_length else body
    document = json.loads(header)
    offset = len(header)
    outputs: dict[str, list[Any]] = {}
    for output in document["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            outputs[output["name"]] = output["data"]
            continue
        raw = body[offset : offset + size]
        offset += size
        if output["datatype"] == "BYTES":
            outputs[output["name"]] = _strings(raw)
        else:
            outputs[output["name"]] = np.frombuffer(raw, dtype=BY_V2[output["datatype"]].numpy).tolist()
    return outputs


def grpc_outputs(response: Any) -> dict[str, list[Any]]:
    """A ModelInferResponse's outputs as flat lists, decoded as the binary extension's (the same layout)."""
    outputs: dict[str, list[Any]] = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if output.datatype == "BYTES":
            outputs[output.name] = _strings(raw)
        else:
            outputs[output.name] = np.frombuffer(raw, dtype=BY_V2[output.datatype].numpy).tolist()
    return outputs


def _strings(raw: bytes) -> list[str]:
    values, position = [], 0
    while position < len(raw):
        (length,) = struct.unpack_from("<I", raw, position)
        values.append(raw[position + 4 : position + 4 + length].decode())
        position += 4 + length
    return values


def records_outputs(body: bytes) -> dict[str, list[Any]]:
    """The records endpoint's predictions in the V2 outputs' layout, to compare with golden outputs."""
    predictions = json.loads(body)["predictions"]
    if predictions and isinstance(predictions[0], dict):
        return {
            "label": [item["label"] for item in predictions],
            "probabilities": [value for item in predictions for value in item["probabilities"].values()],
        }
    return {"variable": predictions}


def mismatch(got: dict[str, list[Any]], expected: dict[str, list[Any]], tolerance: float = 1e-4) -> str | None:
    """None when every output matches (labels exactly, numbers within tolerance); else what differs."""
    for name, want in expected.items():
        have = got.get(name)
        if have is None or len(have) != len(want):
            return f"output {name!r}: got {None if have is None else len(have)} values, expected {len(want)}"
        if want and isinstance(want[0], str):
            if have != want:
                return f"output {name!r}: got {have[:3]}, expected {want[:3]}"
        elif not np.allclose(
            np.asarray(have, dtype=float), np.asarray(want, dtype=float), rtol=tolerance, atol=tolerance
        ):
            return f"output {name!r} differs from the golden vectors beyond {tolerance}"
    return None


def fetch_models(get_json: Any, names: list[str] | None = None) -> list[ModelPayloads]:
    """Models from /v2/models/stats (every loaded one) or `names`, with metadata and golden vectors."""
    if not names:
        names = sorted({item["name"] for item in get_json("/v2/models/stats")["model_stats"]})
    models = []
    for name in names:
        metadata = get_json(f"/v2/models/{name}")
        golden = get_json(f"/v1/models/{name}/golden")
        models.append(ModelPayloads(name, metadata["inputs"], metadata["outputs"], golden))
    return models
