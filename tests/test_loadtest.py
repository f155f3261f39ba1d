"""The load-test runner, for real: locust against a real server, budgets as the exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run_loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loadtest", "run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


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
