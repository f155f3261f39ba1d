"""Errors that carry their HTTP status, and the two ways they are rendered as {"error": "..."}:
a Starlette exception handler, and `send_error` for code that answers at the ASGI level.

ServeError (500)
├── InvalidRequestError (400)
├── ModelNotFoundError (404)
├── RequestTimeoutError (408)
├── PayloadTooLargeError (413)
├── ServerBusyError (503, Retry-After) / ModelNotReadyError (503)
└── DeadlineExceededError (504)
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send


class ServeError(Exception):
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    headers: dict[str, str] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ServeError):
    status = HTTPStatus.BAD_REQUEST


class ModelNotFoundError(ServeError):
    status = HTTPStatus.NOT_FOUND


class RequestTimeoutError(ServeError):
    status = HTTPStatus.REQUEST_TIMEOUT


class PayloadTooLargeError(ServeError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class ServerBusyError(ServeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    headers = {"Retry-After": "1"}


class ModelNotReadyError(ServeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    headers = {"Retry-After": "1"}


class DeadlineExceededError(ServeError):
    status = HTTPStatus.GATEWAY_TIMEOUT


async def send_error(send: Send, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
    """The {"error": ...} response for code below Starlette (auth, the in-flight limit, inference)."""
    body = orjson.dumps({"error": message})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message}), status_code=status, headers=headers, media_type="application/json"
    )


async def render_serve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServeError)
    return error_response(exc.status, exc.message, exc.headers)


async def render_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the same JSON shape as ours."""
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    elif exc.status_code == HTTPStatus.NOT_FOUND:
        message = f"no route for {request.method} {request.url.path}"
    return error_response(exc.status_code, message, exc.headers)
