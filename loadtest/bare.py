"""The HTTP ceiling: Starlette on the same uvicorn stack, parsing the same JSON and returning a constant.

Run as `python -m loadtest.bare --port N`: uvicorn with tabserve's options and tabserve's HTTP protocol
(one write per response), so the ceiling gets every HTTP saving tabserve makes. A binary body's JSON
header is parsed the same way tabserve parses it, so the comparison is the protocol layer minus the
model and batching.
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serve.http import http_protocol
from serve.settings import Settings

CONSTANT = orjson.dumps(
    {"model_name": "bare", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [0.0]}]}
)


async def infer(request: Request) -> Response:
    body = await request.body()
    header_length = request.headers.get("inference-header-content-length")
    orjson.loads(body[: int(header_length)] if header_length else body)
    return Response(CONSTANT, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b'{"ready":true}', media_type="application/json")


app = Starlette(
    routes=[Route("/v2/models/{model_name}/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)]
)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    protocol = http_protocol(Settings().header_timeout_s)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http=protocol, access_log=False, proxy_headers=False,
                log_level="warning")  # fmt: skip
