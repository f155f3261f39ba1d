"""schemathesis against the server's own OpenAPI document: no 5xx, no hang, whatever it generates."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import running_server

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_schemathesis_finds_no_server_error_and_no_hang(model_dir: Path, tmp_path: Path) -> None:
    # A user key, not an admin one: the fuzzer may call load/unload, gets 403, and the models stay up.
    env = {"SERVE_API_KEYS": "fuzz-key", "SERVE_ADMIN_KEYS": "admin-key"}
    log = tmp_path / "server.log"
    with running_server(model_dir, env, log_path=log) as url:
        result = subprocess.run(
            [str(BIN / "schemathesis"), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
             "--header", "X-API-Key: fuzz-key", "--max-examples", "25", "--seed", "20261125",
             "--request-timeout", "5", "--max-response-time", "5", "--report", "junit",
             "--report-dir", str(tmp_path / "report")],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,  # its cache goes there, not in the work tree
        )  # fmt: skip
    output = result.stdout + result.stderr
    cases = re.search(r"(\d+) generated", output)
    print(f"schemathesis: {cases.group(1) if cases else '?'} cases")
    assert result.returncode == 0, output[-5000:]
    assert cases and int(cases.group(1)) >= 500, "the fuzzer really ran"
    assert "Traceback" not in log.read_text()
