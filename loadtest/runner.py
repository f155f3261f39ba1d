"""Run one locust scenario headless, then judge it against its budget and write the reports."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.budgets import Budget, Result, breaches, load_budget

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class Scenario:
    user_class: str
    tags: tuple[str, ...]
    shape: str = ""
    grpc: bool = False
    """Loads the gRPC front end (TABSERVE_GRPC) instead of REST."""
    drift: bool = False
    """Sends a shifted feature; the budget's `drift_alert` asks the server's monitoring to have noticed."""


SCENARIOS: dict[str, Scenario] = {
    "v2-json": Scenario("ScenarioUser", ("v2-json",)),
    "records": Scenario("ScenarioUser", ("records",)),
    "batch100": Scenario("ScenarioUser", ("batch100",)),
    "binary": Scenario("ScenarioUser", ("binary",)),
    "binary100": Scenario("ScenarioUser", ("binary100",)),
    "mixed": Scenario("ScenarioUser", ("mixed",)),
    "bad": Scenario("ScenarioUser", ("bad",)),
    "open-loop": Scenario("OpenLoopUser", ("open-loop",)),
    "step": Scenario("ScenarioUser", ("v2-json",), shape="step"),
    "spike": Scenario("ScenarioUser", ("v2-json",), shape="spike"),
    "grpc": Scenario("GrpcUser", ("grpc",), grpc=True),
    "drift": Scenario("ScenarioUser", ("drift",), drift=True),
}


@dataclass(frozen=True)
class RunOptions:
    scenario: str
    host: str
    out_dir: Path
    users: int = 8
    spawn_rate: float = 8.0
    run_time_s: int = 20
    rate: float = 200.0
    step_s: float = 5.0
    model: str = "penguins"
    grpc: str = ""
    """host:port of the gRPC front end, for gRPC scenarios."""
    drift_feature: str = ""
    """The input the drift scenario shifts (default: the model's first numeric one)."""
    api_key: str = ""
    """Sent to read the server's /quality after a drift run, when the server wants keys."""
    processes: int = 1
    """Locust processes on this machine (locust's --processes: a master and N - 1 forked workers)."""
    expect_workers: int = 0
    """Run as a locust master waiting for this many workers (`run --worker` on this or other machines)."""
    master_port: int = 5557


@dataclass(frozen=True)
class RunReport:
    result: Result
    breaches: list[str]
    knee: dict[str, Any] | None
    files: dict[str, Path]


def run_scenario(options: RunOptions, budgets_path: Path) -> RunReport:
    """Run locust, then compare exact client-side timings and totals with the scenario's budget."""
    scenario = SCENARIOS[options.scenario]
    budget = load_budget(budgets_path, options.scenario)
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / options.scenario
    files = {
        "timings": prefix.with_name(f"{options.scenario}_timings.json"),
        "html": prefix.with_name(f"{options.scenario}_report.html"),
        "history": prefix.with_name(f"{options.scenario}_stats_history.csv"),
        "chart": prefix.with_name(f"{options.scenario}.png"),
        "summary": prefix.with_name(f"{options.scenario}_summary.md"),
    }
    users = 1 if scenario.user_class == "OpenLoopUser" else options.users
    run_time_s = options.run_time_s
    if scenario.shape:
        steps = 7 if scenario.shape == "step" else 3
        run_time_s = int(steps * options.step_s) + 1
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", options.host,
        "-u", str(users), "-r", str(options.spawn_rate), "-t", f"{run_time_s}s", "--stop-timeout", "2",
        "--tags", *scenario.tags, "--csv", str(prefix), "--csv-full-history", "--html", str(files["html"]),
        "--json", "--skip-log", scenario.user_class,
    ]  # fmt: skip
    if options.processes > 1:
        command[3:3] = ["--processes", str(options.processes)]
    if options.expect_workers:
        command[3:3] = ["--master", "--expect-workers", str(options.expect_workers),
                        "--master-bind-port", str(options.master_port)]  # fmt: skip
    env = dict(os.environ)
    env.update(
        TABSERVE_TIMINGS=str(files["timings"]),
        TABSERVE_MODEL=options.model,
        TABSERVE_RATE=str(options.rate),
        TABSERVE_SHAPE=scenario.shape,
        TABSERVE_STEP_S=str(options.step_s),
        TABSERVE_GRPC=options.grpc,
        TABSERVE_DRIFT_FEATURE=options.drift_feature,
    )
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=run_time_s + 60)
    totals = master_totals(completed.stdout)
    if totals is None:
        raise RuntimeError(f"locust failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    result = summarise(totals, files["timings"])
    found = breaches(budget, result)
    if scenario.drift and budget.limits.get("drift_alert"):
        found += drift_breaches(options)
    knee = find_knee(files["history"], budget) if scenario.shape == "step" else None
    write_chart(files["history"], files["chart"], options.scenario)
    files["summary"].write_text(summary_markdown(options, budget, result, found, knee))
    return RunReport(result, found, knee, files)


def drift_breaches(options: RunOptions) -> list[str]:
    """The drift budget: the server's own monitoring must say `alert` on the shifted feature by the end."""
    import httpx

    headers = {"X-API-Key": options.api_key} if options.api_key else {}
    base = options.host.rstrip("/")
    feature = options.drift_feature
    if not feature:
        inputs = httpx.get(f"{base}/v2/models/{options.model}", headers=headers, timeout=10).json()["inputs"]
        feature = next(spec["name"] for spec in inputs if spec["datatype"] in ("FP32", "FP64"))
    response = httpx.get(f"{base}/v2/models/{options.model}/quality", headers=headers, timeout=10)
    if response.status_code != 200:
        return [f"drift: GET /v2/models/{options.model}/quality answered {response.status_code}: {response.text[:200]}"]
    found = next((item for item in response.json()["features"] if item["name"] == feature), None)
    if found is None:
        return [f"drift: the quality report has no feature {feature!r}"]
    if found["status"] != "alert":
        return [f"drift: {feature} is {found['status']!r} (PSI {found['psi']}), expected 'alert' after the shift"]
    return []


def master_totals(stdout: str) -> list[dict[str, Any]] | None:
    """The run's totals from locust's --json output: with --processes every forked worker prints its own
    (empty) list before the master prints the merged one, so the last document is the run's."""
    decoder, position, found = json.JSONDecoder(), 0, None
    while position < len(stdout):
        if stdout[position].isspace():
            position += 1
            continue
        try:
            found, position = decoder.raw_decode(stdout, position)
        except json.JSONDecodeError:
            return None
    return found if isinstance(found, list) else None


def run_worker(scenario_name: str, master_host: str, master_port: int, model: str) -> int:
    """A locust worker for a master (`run --expect-workers N` elsewhere): it sends its load and its exact
    timings to the master, which judges the run. Returns locust's exit code."""
    scenario = SCENARIOS[scenario_name]
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", master_host,
               "--master-port", str(master_port), "--tags", *scenario.tags, scenario.user_class]  # fmt: skip
    env = {**os.environ, "TABSERVE_MODEL": model, "TABSERVE_SHAPE": scenario.shape}
    return subprocess.run(command, env=env, timeout=3600).returncode


def summarise(totals: list[dict[str, Any]], timings_path: Path) -> Result:
    """Totals from locust's final JSON; percentiles from the locustfile's exact per-request timings."""
    requests = sum(int(entry["num_requests"]) for entry in totals)
    failures = sum(int(entry["num_failures"]) for entry in totals)
    started = min((entry["start_time"] for entry in totals), default=0.0)
    ended = max((entry["last_request_timestamp"] or 0.0 for entry in totals), default=0.0)
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    samples = np.array([value for values in timings.values() for value in values])
    if samples.size:
        percentiles = {f"p{q}": float(np.percentile(samples, q)) for q in (50, 95, 99)}
    else:
        percentiles = {"p50": float("inf"), "p95": float("inf"), "p99": float("inf")}
    return Result(requests, failures, requests / (ended - started) if ended > started else 0.0, percentiles)


def history_rows(path: Path) -> Iterator[dict[str, str]]:
    """Locust's per-second Aggregated rows, with "rps" from the running total (its own Requests/s lags)."""
    previous: tuple[float, int] | None = None
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] != "Aggregated":
                continue
            stamp, total = float(row["Timestamp"]), int(row["Total Request Count"])
            if previous is not None and stamp > previous[0] and row["50%"] != "N/A":
                yield {**row, "rps": str((total - previous[1]) / (stamp - previous[0]))}
            previous = (stamp, total)


def find_knee(history: Path, budget: Budget) -> dict[str, Any]:
    """Per user-count step: median requests/s and worst p99; the knee is the last step within budget."""
    steps: dict[int, list[tuple[float, float]]] = {}
    for row in history_rows(history):
        steps.setdefault(int(row["User Count"]), []).append((float(row["rps"]), float(row["99%"])))
    limit = budget.limits.get("p99_ms", float("inf"))
    table = [
        {"users": users, "rps": float(np.median([rps for rps, _ in points])), "p99_ms": max(p99 for _, p99 in points)}
        for users, points in sorted(steps.items())
        if users
    ]
    within = [step for step in table if step["p99_ms"] <= limit]
    return {"p99_budget_ms": limit, "steps": table, "knee": within[-1] if within else None}


def write_chart(history: Path, chart: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(history_rows(history))
    if not rows:
        return
    start = int(rows[0]["Timestamp"])
    seconds = [int(row["Timestamp"]) - start for row in rows]
    figure, latency = plt.subplots(figsize=(9, 4.5))
    for column, style in (("50%", "-"), ("95%", "--"), ("99%", ":")):
        latency.plot(seconds, [float(row[column]) for row in rows], style, label=f"p{column[:-1]} (ms)")
    latency.set_xlabel("seconds")
    latency.set_ylabel("latency, ms (locust, whole-ms buckets)")
    throughput = latency.twinx()
    throughput.plot(seconds, [float(row["rps"]) for row in rows], color="tab:green", label="requests/s")
    throughput.set_ylabel("requests/s")
    lines = latency.get_legend_handles_labels()
    more = throughput.get_legend_handles_labels()
    latency.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    latency.set_title(f"tabserve load test: {title}")
    figure.tight_layout()
    figure.savefig(chart, dpi=100)
    plt.close(figure)


def summary_markdown(
    options: RunOptions, budget: Budget, result: Result, found: list[str], knee: dict[str, Any] | None
) -> str:
    limits = budget.limits
    rows = [
        ("p50 (ms)", f"{result.percentiles_ms['p50']:.2f}", limits.get("p50_ms")),
        ("p95 (ms)", f"{result.percentiles_ms['p95']:.2f}", limits.get("p95_ms")),
        ("p99 (ms)", f"{result.percentiles_ms['p99']:.2f}", limits.get("p99_ms")),
        ("error rate", f"{result.error_rate:.3%}", limits.get("max_error_rate")),
        ("requests/s", f"{result.rps:.1f}", limits.get("min_rps")),
    ]
    lines = [
        f"# Load test: {options.scenario} against {options.host}",
        "",
        f"{result.requests} requests, {result.failures} failed. Percentiles are exact client-side timings "
        "(the locustfile's own, microsecond resolution), not locust's whole-millisecond buckets.",
        "",
        "| measure | measured | budget |",
        "|---|---|---|",
        *[f"| {name} | {value} | {'-' if limit is None else f'{limit:g}'} |" for name, value, limit in rows],
        "",
    ]
    if knee is not None:
        lines += ["| users | requests/s (median) | p99 ms (worst second) |", "|---|---|---|"]
        lines += [f"| {step['users']} | {step['rps']:.0f} | {step['p99_ms']:.0f} |" for step in knee["steps"]]
        best = knee["knee"]
        lines += [
            "",
            f"Knee: {best['rps']:.0f} requests/s at {best['users']} users" if best else "Knee: no step within budget",
            "",
        ]
    lines.append("**Budget breached:**\n\n" + "\n".join(f"- {item}" for item in found) if found else "All budgets met.")
    return "\n".join(lines) + "\n"
