"""Every error tabserve answers with, its HTTP status and gRPC code in one table, and the one {"error": ...} body.

ServeError (500)
├── InvalidRequestError (400) ── InferenceFailedError (400)
├── UnauthenticatedError (401) / PermissionDeniedError (403)
├── ModelNotFoundError (404) / RouteNotFoundError (404) / MethodNotAllowedError (405)
├── ExplanationUnavailableError (409)
├── RequestTimeoutError (408) / PayloadTooLargeError (413) / ClientDisconnectedError (499)
├── ServerBusyError, InFlightLimitError, ModelNotReadyError, WorkersBehindError (503, Retry-After)
└── DeadlineExceededError (504)

A front end (REST today) renders an error from the table and nothing else, so the same failure gets
the same message and the same status family whichever way the request came in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import orjson

Headers = list[tuple[bytes, bytes]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
"""ASGI's send, as Starlette's types spell it: the core imports no web framework."""


class ServeError(Exception):
    """An answer to a request that failed; the status comes from ERRORS, by class."""

    HEADERS: ClassVar[Mapping[str, str]] = {}
    """Headers every answer of this class carries (Retry-After, WWW-Authenticate)."""

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = self.HEADERS if headers is None else headers

    @property
    def status(self) -> int:
        return codes(type(self))[0]

    @property
    def grpc_code(self) -> str:
        """The grpc.StatusCode member's name (grpc.StatusCode[name]); the server need not import grpc."""
        return codes(type(self))[1]


class InvalidRequestError(ServeError):
    """The request breaks the protocol or the model's input contract."""


class InferenceFailedError(InvalidRequestError):
    """The model raised on a request that passed validation, alone in its batch (its neighbours were answered).

    A 4xx: running alone isolates the cause to this request's input (onnxruntime's INVALID_ARGUMENT).
    """


class UnauthenticatedError(ServeError):
    HEADERS = {"WWW-Authenticate": 'Bearer realm="tabserve"'}


class PermissionDeniedError(ServeError):
    pass


class ModelNotFoundError(ServeError):
    pass


class RouteNotFoundError(ServeError):
    pass


class MethodNotAllowedError(ServeError):
    """Raised with the route's Allow header."""


class ExplanationUnavailableError(ServeError):
    """The model version has no background data (exported with --background-rows 0, or before there was any)."""


class RequestTimeoutError(ServeError):
    """The request's headers or body did not arrive in time."""

    # The rest of the request may still come: read on this connection, it would be taken for the next one.
    HEADERS = {"Connection": "close"}


class PayloadTooLargeError(ServeError):
    pass


class ClientDisconnectedError(ServeError):
    """The client left before its request ran: nobody reads this answer; it is counted and logged."""


class ServerBusyError(ServeError):
    """A model version's queue is full."""

    HEADERS = {"Retry-After": "1"}


class InFlightLimitError(ServeError):
    """The server is handling its limit of inference requests, across models."""

    HEADERS = {"Retry-After": "1"}


class ModelNotReadyError(ServeError):
    """Draining for shutdown, or a version shutting down."""

    HEADERS = {"Retry-After": "1"}


class WorkersBehindError(ServeError):
    """A load or unload applied by this worker that others have not applied in time (serve/fleet.py)."""

    HEADERS = {"Retry-After": "1"}


class DeadlineExceededError(ServeError):
    pass


# (HTTP status, gRPC status code) per class; a subclass not listed takes its nearest listed base's.
# The 503s differ on gRPC: a full queue or in-flight limit is RESOURCE_EXHAUSTED (as gRPC's own
# maximum_concurrent_rpcs answers), a server going away is UNAVAILABLE (a client retries elsewhere).
ERRORS: dict[type[ServeError], tuple[int, str]] = {
    ServeError: (HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL"),
    InvalidRequestError: (HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT"),
    UnauthenticatedError: (HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED"),
    PermissionDeniedError: (HTTPStatus.FORBIDDEN, "PERMISSION_DENIED"),
    ModelNotFoundError: (HTTPStatus.NOT_FOUND, "NOT_FOUND"),
    RouteNotFoundError: (HTTPStatus.NOT_FOUND, "UNIMPLEMENTED"),
    MethodNotAllowedError: (HTTPStatus.METHOD_NOT_ALLOWED, "UNIMPLEMENTED"),
    # The request is fine and the model serves; what is missing is the version's background data.
    ExplanationUnavailableError: (HTTPStatus.CONFLICT, "FAILED_PRECONDITION"),
    RequestTimeoutError: (HTTPStatus.REQUEST_TIMEOUT, "DEADLINE_EXCEEDED"),
    PayloadTooLargeError: (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "RESOURCE_EXHAUSTED"),
    ClientDisconnectedError: (499, "CANCELLED"),  # nginx's "client closed request"
    ServerBusyError: (HTTPStatus.SERVICE_UNAVAILABLE, "RESOURCE_EXHAUSTED"),
    InFlightLimitError: (HTTPStatus.SERVICE_UNAVAILABLE, "RESOURCE_EXHAUSTED"),
    ModelNotReadyError: (HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE"),
    WorkersBehindError: (HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE"),
    DeadlineExceededError: (HTTPStatus.GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
}
INTERNAL_ERROR = ServeError("internal server error; see the server log")
"""What an unexpected exception answers: its details go to the log, not to the client."""


def describe(value: object) -> str:
    """A received value for an error message: its type and up to 80 bytes of its JSON."""
    if value is None:
        return "null"
    # Cut at 80 bytes, which may split a character: that one is replaced, not a UnicodeDecodeError (a 500).
    return f"{type(value).__name__} {orjson.dumps(value, default=str)[:80].decode(errors='replace')}"


def codes(kind: type[ServeError]) -> tuple[int, str]:
    """The nearest listed class's row: a walk of a few bases, on the error path only."""
    return next(ERRORS[base] for base in kind.__mro__ if base in ERRORS)


def render(exc: ServeError) -> tuple[int, Headers, bytes]:
    """Status, headers (content type and length included) and body: every error response is made here."""
    body = orjson.dumps({"error": exc.message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in exc.headers.items()]
    return exc.status, headers, body


async def send_error(send: Send, exc: ServeError, request_id: str | None = None) -> None:
    """Answer with `exc` from code below Starlette (auth, the in-flight limit), echoing the client's request id."""
    status, headers, body = render(exc)
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
