"""Errors that carry their HTTP status, and the one handler that renders them as {"error": "..."}.

ServeError (500)
├── InvalidRequestError (400)
├── UnauthorizedError (401) / ForbiddenError (403)
├── ModelNotFoundError (404)
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


class ServeError(Exception):
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    headers: dict[str, str] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ServeError):
    status = HTTPStatus.BAD_REQUEST


class UnauthorizedError(ServeError):
    status = HTTPStatus.UNAUTHORIZED
    headers = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ServeError):
    status = HTTPStatus.FORBIDDEN


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
