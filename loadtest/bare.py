"""The HTTP ceiling: Starlette on the same uvicorn stack, parsing the same JSON and returning a constant.

Run as `uvicorn loadtest.bare:app --loop uvloop --http httptools --no-proxy-headers` (tabserve's
options); a binary body's JSON header is parsed the same way tabserve parses it, so the comparison is
the protocol layer minus the model and batching.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
