"""Settings from SERVE_* variables: every value parsed by its field's type, and reaching uvicorn as given."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from serve.__main__ import uvicorn_options
from serve.settings import Settings


def test_fractional_seconds_reach_uvicorn_unrounded() -> None:
    settings = Settings.from_env({"SERVE_TIMEOUT_KEEP_ALIVE_S": "0.5", "SERVE_SHUTDOWN_TIMEOUT_S": "2.5"})
    options = uvicorn_options(settings)
    assert (options["timeout_keep_alive"], options["timeout_graceful_shutdown"]) == (0.5, 2.5)


def test_every_field_type_parses_from_its_variable() -> None:
    settings = Settings.from_env(
        {"SERVE_PORT": "9000", "SERVE_REQUEST_TIMEOUT_S": "1.5", "SERVE_ACCESS_LOG": "yes",
         "SERVE_SSL_CERTFILE": "/c.pem", "SERVE_API_KEYS": "a, b,", "SERVE_LOG_LEVEL": "debug"}
    )  # fmt: skip
    assert (settings.port, settings.request_timeout_s, settings.access_log) == (9000, 1.5, True)
    assert (str(settings.ssl_certfile), settings.api_keys, settings.log_level) == ("/c.pem", ("a", "b"), "debug")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SERVE_PORTS": "1"}, "unknown setting SERVE_PORTS"),
        ({"SERVE_PORT": "eighty"}, "SERVE_PORT='eighty': invalid literal for int()"),
        ({"SERVE_ACCESS_LOG": "maybe"}, "SERVE_ACCESS_LOG='maybe': expected true/false, got 'maybe'"),
        ({"SERVE_MAX_QUEUE_SIZE": "0"}, "SERVE_MAX_QUEUE_SIZE must be > 0, got 0"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env(environ)
    assert str(refused.value).startswith(message)


def test_a_field_of_a_type_without_a_parser_is_a_clear_error() -> None:
    @dataclass(frozen=True)
    class Extended(Settings):
        weights: complex = 0j

    with pytest.raises(TypeError, match=r"no SERVE_\* parser for their type: \{'weights': <class 'complex'>\}"):
        Extended.from_env({})
