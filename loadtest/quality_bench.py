"""What input monitoring costs: tabserve with it against tabserve without, side by side, with an A/A twin.

The bench's method (loadtest/bench.py): every server on core 0, one wrk each from core 1, servers loaded
at the same time for `duration_s`, compared by rows per CPU second of their threads. All three servers
(on, off, and "twin", a second one with monitoring on) are loaded together in every duel, so each is
treated alike: "on / off" is the two monitored servers' geometric mean against the unmonitored one,
monitoring's cost; "on / twin" is how far from 1 two identical servers land in the same duel, the noise
any on / off ratio carries. Fresh processes every repetition; the order they start and are loaded in
rotates.

Duels of two, "on" against "off" and then against "twin", measured a bias instead: "on" was loaded
twice as long as either, and with all three servers identical it scored 0.990 against "off" and 0.988
against "twin" (64 of 72 duels under 1, 2026-12-06), a point and more of cost that was not monitoring.
"""

from __future__ import annotations

import contextlib
import math
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
    """`reps` fresh sets of servers, `rounds` three-way duels each per payload. One set reused for 16-30
    duels drifted to 0.943-0.953 where fresh ones gave 0.962-0.965 (2026-12-06): a set of processes
    carries a bias of its own, so more fresh sets beat longer ones; a few rounds each tighten the median.

    ratios[payload]["off"] holds each duel's on / off, ratios[payload]["twin"] its on / twin."""
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
                for duel in range(rounds):
                    wait_idle(pids)
                    names = rotated(list(VARIANTS), rep + duel)
                    found = measure(wrk, [started[name] for name in names], bodies[payload], connections, rows,
                                    duration_s)  # fmt: skip
                    per_cpu = {name: each.rows_per_thread_cpu_second for name, each in zip(names, found, strict=True)}
                    on_off = math.sqrt(per_cpu["on"] * per_cpu["twin"]) / per_cpu["off"]
                    on_twin = per_cpu["on"] / per_cpu["twin"]
                    ratios[payload]["off"].append(on_off)
                    ratios[payload]["twin"].append(on_twin)
                    served = " | ".join(
                        f"{name} {each.requests_per_s:5.0f}" for name, each in zip(names, found, strict=True)
                    )
                    print(f"rep {rep + 1} {payload:>12} c={connections} {served} req/s; on / off {on_off:.3f}, "
                          f"on / twin {on_twin:.3f} per CPU-s, errors {sum(each.errors for each in found)}",
                          flush=True)  # fmt: skip
    return {"example": example, "connections": connections, "reps": reps, "rounds": rounds, "duration_s": duration_s,
            "method": "three-way", "ratios": ratios}  # fmt: skip


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
    lines = [f"input monitoring on / off, on, off and twin loaded together at {report['connections']} connections "
             f"({shape}, rows per CPU second)", ""]  # fmt: skip
    return "\n".join(lines) + table(judged(report))
