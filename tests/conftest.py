"""Session fixtures: the built-in examples are trained and exported once, then shared."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from click.testing import CliRunner

from export.__main__ import cli as export_cli

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_server(model_dir: Path, env: dict[str, str] | None = None, *args: str) -> Iterator[str]:
    """`python -m serve` as a real process on a loopback port; yields its base URL once it is ready."""
    port = free_port()
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SERVE_")}
    environ.update(env or {})
    command = [sys.executable, "-m", "serve", "--model-dir", str(model_dir), "--port", str(port), *args]
    scheme = "https" if "--ssl-certfile" in args else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    # A file, not a pipe: a pipe nobody reads fills up and blocks a chatty server.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: IO[bytes], timeout_s: float = 30.0) -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read().decode()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0, verify=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready within {timeout_s} s")


@pytest.fixture(scope="session")
def server_url(model_dir: Path) -> Iterator[str]:
    """One real server on the examples, shared by the end-to-end tests."""
    with running_server(model_dir) as url:
        yield url
