"""The HTTP ceiling: Starlette on the same uvicorn stack, parsing the same JSON and returning a constant.

Run as `python -m loadtest.bare --port N`: uvicorn with tabserve's options and tabserve's HTTP protocol
(one write per response), so the ceiling gets every HTTP saving tabserve makes. A binary body's JSON
header is parsed the same way tabserve parses it, so the comparison is the protocol layer minus the
model and batching.

With `--model FOLDER` (a model version's folder) it is the ceiling *with the model*: each V2 JSON request's
inputs become arrays and go through tabserve's own session and call (serve.model.Model.run), and the real
outputs are rendered; no validation, batching, monitoring, metrics or logs. What it loses against the
plain ceiling is the model's own share of a request, which no server that runs the model per request
avoids.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serve.http import http_protocol
from serve.model import Model, SessionOptions
from serve.settings import Settings

CONSTANT = orjson.dumps(
    {"model_name": "bare", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [0.0]}]}
)


async def infer(request: Request) -> Response:
    body = await request.body()
    header_length = request.headers.get("inference-header-content-length")
    orjson.loads(body[: int(header_length)] if header_length else body)
    return Response(CONSTANT, media_type="application/json")


def model_infer(model: Model) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that scores V2 JSON requests with `model`, trusting them: the ceiling with the model."""
    dtypes = {spec.name: spec.dtype for spec in model.inputs}

    async def infer_with_model(request: Request) -> Response:
        document = orjson.loads(await request.body())
        feed = {tensor["name"]: np.array(tensor["data"], dtype=dtypes[tensor["name"]]).reshape(tensor["shape"])
                for tensor in document["inputs"]}  # fmt: skip
        outputs = [
            {"name": spec.name, "datatype": spec.datatype, "shape": array.shape,
             "data": array.reshape(-1).tolist() if spec.datatype == "BYTES" else array.reshape(-1)}
            for spec, array in zip(model.outputs, model.run(feed).values(), strict=True)
        ]  # fmt: skip
        answer = {"model_name": model.name, "model_version": model.version_text, "outputs": outputs}
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    return infer_with_model


async def ready(request: Request) -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


def create_app(model_folder: Path | None = None) -> Starlette:
    endpoint: Callable[[Request], Awaitable[Response]] = infer
    if model_folder is not None:
        endpoint = model_infer(Model(model_folder.parent.name, int(model_folder.name), model_folder, SessionOptions()))
    return Starlette(
        routes=[Route("/v2/models/{model_name}/infer", endpoint, methods=["POST"]), Route("/v2/health/ready", ready)]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, help="a model version's folder: the ceiling with that model's run")
    arguments = parser.parse_args()
    protocol = http_protocol(Settings().header_timeout_s)
    uvicorn.run(create_app(arguments.model), host="127.0.0.1", port=arguments.port, loop="uvloop", http=protocol,
                access_log=False, proxy_headers=False, log_level="warning")  # fmt: skip
