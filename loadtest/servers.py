"""Start a server process on a loopback port, wait until it is ready, and always stop it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def server_process(
    command: Sequence[str],
    ready_url: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command`; yield once `ready_url` answers 200; terminate (then kill) on the way out.

    Output goes to `log_path` (or a temporary file): a file, not a pipe, since a pipe nobody reads
    fills up and blocks a chatty server.
    """
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:
        process = subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            wait_ready(ready_url, process, log, timeout_s)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: IO[bytes], timeout_s: float) -> None:
    import ssl

    unverified = ssl._create_unverified_context()  # readiness only; tests of TLS check certificates themselves
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{log.read().decode()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=unverified) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    log.seek(0)
    raise RuntimeError(f"{url} not ready within {timeout_s} s:\n{log.read().decode()[-4000:]}")


def tabserve_command(model_dir: Path, port: int, *args: str) -> list[str]:
    """`python -m serve` on `port`; gRPC off unless `args` give it a port, so no two servers meet on 8001."""
    grpc = () if "--grpc-port" in args else ("--grpc-port", "off")
    return [sys.executable, "-m", "serve", "--model-dir", str(model_dir), "--port", str(port), *grpc, *args]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment without SERVE_* settings, plus `extra`."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SERVE_")}
    environ.update(extra or {})
    return environ
