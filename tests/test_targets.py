"""The benchmarks judge themselves: synthetic figures in, verdicts and exit codes out (nothing is timed here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loadtest.cells import Cell
from loadtest.quality_bench import judged as quality_judged
from loadtest.report import README_END, README_START, markdown, replace_block, summarise
from loadtest.targets import TARGETS, Figure, Target, difference_figure, failed, judge_one, ratio_figure

AT_LEAST = Target("x / y", 0.9, ">=", "ratio", "y / y twin", "bench", "test")
AT_MOST = Target("x - y, ms", 0.08, "<=", "ms", "y - y twin", "bench", "test")


def test_targets_live_in_one_table_with_issue_21_and_19_bounds() -> None:
    keys = [target.key for target in TARGETS]
    assert len(keys) == len(set(keys))
    bounds = {target.key: (target.direction, target.bound) for target in TARGETS}
    assert bounds["1-row json, 64 conn: tabserve / bare req/s"] == (">=", 0.9)
    assert bounds["1-row json, 8 conn: tabserve / bare req/s"] == (">=", 0.85)
    assert bounds["1-row json, 1 conn: tabserve / bare req/s"] == (">=", 0.7)
    assert bounds["1-row json, 1 conn: p50 tabserve - bare, ms"] == ("<=", 0.08)
    assert bounds["generator: locust 2 processes / 1 process against bare"] == (">=", 1.3)
    assert bounds["monitoring, 100-row json, 64 conn: on / off per CPU-s"] == (">=", 0.97)
    assert bounds["2 workers / 1 worker: requests per server CPU-s"] == (">=", 0.95)


def test_a_ratio_is_met_missed_within_the_a_a_noise_or_missed() -> None:
    assert judge_one(AT_LEAST, Figure(0.91, noise=0.0)).verdict == "met"
    assert judge_one(AT_LEAST, Figure(0.9, noise=0.0)).verdict == "met"
    # 0.88 is 2.2 % under 0.9: within a 3 % noise, beyond a 2 % one.
    assert judge_one(AT_LEAST, Figure(0.88, noise=0.03)).verdict == "missed within noise"
    assert judge_one(AT_LEAST, Figure(0.88, noise=0.02)).verdict == "MISSED"
    assert judge_one(AT_LEAST, None).verdict == "not measured"


def test_a_difference_in_ms_is_widened_by_the_noise_in_ms() -> None:
    assert judge_one(AT_MOST, Figure(0.05, noise=0.0)).verdict == "met"
    assert judge_one(AT_MOST, Figure(0.10, noise=0.03)).verdict == "missed within noise"
    assert judge_one(AT_MOST, Figure(0.12, noise=0.03)).verdict == "MISSED"


def test_figures_take_the_median_and_the_worst_a_a_repetition_as_noise() -> None:
    figure = ratio_figure([0.8, 0.95, 0.9], [1.01, 0.97, 1.02])
    assert figure.value == 0.9 and figure.each == (0.8, 0.95, 0.9)
    assert figure.noise == pytest.approx(0.03)
    assert difference_figure([0.1, 0.2, 0.3], [-0.02, 0.01]).noise == pytest.approx(0.02)
    assert failed([judge_one(AT_LEAST, figure), judge_one(AT_MOST, Figure(0.5))]) == [judge_one(AT_MOST, Figure(0.5))]


def synthetic_run(
    tabserve_over_bare: dict[int, float],
    p50_gap_ms: float,
    one_over_two_workers: float = 1.0,
    more_duels: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Raw results of a 3-repetition bench: bare at 10k req/s and its twin within 1 %, tabserve at the given
    share, and one worker's requests per CPU-second over two workers' side by side."""
    raw: dict[str, list[dict[str, Any]]] = {}

    def add(payload: str, connections: int, system: str, rps: float, p50_ms: float, rows: int = 1) -> None:
        raw.setdefault(Cell(payload, connections, system).key, []).append(
            {
                "requests_per_s": rps,
                "rows_per_s": rps * rows,
                "p50_ms": p50_ms,
                "p99_ms": 2 * p50_ms,
                "errors": 0,
                "per_cpu_second": rps,
            }  # fmt: skip
        )

    for twin_share in (1.0, 0.99, 1.01):
        for connections, share in tabserve_over_bare.items():
            add("1-row json", connections, "bare", 10_000, 0.1)
            add("1-row json", connections, "bare-twin", 10_000 * twin_share, 0.1 + (twin_share - 1))
            add("1-row json", connections, "tabserve", 10_000 * share, 0.1 + p50_gap_ms)
            add("1-row json", connections, "tabserve-nobatch", 5_000, 0.3)
            add("1-row json", connections, "flask", 50, 20.0)
            add("100-row binary", connections, "tabserve", 1_500, 1.0, rows=100)
            add("100-row binary", connections, "tabserve-nobatch", 1_400, 1.0, rows=100)
    duels = {Cell("100-row binary", 64, "tabserve-nobatch").key: [1.03, 1.04, 1.02],
             Cell("100-row binary", 64, "tabserve-twin").key: [0.99, 1.0, 1.01],
             Cell("1-row json", 64, "tabserve-workers").key: [one_over_two_workers * x for x in (0.99, 1.0, 1.01)],
             Cell("1-row json", 64, "tabserve-twin").key: [0.98, 1.0, 1.02],
             Cell("1-row json", 64, "bare").key: [0.78, 0.8, 0.79],
             Cell("1-row json", 64, "bare-twin | bare").key: [1.01, 0.99, 1.0]}  # fmt: skip
    ceilings = [{"varied": {1: 40_000.0, 100: 300_000.0}, "repeated": {1: 45_000.0, 100: 600_000.0}}] * 3
    generator = {
        "wrk_rps": 20_000.0,
        "locust_rps": 9_000.0,
        "locust_processes": 2,
        "locust_processes_rps": 12_600.0,
        "cores": 2,
        "ratios": [1.38, 1.4, 1.42],
    }
    return summarise(raw, {**duels, **(more_duels or {})}, ceilings, generator)


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {item["target"]: item["verdict"] for item in report["targets"]}


def test_the_bench_report_judges_tabserve_against_bare_with_bare_twice_as_its_a_a() -> None:
    report = synthetic_run({1: 0.695, 8: 0.8, 64: 0.95}, p50_gap_ms=0.05)
    found = verdicts(report)
    assert found["1-row json, 64 conn: tabserve / bare req/s"] == "met"
    assert found["1-row json, 1 conn: tabserve / bare req/s"] == "missed within noise"  # 0.7 % under, A/A 1 %
    assert found["1-row json, 8 conn: tabserve / bare req/s"] == "MISSED"  # 5.9 % under 0.85, A/A 1 %
    assert found["1-row json, 1 conn: p50 tabserve - bare, ms"] == "met"
    assert found["1-row json, 64 conn: tabserve / flask req/s"] == "met"
    assert found["generator: locust 2 processes / 1 process against bare"] == "met"  # 1.4x
    assert found["100-row binary, 64 conn: batching / no batching, side by side"] == "met"
    assert found["100-row json, 64 conn: batching / no batching, side by side"] == "not measured"
    assert found["100-row binary, 64 conn: rows/s / in-process onnxruntime"] == "met"  # 150k / 300k
    assert found["2 workers / 1 worker: requests per server CPU-s"] == "met"
    noise = next(item["noise"] for item in report["targets"] if item["target"].startswith("1-row json, 8 conn"))
    assert noise == pytest.approx(0.01)
    table = markdown({**report, "in_process_rows_per_s": report["in_process_rows_per_s"]})
    assert "| 1-row json, 8 conn: tabserve / bare req/s >= 0.85 | issue 21 | 0.800 |" in table
    assert "| MISSED |" in table and "1.0% (bare / bare twin)" in table


def test_the_generators_cpu_ceiling_is_what_the_cores_allow_one_process_and_the_server() -> None:
    from loadtest.wrk import cpu_ceiling

    # Two cores shared: 2 / (1/9,000 + 1/20,000) = 12,414 req/s, 1.379x one process.
    shared = {"locust_rps": 9_000.0, "wrk_rps": 20_000.0, "locust_processes": 2, "cores": 2}
    assert cpu_ceiling(shared) == pytest.approx(12_413.8 / 9_000, rel=1e-4)
    # Eight cores: the server's one core (10,000 req/s) binds before the processes (18,000) or the cores.
    assert cpu_ceiling({**shared, "wrk_rps": 10_000.0, "cores": 8}) == pytest.approx(10_000 / 9_000)
    # A fast server on eight cores: two processes reach twice one.
    assert cpu_ceiling({**shared, "wrk_rps": 100_000.0, "cores": 8}) == pytest.approx(2.0)
    report = synthetic_run({1: 0.8, 8: 0.9, 64: 0.95}, p50_gap_ms=0.05)
    (generator,) = (item for item in report["targets"] if item["target"].startswith("generator"))
    assert generator["value"] == pytest.approx(1.4)  # the median of the rounds' ratios, 1.38 1.4 1.42
    assert "sharing 2 cores with the server: 1.38x" in markdown(report)


def test_two_workers_are_judged_per_cpu_second_against_one_with_the_twin_as_noise() -> None:
    """The duel measures tabserve (one worker) over two workers: the target is its inverse."""
    report = synthetic_run({1: 0.8, 8: 0.9, 64: 0.95}, p50_gap_ms=0.05, one_over_two_workers=1.1)
    (workers,) = (item for item in report["targets"] if item["target"].startswith("2 workers"))
    assert workers["value"] == pytest.approx(1 / 1.1) and workers["noise"] == pytest.approx(0.02)
    assert workers["verdict"] == "MISSED"  # 0.909 < 0.95 x (1 - 0.02)
    assert report["ratios"]["64 conn 1-row json: tabserve / bare per CPU-s, side by side"] == 0.79
    control = "64 conn 1-row json: bare twin / bare per CPU-s, side by side (A/A: the noise)"
    assert report["per_repetition"][control] == [1.01, 0.99, 1.0]
    close = synthetic_run({1: 0.8, 8: 0.9, 64: 0.95}, p50_gap_ms=0.05, one_over_two_workers=1.06)
    assert verdicts(close)["2 workers / 1 worker: requests per server CPU-s"] == "missed within noise"  # 0.943


def test_every_duel_the_bench_runs_is_one_the_report_reads() -> None:
    """duels_of and duel_key name the results as summarise looks them up: a mismatch would leave the
    workers' target "not measured" and the side-by-side ratios to bare missing."""
    from loadtest.bench import duel_key, duels_of

    ran = {duel_key("1-row json", load, system, other): [1.0] for load in (1, 8, 64)
           for system, other in duels_of("1-row json", load, top=64)}  # fmt: skip
    assert len(ran) == 3 * 3 + 2  # at every load: tabserve, the bare twin and bare with the model against bare
    report = synthetic_run({1: 0.8, 8: 0.9, 64: 0.95}, p50_gap_ms=0.05, one_over_two_workers=1.1, more_duels=ran)
    found = verdicts(report)
    assert found["2 workers / 1 worker: requests per server CPU-s"] == "met"
    for load in (1, 8, 64):
        assert report["ratios"][f"{load} conn 1-row json: tabserve / bare per CPU-s, side by side"] == 1.0
        control = f"{load} conn 1-row json: bare twin / bare per CPU-s, side by side (A/A: the noise)"
        assert report["per_repetition"][control] == [1.0]
        assert report["ratios"][f"{load} conn 1-row json: bare + the model's run / bare per CPU-s, side by side"] == 1.0
        assert report["ratios"][f"{load} conn 1-row json: tabserve / (bare + the model's run) per CPU-s"] == 1.0


def test_the_bench_command_exits_non_zero_only_for_a_miss_beyond_the_noise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import loadtest.bench
    from loadtest.__main__ import cli

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_START}\nold table\n{README_END}\n\nmore\n")
    runner = CliRunner()
    for shares, code in (({1: 0.695, 8: 0.86, 64: 0.95}, 0), ({1: 0.695, 8: 0.8, 64: 0.95}, 1)):
        report = {**synthetic_run(shares, p50_gap_ms=0.05), "settings": {"example": "penguins", "loads": [1, 8, 64],
                  "reps": 3, "duration_s": 5}, "machine": {"cores": 2, "cpu": "test", "python": "3.11"}}  # fmt: skip
        monkeypatch.setattr(loadtest.bench, "run_benchmark", lambda *args, report=report: report)
        result = runner.invoke(cli, ["bench", "--model-dir", str(tmp_path), "--readme", str(readme)])
        assert result.exit_code == code, result.output
    assert "target missed: 1-row json, 8 conn: tabserve / bare req/s >= 0.85: measured 0.800" in result.output
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{README_END}\n\nmore\n")
    assert "| 1-row json, 8 conn: tabserve / bare req/s >= 0.85 | issue 21 | 0.800 |" in text
    json.dumps(report)  # bench.json keeps it


def test_the_readme_block_must_exist_to_be_replaced() -> None:
    assert replace_block(f"a{README_START}b{README_END}c", "T") == f"a{README_START}\nT\n{README_END}c"
    with pytest.raises(ValueError, match="no benchmark block"):
        replace_block("no markers here", "T")


def test_the_monitoring_bench_judges_issue_19s_cost_against_its_a_a_twin() -> None:
    report = {"connections": 64, "ratios": {
        "1-row json": {"off": [0.975, 0.98, 0.972], "twin": [0.99, 1.005, 1.0]},
        "100-row json": {"off": [0.92, 0.93, 0.921], "twin": [0.992, 1.01, 1.0]},
    }}  # fmt: skip
    found = {judgement.target.key: judgement.verdict for judgement in quality_judged(report)}
    assert found == {"monitoring, 1-row json, 64 conn: on / off per CPU-s": "met",
                     "monitoring, 100-row json, 64 conn: on / off per CPU-s": "MISSED"}  # fmt: skip
