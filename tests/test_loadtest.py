"""The load-test runner, for real: locust against a real server, budgets as the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import running_server

pytestmark = pytest.mark.slow


def run_loadtest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loadtest", "run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_smoke_scenario_meets_ci_budgets_and_writes_every_report(model_dir: Path, tmp_path: Path) -> None:
    completed = run_loadtest("--scenario", "mixed", "--serve", str(model_dir), "--run-time", "6", "--users", "4",
                             "--out", str(tmp_path))  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All budgets met." in completed.stdout
    assert "| error rate | 0.000% |" in completed.stdout
    for name in ("mixed_report.html", "mixed.png", "mixed_summary.md", "mixed_timings.json", "mixed_stats.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "mixed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_request_share_counts_correct_4xx_as_success(model_dir: Path, tmp_path: Path) -> None:
    completed = run_loadtest("--scenario", "bad", "--serve", str(model_dir), "--run-time", "4", "--users", "2",
                             "--out", str(tmp_path))  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "| error rate | 0.000% |" in completed.stdout


def test_impossible_budget_exits_non_zero_naming_the_breach(model_dir: Path, tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("[v2-json]\np99_ms = 0.001\nmin_rps = 1e9\n")
    completed = run_loadtest("--scenario", "v2-json", "--serve", str(model_dir), "--run-time", "3", "--users", "2",
                             "--budgets", str(budgets), "--out", str(tmp_path))  # fmt: skip
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "budget breached: v2-json: p99 " in completed.stderr and "> budget 0.001 ms" in completed.stderr
    assert "requests/s < budget 1e+09" in completed.stderr


def test_bench_calls_batching_a_win_or_loss_only_when_apart_from_the_a_a_control() -> None:
    from loadtest.report import verdict

    twin = [0.972, 1.004, 0.999, 0.978, 0.999]  # tabserve against itself, five repetitions
    # A median above every A/A ratio is not enough: one repetition inside their range makes a tie.
    assert verdict([0.988, 1.019, 1.013, 0.985, 1.005], twin).startswith("ties: 1.005 (0.985-1.019)")
    assert verdict([1.020, 1.103, 1.047, 1.051, 1.046], twin).startswith("wins: 1.047")
    assert verdict([0.950, 0.960, 0.940, 0.955, 0.962], twin).startswith("loses: 0.955")
    assert "against the A/A range 0.972-1.004" in verdict([0.9] * 5, twin)
    # Above a twin that ran below 1 is not a win when batching itself spans 1.
    slow_twin = [0.965, 0.948, 0.945, 0.957, 0.947]
    assert verdict([0.999, 0.997, 1.008, 1.022, 0.992], slow_twin).startswith("ties: 0.999")
    assert verdict([1.001, 1.002, 1.003, 1.004, 1.005], [1.01, 1.02, 1.03, 1.04, 1.05]).startswith("ties")


def test_the_ceiling_with_the_model_answers_the_golden_vectors(model_dir: Path) -> None:
    """The bench's bare endpoint with a model must really score it, or its ratio would flatter the model."""
    import json

    from starlette.testclient import TestClient

    from loadtest.bare import create_app

    golden = json.loads((model_dir / "penguins" / "1" / "golden.json").read_text())
    inputs = [{"name": name, **tensor} for name, tensor in golden["inputs"].items()]
    with TestClient(create_app(model_dir / "penguins" / "1")) as client:
        answer = client.post("/v2/models/penguins/infer", json={"inputs": inputs}).json()
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["label"]["data"] == golden["outputs"]["label"]["data"]
    tolerance = golden["tolerance"]  # the export's parity gate, scikit-learn against onnxruntime
    want = golden["outputs"]["probabilities"]["data"]
    assert outputs["probabilities"]["data"] == pytest.approx(want, abs=tolerance["atol"], rel=tolerance["rtol"])


def test_grpc_scenario_checks_every_answer_and_meets_its_budget(model_dir: Path, tmp_path: Path) -> None:
    completed = run_loadtest("--scenario", "grpc", "--serve", str(model_dir), "--run-time", "4", "--users", "2",
                             "--out", str(tmp_path))  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All budgets met." in completed.stdout and "| error rate | 0.000% |" in completed.stdout
    timings = (tmp_path / "grpc_timings.json").read_text()
    assert '"grpc penguins"' in timings, "the requests went through the gRPC user"


def test_drift_scenario_passes_only_once_the_servers_monitoring_raises_the_alert(
    model_dir: Path, tmp_path: Path
) -> None:
    """A feature sent 1000x too large: the run passes its budget, which includes the alert on that feature."""
    completed = run_loadtest("--scenario", "drift", "--serve", str(model_dir), "--run-time", "5", "--users", "2",
                             "--out", str(tmp_path))  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    # Against a server that does not monitor, the same run fails its budget: the check really looks.
    with running_server(model_dir, {"SERVE_QUALITY_MONITORING": "false"}) as url:
        blind = run_loadtest("--scenario", "drift", "--host", url, "--run-time", "2", "--users", "1",
                             "--out", str(tmp_path / "blind"))  # fmt: skip
    assert blind.returncode == 1, blind.stdout[-2000:] + blind.stderr[-2000:]
    assert "budget breached: drift: GET /v2/models/penguins/quality answered 404" in blind.stderr, blind.stderr


def test_a_master_judges_the_merged_run_of_two_workers_with_every_exact_timing(model_dir: Path, tmp_path: Path) -> None:
    """locust's distributed mode on loopback: `run --expect-workers 2` and two `run --worker` processes; the
    master's totals and the exact timings the workers sent it describe the same requests."""
    import json
    import re

    from loadtest.servers import free_port

    port = str(free_port())
    base = [sys.executable, "-m", "loadtest", "run", "--scenario", "v2-json", "--master-port", port]
    judging = [*base, "--serve", str(model_dir), "--run-time", "4", "--users", "4", "--expect-workers", "2",
               "--out", str(tmp_path)]  # fmt: skip
    master = subprocess.Popen(judging, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[subprocess.Popen[bytes]] = [
        subprocess.Popen([*base, "--worker"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)
    ]
    try:
        out, err = master.communicate(timeout=120)
        for worker in workers:
            assert worker.wait(timeout=30) == 0, "a worker quits when its master does"
    finally:
        if master.poll() is None:
            master.kill()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert master.returncode == 0, out[-2000:] + err[-2000:]
    found = re.search(r"(\d+) requests, 0 failed", out)
    assert found, out
    timings = json.loads((tmp_path / "v2-json_timings.json").read_text())
    by_worker = json.loads((tmp_path / "v2-json_timings_workers.json").read_text())
    assert len(by_worker) == 2 and all(count > 0 for count in by_worker.values()), by_worker
    assert sum(by_worker.values()) == sum(map(len, timings.values())) == int(found.group(1))
