"""Session fixtures: the built-in examples are trained and exported once, then shared."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from export.__main__ import cli as export_cli
from loadtest.servers import clean_env, free_port, server_process, tabserve_command

EXAMPLE_NAMES = ["age-weight", "diabetes", "breast-cancer", "penguins"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding version 1 of every built-in example."""
    out = tmp_path_factory.mktemp("models")
    result = CliRunner().invoke(export_cli, ["examples", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def read_card(model_dir: Path, name: str, version: int = 1) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((model_dir / name / str(version) / "model.json").read_text())
    return card


def read_golden(model_dir: Path, name: str, version: int = 1) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads((model_dir / name / str(version) / "golden.json").read_text())
    return golden


def golden_rows(golden: dict[str, Any]) -> list[dict[str, Any]]:
    """The golden inputs as one {input: value} record per row (None = missing)."""
    names = list(golden["inputs"])
    count = golden["inputs"][names[0]]["shape"][0]
    return [{name: golden["inputs"][name]["data"][row] for name in names} for row in range(count)]


@contextlib.contextmanager
def running_server(
    model_dir: Path, env: dict[str, str] | None = None, *args: str, log_path: Path | None = None
) -> Iterator[str]:
    """`python -m serve` as a real process on a loopback port; yields its base URL once it is ready."""
    with serving_process(model_dir, env, *args, log_path=log_path) as (url, _):
        yield url


@contextlib.contextmanager
def serving_process(
    model_dir: Path, env: dict[str, str] | None = None, *args: str, log_path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like running_server, but also yields the process (to signal it)."""
    port = free_port()
    scheme = "https" if "--ssl-certfile" in args else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    command = tabserve_command(model_dir, port, *args)
    # No drain at teardown unless a test asks for one: it would add a second to every server.
    environ = clean_env({"SERVE_SHUTDOWN_DRAIN_S": "0", **(env or {})})
    with server_process(command, f"{url}/v2/health/ready", environ, log_path=log_path) as process:
        yield url, process


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for localhost and 127.0.0.1, made by openssl for one day."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def server_url(model_dir: Path) -> Iterator[str]:
    """One real server on the examples, shared by the end-to-end tests."""
    with running_server(model_dir) as url:
        yield url
