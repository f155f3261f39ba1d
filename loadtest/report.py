"""The benchmark's report: medians and ratios of the raw runs, batching's verdicts, the markdown and the chart."""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.cells import VARIANTS, Cell
from loadtest.targets import Figure, as_json, difference_figure, judge, ratio_figure, table
from loadtest.wrk import cpu_ceiling


def summarise(
    raw: dict[str, list[dict[str, Any]]],
    duels: dict[str, list[float]],
    ceilings: list[dict[str, dict[int, float]]],
    generator: dict[str, Any],
) -> dict[str, Any]:
    ceiling = {
        kind: {rows: statistics.median(each[kind][rows] for each in ceilings) for rows in ceilings[0][kind]}
        for kind in ceilings[0]
    }
    cells = []
    for key, runs in raw.items():
        cell = json.loads(key)
        medians = {field: statistics.median(run[field] for run in runs) for field in runs[0]}
        cells.append({**cell, **medians, "runs": len(runs)})

    def runs_of(payload: str, connections: int, system: str) -> list[dict[str, Any]]:
        """One measurement per repetition, in order."""
        return raw.get(Cell(payload, connections, system).key, [])

    def paired(
        payload: str,
        connections: int,
        system: str,
        other: str,
        field: str,
        compare: Callable[[float, float], float] = operator.truediv,
    ) -> list[float]:
        """The ratio (or `compare`) in each repetition: both servers started afresh in it, measured seconds apart."""
        runs = zip(runs_of(payload, connections, system), runs_of(payload, connections, other), strict=False)
        return [compare(mine[field], theirs[field]) for mine, theirs in runs if theirs[field]]

    def median_of(payload: str, connections: int, system: str, field: str) -> float:
        for cell in cells:
            if (cell["payload"], cell["connections"], cell["system"]) == (payload, connections, system):
                return float(cell[field])
        return float("nan")

    loads = sorted({cell["connections"] for cell in cells})
    top = max(loads)
    ratios = {
        f"{top} conn 1-row json: tabserve / flask": median_of("1-row json", top, "tabserve", "requests_per_s")
        / median_of("1-row json", top, "flask", "requests_per_s"),
    }
    # Each repetition's own figure too: a ratio of medians can hide how far single repetitions spread.
    ranges: dict[str, list[float]] = {
        f"{top} conn 1-row json: tabserve / flask": paired("1-row json", top, "tabserve", "flask", "requests_per_s"),
    }
    figures: dict[str, Figure] = {}
    for connections in loads:
        # The bare endpoint twice, one after the other like every single cell: the noise of a ratio to bare.
        control = paired("1-row json", connections, "bare-twin", "bare", "requests_per_s")
        figures[f"1-row json, {connections} conn: tabserve / bare req/s"] = ratio_figure(
            paired("1-row json", connections, "tabserve", "bare", "requests_per_s"), control
        )
        if connections == top:
            figures[f"1-row json, {connections} conn: tabserve / flask req/s"] = ratio_figure(
                ranges[f"{top} conn 1-row json: tabserve / flask"], control
            )
            if generator.get("locust_processes_rps"):
                figures["generator: locust 2 processes / 1 process against bare"] = ratio_figure(
                    generator["ratios"], control
                )
    if 1 in loads:
        figures["1-row json, 1 conn: p50 tabserve - bare, ms"] = difference_figure(
            paired("1-row json", 1, "tabserve", "bare", "p50_ms", operator.sub),
            paired("1-row json", 1, "bare-twin", "bare", "p50_ms", operator.sub),
        )
    verdicts: dict[str, str] = {}
    for payload in ("100-row json", "100-row binary"):
        for connections in loads:
            name = f"{connections} conn {payload}: batching / no batching, one at a time"
            ratios[name] = median_of(payload, connections, "tabserve", "rows_per_s") / median_of(
                payload, connections, "tabserve-nobatch", "rows_per_s"
            )
            ranges[name] = paired(payload, connections, "tabserve", "tabserve-nobatch", "rows_per_s")
            batching = duels.get(Cell(payload, connections, "tabserve-nobatch").key, [])
            twin = duels.get(Cell(payload, connections, "tabserve-twin").key, [])
            if not (batching and twin):
                continue
            name = f"{connections} conn {payload}: batching / no batching, side by side"
            ratios[name], ranges[name] = statistics.median(batching), batching
            twin_name = f"{connections} conn {payload}: tabserve / its twin, side by side (A/A: the noise)"
            ratios[twin_name], ranges[twin_name] = statistics.median(twin), twin
            verdicts[name] = verdict(batching, twin)
            figures[f"{payload}, {connections} conn: batching / no batching, side by side"] = ratio_figure(
                batching, twin
            )
    binary_rows = median_of("100-row binary", top, "tabserve", "rows_per_s")
    name = f"{top} conn 100-row binary: rows/s / in-process onnxruntime at 100"
    ratios[name] = binary_rows / ceiling["varied"][100]
    served = runs_of("100-row binary", top, "tabserve")
    ranges[name] = [run["rows_per_s"] / each["varied"][100] for run, each in zip(served, ceilings, strict=False)]
    if ranges[name]:
        figures[f"100-row binary, {top} conn: rows/s / in-process onnxruntime"] = ratio_figure(
            ranges[name], duels.get(Cell("100-row binary", top, "tabserve-twin").key, [])
        )
    ratios[f"{top} conn 100-row binary: rows/s / in-process onnxruntime, one batch repeated (flattered)"] = (
        binary_rows / ceiling["repeated"][100]
    )
    for connections in loads:
        to_bare = duels.get(Cell("1-row json", connections, "bare").key, [])
        if to_bare:  # side by side, per CPU-second: the precise figure beside the judged throughput ratio
            name = f"{connections} conn 1-row json: tabserve / bare per CPU-s, side by side"
            ratios[name], ranges[name] = statistics.median(to_bare), to_bare
            twin = duels.get(Cell("1-row json", connections, "bare-twin | bare").key, [])
            name = f"{connections} conn 1-row json: bare twin / bare per CPU-s, side by side (A/A: the noise)"
            ratios[name], ranges[name] = (statistics.median(twin) if twin else float("nan")), twin
            with_model = duels.get(Cell("1-row json", connections, "bare-model | bare").key, [])
            if with_model:  # what the model's own run leaves of the ceiling, and tabserve's share of what is left
                name = f"{connections} conn 1-row json: bare + the model's run / bare per CPU-s, side by side"
                ratios[name], ranges[name] = statistics.median(with_model), with_model
                name = f"{connections} conn 1-row json: tabserve / (bare + the model's run) per CPU-s"
                ranges[name] = [mine / theirs for mine, theirs in zip(to_bare, with_model, strict=False)]
                ratios[name] = statistics.median(ranges[name])
    workers = duels.get(Cell("1-row json", top, "tabserve-workers").key, [])
    if workers:  # tabserve / workers side by side, so the workers' figure is its inverse
        name = f"{top} conn 1-row json: 2 workers / 1 worker per CPU-s, side by side on one core"
        ranges[name] = [1 / ratio for ratio in workers]
        ratios[name] = statistics.median(ranges[name])
        figures["2 workers / 1 worker: requests per server CPU-s"] = ratio_figure(
            ranges[name], duels.get(Cell("1-row json", top, "tabserve-twin").key, [])
        )
    judged = judge(figures, "bench")
    return {
        "cells": cells,
        "ratios": ratios,
        "per_repetition": ranges,
        "verdicts": verdicts,
        "in_process_rows_per_s": ceiling,
        "generator": generator,
        "targets": [as_json(judgement) for judgement in judged],
        "targets_table": table(judged),
    }


def verdict(batching: list[float], control: list[float]) -> str:
    """Batching's side-by-side ratios, one per repetition, against the A/A ratios of the same cell.

    A win (or a loss) needs every batching ratio above (below) every ratio between a server and its
    identical twin, which five of each do by chance with probability 2/252, under 1 % (Mann-Whitney
    U = 0), and above (below) 1 as well: the twin is fresh where tabserve has served every cell before,
    and in one run tabserve ran 3.5-5.5 % below it, which alone would have made a win of a ratio of
    0.999. Anything less is a tie.
    """
    told = (
        f"{statistics.median(batching):.3f} ({min(batching):.3f}-{max(batching):.3f}) "
        f"against the A/A range {min(control):.3f}-{max(control):.3f}"
    )
    if min(batching) > max(*control, 1.0):
        return f"wins: {told}"
    if max(batching) < min(*control, 1.0):
        return f"loses: {told}"
    return f"ties: {told}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| payload | conns | system | req/s | rows/s | p50 ms | p99 ms | req per server-CPU-s | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        lines.append(
            f"| {cell['payload']} | {cell['connections']} | {cell['system']} | {cell['requests_per_s']:.0f} | "
            f"{cell['rows_per_s']:.0f} | {cell['p50_ms']:.3f} | {cell['p99_ms']:.3f} | {cell['per_cpu_second']:.0f} | "
            f"{cell['errors']:.0f} |"
        )
    lines += ["", report["targets_table"].rstrip("\n")] if "targets_table" in report else []
    lines += ["", "| ratio | measured | each repetition |", "|---|---|---|"]
    for name, value in report["ratios"].items():
        each = report.get("per_repetition", {}).get(name, [])
        lines.append(f"| {name} | {value:.3f} | {' '.join(f'{ratio:.3f}' for ratio in each)} |")
    if report.get("verdicts"):
        lines += ["", "| batching against no batching, side by side | verdict |", "|---|---|"]
        lines += [f"| {name} | {said} |" for name, said in report["verdicts"].items()]
    ceiling = report["in_process_rows_per_s"]
    generator = report["generator"]
    lines += [
        "",
        f"In-process onnxruntime (1 thread), on the same {VARIANTS} batches the servers get: "
        f"{ceiling['varied'][1]:.0f} rows/s at batch 1, {ceiling['varied'][100]:.0f} rows/s at batch 100. "
        f"One batch repeated, which the CPU's branch predictor learns: {ceiling['repeated'][1]:.0f} and "
        f"{ceiling['repeated'][100]:.0f} rows/s.",
        f"Load generator against the bare endpoint, 64 connections: wrk {generator['wrk_rps']:.0f} req/s, "
        f"one locust process {generator['locust_rps']:.0f} req/s"
        + (
            f", {generator['locust_processes']:.0f} locust processes {generator['locust_processes_rps']:.0f} req/s "
            f"(medians of {len(generator['ratios'])} rounds); the CPU ceiling of {generator['locust_processes']:.0f} "
            f"processes over one, sharing {generator['cores']:.0f} cores with the server: "
            f"{cpu_ceiling(generator):.2f}x (loadtest/wrk.py)."
            if generator.get("locust_processes_rps")
            else "."
        ),
    ]
    if "machine" in report:
        machine_info = report["machine"]
        lines.append(f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores, Python {machine_info['python']}.")
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [cell for cell in report["cells"] if cell["payload"] == "1-row json"]
    systems_seen = sorted({cell["system"] for cell in cells})
    loads = sorted({cell["connections"] for cell in cells})
    figure, axis = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(systems_seen)
    for index, system in enumerate(systems_seen):
        values = [
            next((c["requests_per_s"] for c in cells if c["system"] == system and c["connections"] == load), 0)
            for load in loads
        ]
        axis.bar([position + index * width for position in range(len(loads))], values, width, label=system)
    axis.set_xticks([position + 0.4 - width / 2 for position in range(len(loads))], [f"{load} conn" for load in loads])
    axis.set_ylabel("requests/s (median)")
    axis.set_title("1-row JSON requests, penguins model, server on one core")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


README_START = "<!-- bench:start: written by python -m loadtest bench --readme README.md -->"
README_END = "<!-- bench:end -->"


def readme_summary(report: dict[str, Any]) -> str:
    """The README's benchmark summary: when, where, and the run's targets table (method and history: docs/)."""
    settings = report.get("settings", {})
    machine_info = report.get("machine", {})
    when = report.get("date", "")
    return (
        f"Latest run{f' ({when})' if when else ''}: {settings.get('example', '?')} model, loads "
        f"{', '.join(str(load) for load in settings.get('loads', []))} connections, {settings.get('reps', '?')} "
        f"repetitions of {settings.get('duration_s', '?')} s, {machine_info.get('cores', '?')}-core "
        f"{machine_info.get('cpu', '?')}, Python {machine_info.get('python', '?')}. A target missed by more than "
        "the run's own A/A noise fails the bench.\n\n" + str(report["targets_table"])
    )


def replace_block(text: str, block: str) -> str:
    """`text` with what lies between the bench markers replaced by `block`; ValueError when they are missing."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"no benchmark block: expected {README_START!r} ... {README_END!r}")
    return text[: start + len(README_START)] + "\n" + block.rstrip("\n") + "\n" + text[end:]
