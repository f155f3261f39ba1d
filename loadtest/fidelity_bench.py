"""What precision costs, per estimator family: conversion time, file size, in-process rows/s, served throughput.

Each family is trained on the synthetic mixed table (loadtest/synthetic.py) and converted at every
precision (export/precision.py), whether or not the gate would pick it, so float32 and float64-trees sit
side by side. The precision the exporter chooses is then published and served (server on core 0, wrk
on core 1): 1-row V2 JSON at `connections` connections, each family's run followed at once by one of
the linear regression, so that `vs linear` is a ratio measured in the same minute (absolute figures move
with this machine's steal; the ratio holds), in `reps` whole rounds; medians.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.processes import pinned
from loadtest.servers import clean_env, free_port, server_process, tabserve_command
from loadtest.synthetic import mixed_table
from loadtest.wrk import find_wrk, run_wrk

FAMILIES = ("linear", "logistic", "tree", "forest", "gbm", "hgb", "mlp", "lgbm", "xgb")
REFERENCE = "linear-regression"
"""The served model every other one is measured against, right after it."""


@dataclass(frozen=True)
class Payload:
    """What loadtest.wrk sends: a path, a body and headers."""

    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


def in_process_rows_per_s(model_bytes: bytes, feed: dict[str, Any], seconds: float = 1.0) -> float:
    """onnxruntime called directly on one thread, on the whole `feed` batch, for `seconds`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    rows = len(next(iter(feed.values())))
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, feed)
        calls += 1
    return calls * rows / (time.perf_counter() - started)


def run(connections: int, duration_s: int, reps: int = 3) -> list[dict[str, Any]]:
    """Measure every family on a regression and a binary table; one result dict per (family, task)."""
    from sklearn.model_selection import train_test_split

    from export.convert import convert_pipeline
    from export.features import prepare_frame
    from export.parity import Tolerance, check_parity, onnx_feed
    from export.precision import PRECISIONS
    from export.publish import export_pipeline
    from export.training import ESTIMATORS, train

    results: list[dict[str, Any]] = []
    model_dir = Path(tempfile.mkdtemp(prefix="fidelity-bench-"))
    for task in ("regression", "binary"):
        frame, labels = mixed_table(task)
        train_x, test_x, train_y, test_y = train_test_split(prepare_frame(frame), labels, test_size=0.3, random_state=0)
        kind = "regression" if task == "regression" else "classification"
        batch = test_x.iloc[np.arange(1000) % len(test_x)]
        for family in FAMILIES:
            if kind not in ESTIMATORS[family].build:
                continue
            pipeline = train(train_x, train_y, family, kind, folds=2).pipeline
            row: dict[str, Any] = {"family": family, "task": task, "precisions": {}}
            for precision in PRECISIONS:
                started = time.perf_counter()
                model = convert_pipeline(pipeline, train_x, precision)
                seconds = time.perf_counter() - started
                model_bytes = model.SerializeToString()
                report, _ = check_parity(pipeline, model_bytes, test_x, Tolerance())
                feed = onnx_feed(batch, [value.name for value in model.graph.input])
                row["precisions"][precision.name] = {
                    "convert_s": seconds,
                    "bytes": len(model_bytes),
                    "passes": report.passed,
                    "rows_per_s": in_process_rows_per_s(model_bytes, feed),
                }
            name = f"{family}-{task}"
            published = export_pipeline(
                pipeline, name=name, model_dir=model_dir, training_frame=train_x, check_frame=test_x,
                task=kind, description=name, background_rows=0,
            )  # fmt: skip
            row["chosen"] = published.card["parity"]["precision"]
            row["request"] = _one_row_request(published.card, test_x)
            results.append(row)
            print(f"{name}: chosen {row['chosen']}", flush=True)
    _serve(model_dir, results, connections, duration_s, reps)
    return results


def _one_row_request(card: Any, rows: Any) -> bytes:
    inputs = []
    for feature, column in zip(card["features"], rows.columns, strict=True):
        value = rows[column].iloc[0]
        if feature["datatype"] == "FP32":
            value = None if np.isnan(value) else float(value)
        inputs.append({"name": feature["name"], "datatype": feature["datatype"], "shape": [1, 1], "data": [value]})
    return json.dumps({"inputs": inputs}).encode()


def _serve(model_dir: Path, results: list[dict[str, Any]], connections: int, duration_s: int, reps: int) -> None:
    wrk = find_wrk()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = pinned(0, tabserve_command(model_dir, port, "--log-level", "warning"))
    payloads = {
        f"{row['family']}-{row['task']}": Payload(f"/v2/models/{row['family']}-{row['task']}/infer", row.pop("request"))
        for row in results
    }

    def requests_per_s(name: str) -> float:
        found = run_wrk(wrk, url, [payloads[name]], connections, duration_s)
        if found["errors"] or found["non2xx"]:
            raise RuntimeError(f"{name}: {found['errors']} errors, {found['non2xx']} non-2xx answers under wrk")
        return float(found["requests"]) / (float(found["duration_us"]) / 1e6)

    with server_process(command, f"{url}/v2/health/ready", clean_env({"OMP_NUM_THREADS": "1"})):
        requests_per_s(REFERENCE)  # warm-up
        served: dict[str, list[tuple[float, float]]] = {name: [] for name in payloads}
        for _ in range(reps):  # whole rounds, so that a slow minute touches every model once, not one model thrice
            for name in payloads:
                mine = requests_per_s(name)
                served[name].append((mine, mine / requests_per_s(REFERENCE)))
        for row in results:
            figures = served[f"{row['family']}-{row['task']}"]
            row["served_requests_per_s"] = statistics.median(rate for rate, _ in figures)
            row["served_vs_linear"] = statistics.median(ratio for _, ratio in figures)


def summary(results: list[dict[str, Any]]) -> str:
    lines = [
        "| family | task | chosen | precision | convert s | file KiB | in-process rows/s (1000-row batches) "
        "| passes the gate | served 1-row req/s (vs linear) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        for name, figures in row["precisions"].items():
            served = (
                f"{row['served_requests_per_s']:,.0f} ({row['served_vs_linear']:.2f}x)" if name == row["chosen"] else ""
            )
            lines.append(
                f"| {row['family']} | {row['task']} | {row['chosen']} | {name} | {figures['convert_s']:.2f} "
                f"| {figures['bytes'] / 1024:,.0f} | {figures['rows_per_s']:,.0f} | {figures['passes']} | {served} |"
            )
    return "\n".join(lines)
