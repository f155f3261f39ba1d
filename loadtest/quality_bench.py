"""What input monitoring costs: tabserve with it against tabserve without, side by side, with an A/A twin.

The bench's method (loadtest/bench.py): every server on core 0, one wrk each from core 1, two servers
loaded at the same time for `duration_s`, compared by rows per CPU second of their threads. "on / off"
is monitoring's cost; "on / twin" (both on) is how far from 1 two identical servers land in the same
duel, the noise any on / off ratio carries. Fresh processes every repetition; who starts first rotates.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loadtest.bench import draw_payloads, measure, rotated
from loadtest.processes import pinned, wait_idle
from loadtest.servers import clean_env, free_port, server_process, tabserve_command
from loadtest.targets import Judgement, judge, ratio_figure, table
from loadtest.wrk import find_wrk

VARIANTS = {"on": {}, "off": {"SERVE_QUALITY_MONITORING": "false"}, "twin": {}}
PAYLOADS = ("1-row json", "100-row json")


@contextlib.contextmanager
def servers(model_dir: Path, rep: int) -> Iterator[dict[str, tuple[str, int]]]:
    env = clean_env({"OMP_NUM_THREADS": "1"})
    with contextlib.ExitStack() as stack:
        started = {}
        for name, extra in rotated(list(VARIANTS.items()), rep):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            command = pinned(0, tabserve_command(model_dir, port, "--log-level", "warning"))
            process = stack.enter_context(server_process(command, f"{base}/v2/health/ready", {**env, **extra}))
            started[name] = (base, process.pid)
        yield started


def run(model_dir: Path, example: str, connections: int, reps: int, duration_s: int, rounds: int = 1) -> dict[str, Any]:
    """`reps` fresh sets of servers, `rounds` duels each per payload and rival. One set reused for 16-30
    duels drifted to 0.943-0.953 where fresh ones gave 0.962-0.965 (2026-12-06): a pair of processes
    carries a bias of its own, so more fresh pairs beat longer ones; a few rounds each tighten the median
    (6 pairs x 3 rounds x 3 s: an identical pair measured 0.999, quartiles within 1 %)."""
    wrk = find_wrk()
    ratios: dict[str, dict[str, list[float]]] = {payload: {"off": [], "twin": []} for payload in PAYLOADS}
    bodies: dict[str, list[Any]] | None = None
    for rep in range(reps):
        with servers(model_dir, rep) as started:
            if bodies is None:
                bodies = draw_payloads(started["on"][0], example)[2]
            pids = [pid for _, pid in started.values()]
            for payload in PAYLOADS:
                rows = 1 if payload.startswith("1-") else 100
                for _, other in itertools.product(range(rounds), rotated(["off", "twin"], rep)):
                    wait_idle(pids)
                    mine, theirs = measure(wrk, [started["on"], started[other]], bodies[payload], connections, rows,
                                           duration_s)  # fmt: skip
                    ratio = mine.rows_per_thread_cpu_second / theirs.rows_per_thread_cpu_second
                    ratios[payload][other].append(ratio)
                    print(f"rep {rep + 1} {payload:>12} c={connections} on | {other:<4} {mine.requests_per_s:7.0f} | "
                          f"{theirs.requests_per_s:7.0f} req/s, {ratio:.3f} per CPU-s, "
                          f"errors {mine.errors + theirs.errors}", flush=True)  # fmt: skip
    return {"example": example, "connections": connections, "reps": reps, "rounds": rounds, "duration_s": duration_s,
            "ratios": ratios}  # fmt: skip


def judged(report: dict[str, Any]) -> list[Judgement]:
    """On / off per payload against issue 19's targets (loadtest/targets.py), on / twin as the noise."""
    figures = {
        f"monitoring, {payload}, {report['connections']} conn: on / off per CPU-s": ratio_figure(found["off"],
                                                                                                  found["twin"])
        for payload, found in report["ratios"].items()
    }  # fmt: skip
    return judge(figures, "quality-bench")


def summary(report: dict[str, Any]) -> str:
    shape = f"{report['reps']} x {report.get('rounds', 1)} x {report['duration_s']} s"
    lines = [f"input monitoring on / off, side by side at {report['connections']} connections "
             f"({shape}, rows per CPU second)", ""]  # fmt: skip
    return "\n".join(lines) + table(judged(report))
