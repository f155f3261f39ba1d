"""The error table: every error class has its HTTP status and gRPC code, and renders as {"error": ...}."""

from __future__ import annotations

import inspect

import orjson
import pytest

from serve import errors
from serve.errors import ERRORS, ServeError, render

CLASSES = [value for _, value in inspect.getmembers(errors, inspect.isclass) if issubclass(value, ServeError)]


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
def test_every_error_class_has_its_own_row_and_a_precise_grpc_code(kind: type[ServeError]) -> None:
    # Listed explicitly (not inherited by accident), except InferenceFailedError, which is an invalid request.
    assert kind in ERRORS or kind is errors.InferenceFailedError
    error = kind("what was received; what was expected")
    if kind is not ServeError:
        assert error.status < 500 or error.status in (503, 504)
        assert error.grpc_code not in ("UNKNOWN", "INTERNAL"), "a caller's mistake or an overload is never INTERNAL"


def test_the_503s_tell_grpc_clients_apart_whether_to_back_off_or_go_elsewhere() -> None:
    codes = {kind.__name__: ERRORS[kind] for kind in (errors.ServerBusyError, errors.InFlightLimitError,
                                                      errors.ModelNotReadyError)}  # fmt: skip
    assert {status for status, _ in codes.values()} == {503}
    assert codes["ServerBusyError"][1] == codes["InFlightLimitError"][1] == "RESOURCE_EXHAUSTED"
    assert codes["ModelNotReadyError"][1] == "UNAVAILABLE"


def test_a_model_refusing_a_validated_request_is_the_callers_4xx() -> None:
    assert errors.InferenceFailedError("x").status == 400
    assert errors.InferenceFailedError("x").grpc_code == "INVALID_ARGUMENT"


def test_render_gives_the_status_the_json_body_and_complete_headers() -> None:
    status, headers, body = render(errors.ServerBusyError("model m has 3 requests queued"))
    assert status == 503 and orjson.loads(body) == {"error": "model m has 3 requests queued"}
    assert dict(headers) == {b"content-type": b"application/json", b"content-length": str(len(body)).encode(),
                             b"retry-after": b"1"}  # fmt: skip
    _, headers, _ = render(errors.MethodNotAllowedError("no", {"Allow": "GET"}))
    assert (b"allow", b"GET") in headers
