"""python -m loadtest: `run` a scenario against its budget, or `bench` tabserve side by side."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import click

from loadtest.runner import SCENARIOS, RunOptions, run_scenario
from loadtest.servers import clean_env, free_port, server_process, tabserve_command

DEFAULT_BUDGETS = Path(__file__).with_name("budgets.toml")


@click.group()
def cli() -> None:
    """Load tests for tabserve: locust scenarios against latency budgets, and a benchmark."""


@contextlib.contextmanager
def target(host: str | None, serve: Path | None, grpc: str | None) -> Iterator[tuple[str, str]]:
    """The URL and gRPC address to load: --host (and --grpc, default its host at port 8001) as given, or a
    tabserve started on --serve's model repository with both front ends on free loopback ports."""
    if serve is None:
        assert host is not None
        yield host.rstrip("/"), grpc or f"{urllib.parse.urlsplit(host).hostname}:8001"
        return
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    command = tabserve_command(serve, port, "--grpc-port", str(grpc_port), "--log-level", "warning")
    with server_process(command, f"{url}/v2/health/ready", clean_env()):
        yield url, f"127.0.0.1:{grpc_port}"


MODEL_DIR_OPTION = click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
)


@cli.command()
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), required=True)
@click.option(
    "--budgets",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_BUDGETS,
    show_default=True,
    help="TOML with a [scenario] table of p50_ms/p95_ms/p99_ms/max_error_rate/min_rps (drift: drift_alert).",
)
@click.option("--host", default=None, help="Server to load, e.g. http://127.0.0.1:8000.")
@click.option(
    "--serve",
    "serve_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Start tabserve on this model repository for the run instead of --host.",
)
@click.option("--grpc", default=None, help="gRPC address for the grpc scenario with --host [default: host:8001].")
@click.option("--model", default="penguins", show_default=True, help="Model for single-model scenarios.")
@click.option("--drift-feature", default="", help="drift: the input to shift [default: the first numeric one].")
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Locust processes on this machine (one locust process tops out near 4.5k req/s here).",
)
@click.option(
    "--expect-workers",
    type=click.IntRange(0, 1024),
    default=0,
    show_default=True,
    help="Be a locust master: wait for this many `run --worker` processes, then judge their merged run.",
)
@click.option("--worker", is_flag=True, help="Be a locust worker for a master elsewhere (--master-host).")
@click.option("--master-host", default="127.0.0.1", show_default=True, help="--worker: the master's address.")
@click.option("--master-port", type=click.IntRange(1, 65535), default=5557, show_default=True)
@click.option("--users", type=click.IntRange(1, 1000), default=8, show_default=True, help="Closed-loop users.")
@click.option("--run-time", "run_time_s", type=click.IntRange(1, 3600), default=20, show_default=True, help="Seconds.")
@click.option("--rate", type=click.FloatRange(min=1), default=200.0, show_default=True, help="open-loop: requests/s.")
@click.option(
    "--step-seconds",
    "step_s",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="step/spike: seconds per step.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("loadtest-results"),
    show_default=True,
)
def run(scenario: str, budgets: Path, host: str | None, serve_dir: Path | None, grpc: str | None, model: str,
        drift_feature: str, processes: int, expect_workers: int, worker: bool, master_host: str, master_port: int,
        users: int, run_time_s: int, rate: float, step_s: float, out_dir: Path) -> None:  # fmt: skip
    """Run one scenario headless; exit 1 naming every breached budget."""
    if worker:
        from loadtest.runner import run_worker

        raise click.exceptions.Exit(run_worker(scenario, master_host, master_port, model))
    if (host is None) == (serve_dir is None):
        raise click.UsageError("give exactly one of --host URL or --serve MODEL_DIR")
    with target(host, serve_dir, grpc) as (url, grpc_address):
        options = RunOptions(scenario, url, out_dir, users=users, spawn_rate=float(users), run_time_s=run_time_s,
                             rate=rate, step_s=step_s, model=model, grpc=grpc_address, drift_feature=drift_feature,
                             api_key=os.environ.get("TABSERVE_API_KEY", ""), processes=processes,
                             expect_workers=expect_workers, master_port=master_port)  # fmt: skip
        report = run_scenario(options, budgets)
    click.echo(report.files["summary"].read_text())
    for name, path in report.files.items():
        click.echo(f"{name}: {path}")
    if report.breaches:
        for breach in report.breaches:
            click.echo(f"budget breached: {breach}", err=True)
        raise click.exceptions.Exit(1)


@cli.command()
@MODEL_DIR_OPTION
@click.option("--example", default="penguins", show_default=True, help="Model to benchmark (an example name).")
@click.option("--loads", default="1,8,64", show_default=True, help="Connection counts.")
@click.option("--reps", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option(
    "--duration", "duration_s", type=click.IntRange(1, 120), default=5, show_default=True, help="Seconds per cell."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("loadtest-results/bench"), show_default=True
)
@click.option(
    "--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Write the run's targets table into this README's benchmark summary (between its bench markers).",
)  # fmt: skip
def bench(
    model_dir: Path, example: str, loads: str, reps: int, duration_s: int, out: Path, readme: Path | None
) -> None:
    """tabserve (batching on/off) vs a bare Starlette endpoint (twice: its A/A) vs Flask + scikit-learn vs raw
    onnxruntime; exit 1 when a target (loadtest/targets.py) is missed by more than the A/A noise."""
    from loadtest.bench import run_benchmark
    from loadtest.report import markdown, readme_summary, replace_block

    report = run_benchmark(model_dir, example, [int(load) for load in loads.split(",")], reps, duration_s, out)
    click.echo(markdown(report))
    click.echo(f"written: {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    if readme is not None:
        readme.write_text(replace_block(readme.read_text(), readme_summary(report)))
        click.echo(f"written: the benchmark summary in {readme}")
    missed = [item for item in report["targets"] if item["verdict"] == "MISSED"]
    if missed:
        for item in missed:
            click.echo(f"target missed: {item['target']} {item['direction']} {item['bound']:g}: measured "
                       f"{item['value']:.3f}, beyond the A/A noise ({item['noise']:.3f})", err=True)  # fmt: skip
        raise click.exceptions.Exit(1)


@cli.command("explain-bench")
@MODEL_DIR_OPTION
@click.option("--reps", type=click.IntRange(2, 20), default=5, show_default=True)
@click.option(
    "--duration", "duration_s", type=click.IntRange(1, 120), default=5, show_default=True, help="Seconds per wrk run."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("loadtest-results/explain.json"),
    show_default=True,
)  # fmt: skip
def explain_bench(model_dir: Path, reps: int, duration_s: int, out: Path) -> None:
    """Explanations: latency per example, overhead over onnxruntime, effect of explain load on infer p99."""
    import json

    from loadtest.explain_bench import run, summary

    report = run(model_dir, reps, duration_s)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    click.echo(summary(report))
    click.echo(f"written: {out}")


@cli.command("quality-bench")
@MODEL_DIR_OPTION
@click.option("--example", default="penguins", show_default=True)
@click.option("--connections", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--reps", type=click.IntRange(2, 20), default=5, show_default=True)
@click.option("--duration", "duration_s", type=click.IntRange(1, 120), default=5, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 10), default=1, show_default=True,
              help="Duels per repetition with the same servers: more ratios for a tighter median.")  # fmt: skip
def quality_bench(model_dir: Path, example: str, connections: int, reps: int, duration_s: int, rounds: int) -> None:
    """Input monitoring on against off, side by side, with an A/A twin: what counting costs."""
    from loadtest.quality_bench import judged, run, summary
    from loadtest.targets import failed

    report = run(model_dir, example, connections, reps, duration_s, rounds)
    click.echo(summary(report))
    missed = failed(judged(report))
    if missed:
        click.echo(f"{len(missed)} target(s) missed by more than the A/A noise", err=True)
        raise click.exceptions.Exit(1)


@cli.command("fidelity-bench")
@click.option("--connections", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--duration", "duration_s", type=click.IntRange(1, 120), default=3, show_default=True)
@click.option("--reps", type=click.IntRange(1, 20), default=3, show_default=True)
def fidelity_bench(connections: int, duration_s: int, reps: int) -> None:
    """Per estimator family: conversion time, file size and rows/s at each precision, and served throughput."""
    from loadtest.fidelity_bench import run, summary

    click.echo(summary(run(connections, duration_s, reps)))


if __name__ == "__main__":
    cli(prog_name="python -m loadtest")
