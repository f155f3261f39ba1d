"""The explanations benchmark: latency per example, the explainer's overhead over onnxruntime, and what a
steady explain load does to inference.

Three parts, each measured interleaved within one run (the machines are noisy: ../shared/BENCHMARKING.md):
1. In process, on core 0: rows evaluated per second by an explanation against plain onnxruntime on
   batches of the sizes the explanation's calls have (background rows repeated), repetitions alternating.
2. Served: one row per request, exact and permutation, round trip and the server's own `seconds`.
3. Inference p50/p99 at 8 connections (wrk, 1-row JSON) with and without one client explaining in a
   loop, the server alone on core 0 as a one-CPU pod, alternating; a p99 ratio near 1 is the goal.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtest.payloads import fetch_models
from loadtest.processes import pinned
from loadtest.servers import clean_env, free_port, server_process, tabserve_command
from loadtest.targets import EXPLAIN_GOAL
from loadtest.wrk import find_wrk, run_wrk
from serve import shapley
from serve.explanations import CHUNK_ROWS, scorer
from serve.model import Model, SessionOptions, golden_array

EXAMPLES = ("age-weight", "diabetes", "penguins", "breast-cancer")


def _methods(columns: int) -> list[shapley.Method]:
    return ["exact", "permutation"] if columns <= shapley.MAX_EXACT_COLUMNS else ["permutation"]


def _load(model_dir: Path, name: str) -> Model:
    return Model(name, 1, model_dir / name / "1", SessionOptions())


def _rows(background: dict[str, Any], rows: int) -> dict[str, Any]:
    return {key: np.resize(value, (rows, *value.shape[1:])) for key, value in background.items()}


def overhead(model_dir: Path, repetitions: int) -> list[dict[str, Any]]:
    """Part 1: explanation rows/s over onnxruntime rows/s on CHUNK_ROWS-row batches, medians of alternations."""
    results = []
    os.sched_setaffinity(0, {0})
    try:
        for name in EXAMPLES:
            model = _load(model_dir, name)
            assert model.background is not None, f"{name} has no background data"
            golden = json.loads((model.folder / "golden.json").read_text())
            row = {key: golden_array(tensor)[:1] for key, tensor in golden["inputs"].items()}
            score = scorer(model)
            size = len(next(iter(model.background.values())))
            for method in _methods(len(model.inputs)):
                explained, plain = [], []
                workspace = shapley.Workspace()  # as the server keeps one per model version
                for _ in range(repetitions):
                    explanation = shapley.explain(score, row, model.background, method=method, chunk_rows=CHUNK_ROWS,
                                                  workspace=workspace)  # fmt: skip
                    explained.append(explanation.rows_evaluated / explanation.seconds)
                    # The same calls: the coalition rows in chunks of whole coalitions, then the row itself.
                    composed = explanation.rows_evaluated - 1
                    per_call = max(1, CHUNK_ROWS // size) * size
                    sizes = [per_call] * (composed // per_call) + ([composed % per_call] if composed % per_call else [])
                    batches = [_rows(model.background, rows) for rows in [*sizes, 1]]
                    started = time.perf_counter()
                    for batch in batches:
                        score(batch)
                    plain.append(explanation.rows_evaluated / (time.perf_counter() - started))
                results.append({
                    "model": name, "method": method, "columns": len(model.inputs), "background_rows": size,
                    "rows_evaluated": explanation.rows_evaluated, "explain_rows_per_s": statistics.median(explained),
                    "onnxruntime_rows_per_s": statistics.median(plain),
                    "ratio": statistics.median(e / p for e, p in zip(explained, plain, strict=True)),
                })  # fmt: skip
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return results


def served(base: str, model_dir: Path, repetitions: int) -> list[dict[str, Any]]:
    """Part 2: one row per request, sequential; the round trip and the server's `seconds`, medians."""
    results = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for name in EXAMPLES:
            golden = client.get(f"/v1/models/{name}/golden").json()
            record = {key: tensor["data"][0] for key, tensor in golden["inputs"].items()}
            for method in _methods(len(golden["inputs"])):
                trips, own = [], []
                for _ in range(repetitions):
                    started = time.perf_counter()
                    answer = client.post(f"/v1/models/{name}:explain",
                                         json={"instances": [record], "parameters": {"method": method}})  # fmt: skip
                    trips.append(time.perf_counter() - started)
                    answer.raise_for_status()
                    own.append(answer.json()["seconds"])
                body = answer.json()
                results.append({"model": name, "method": method, "round_trip_ms": statistics.median(trips) * 1e3,
                                "server_ms": statistics.median(own) * 1e3, "rows_evaluated": body["rows_evaluated"],
                                "additivity_error": body["additivity_error"]})  # fmt: skip
    return results


def interference(base: str, repetitions: int, duration_s: int) -> list[dict[str, Any]]:
    """Part 3: wrk's inference p50/p99 alone and beside a client explaining breast-cancer rows in a loop."""
    wrk = find_wrk()
    (penguins,) = fetch_models(lambda path: httpx.get(base + path).json(), ["penguins"])
    payloads = [penguins.v2_json([row]) for row in range(8)]
    golden = httpx.get(f"{base}/v1/models/breast-cancer/golden").json()
    record = {key: tensor["data"][0] for key, tensor in golden["inputs"].items()}
    results = []
    for repetition in range(repetitions):
        for loaded in (False, True) if repetition % 2 == 0 else (True, False):
            stop, explained = threading.Event(), [0]

            def explain_loop(stop: threading.Event = stop, explained: list[int] = explained) -> None:
                with httpx.Client(base_url=base, timeout=60) as client:
                    while not stop.is_set():
                        client.post("/v1/models/breast-cancer:explain", json={"instances": [record]}).raise_for_status()
                        explained[0] += 1

            explainer = threading.Thread(target=explain_loop) if loaded else None
            if explainer is not None:
                explainer.start()
            try:
                result = run_wrk(wrk, base, payloads, 8, duration_s)
            finally:
                stop.set()
                if explainer is not None:
                    explainer.join(60)
            results.append({"repetition": repetition, "explain_load": loaded, "requests_per_s":
                            result["requests"] / (result["duration_us"] / 1e6), "p50_ms": result["p50_us"] / 1e3,
                            "p99_ms": result["p99_us"] / 1e3, "errors": result["errors"] + result["non2xx"],
                            "explanations": explained[0]})  # fmt: skip
    return results


def run(model_dir: Path, repetitions: int, duration_s: int) -> dict[str, Any]:
    report: dict[str, Any] = {"overhead": overhead(model_dir, repetitions)}
    port = free_port()
    command = pinned(0, tabserve_command(model_dir, port, "--log-level", "warning"))
    base = f"http://127.0.0.1:{port}"
    with server_process(command, f"{base}/v2/health/ready", clean_env({"OMP_NUM_THREADS": "1"})):
        os.sched_setaffinity(0, {1} if (os.cpu_count() or 1) > 1 else {0})
        report["served"] = served(base, model_dir, repetitions)
        report["interference"] = interference(base, repetitions, duration_s)
    return report


def summary(report: dict[str, Any]) -> str:
    lines = ["explain overhead (in process, core 0): explanation rows/s over onnxruntime rows/s, same batch size"]
    for item in report["overhead"]:
        lines.append(f"  {item['model']:14} {item['method']:11} {item['columns']:2} columns: "
                     f"{item['explain_rows_per_s']:>11,.0f} vs {item['onnxruntime_rows_per_s']:>11,.0f} rows/s = "
                     f"{item['ratio']:.2f}x (goal >= {EXPLAIN_GOAL})")  # fmt: skip
    lines.append("explain latency, one row (served; median round trip / server time, ms)")
    for item in report["served"]:
        lines.append(f"  {item['model']:14} {item['method']:11} {item['round_trip_ms']:8.1f} / "
                     f"{item['server_ms']:8.1f}  ({item['rows_evaluated']:,} model rows, "
                     f"additivity error {item['additivity_error']:.1e})")  # fmt: skip
    lines.append("inference beside explanations (8 connections, 1-row JSON, server on one core)")
    alone = [item for item in report["interference"] if not item["explain_load"]]
    loaded = [item for item in report["interference"] if item["explain_load"]]
    for label, items in (("alone", alone), ("with explain load", loaded)):
        lines.append(f"  {label:18} p50 {statistics.median(i['p50_ms'] for i in items):6.2f} ms  "
                     f"p99 {statistics.median(i['p99_ms'] for i in items):6.2f} ms  "
                     f"{statistics.median(i['requests_per_s'] for i in items):8,.0f} req/s  "
                     f"errors {sum(i['errors'] for i in items)}  "
                     f"explanations {sum(i['explanations'] for i in items)}")  # fmt: skip
    ratios = [b["p99_ms"] / a["p99_ms"] for a, b in zip(alone, loaded, strict=True)]
    lines.append(f"  p99 with / without, per repetition: {', '.join(f'{r:.2f}' for r in ratios)}")
    return "\n".join(lines)
