"""Driving wrk: the Lua script that sends prepared bodies in turn, running one wrk per server, reading its result.

Also how wrk compares with one locust process as a load generator.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtest.processes import pinned, unpinned

WRK_SCRIPT = """
local requests = {{}}
local sent = 0

local function request_from(path, headers)
  local file = io.open(path, "rb")
  local body = file:read("*a")
  file:close()
  return wrk.format("POST", nil, headers, body)
end

init = function(args)
{loads}
end

-- Every request is built once, in init: picking the next costs wrk next to nothing.
request = function()
  sent = sent % #requests + 1
  return requests[sent]
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  local format = '{{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %f, "p99_us": %f}}\\n'
  io.write(string.format(format, summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def find_wrk() -> str:
    """The wrk on PATH. The benchmark installs nothing: `make system` (scripts/system-deps.sh) installs wrk."""
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError(
            "wrk is needed for the benchmark but is not on PATH: "
            "run `make system` (scripts/system-deps.sh) to install it"
        )
    return found


def wrk_script(folder: Path, payloads: list[Any]) -> Path:
    """A wrk script in `folder` that sends `payloads` in turn, each built once."""
    loads = []
    for index, payload in enumerate(payloads):
        body_file = folder / f"body-{index}"
        body_file.write_bytes(payload.body)
        headers = ", ".join(f'["{key}"] = "{value}"' for key, value in payload.headers.items())
        loads.append(f'  requests[{index + 1}] = request_from("{body_file}", {{{headers}}})')
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT.format(loads="\n".join(loads)))
    return script


def run_wrks(
    wrk: str, bases: list[str], payloads: list[Any], connections: int, duration_s: int
) -> list[dict[str, Any]]:
    """One wrk per base URL, all started together from core 1, sending `payloads` in turn for `duration_s`."""
    with tempfile.TemporaryDirectory() as folder:
        script = wrk_script(Path(folder), payloads)
        commands = [
            pinned(1, [wrk, "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s", "-s", str(script),
                       base + payloads[0].path])
            for base in bases
        ]  # fmt: skip
        running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for command in commands]
        try:
            outputs = [process.communicate(timeout=duration_s + 30)[0] for process in running]
        finally:
            for process in running:  # a wrk that hung must not outlive its cell, nor load the next one
                if process.poll() is None:
                    process.kill()
                    process.wait()
    for command, process in zip(commands, running, strict=True):
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, command)
    return [json.loads([line for line in out.splitlines() if line.startswith("{")][-1]) for out in outputs]


def run_wrk(wrk: str, base: str, payloads: list[Any], connections: int, duration_s: int) -> dict[str, Any]:
    return run_wrks(wrk, [base], payloads, connections, duration_s)[0]


LOCUST_PROCESSES = 2
"""Locust processes the bench sets against one (issue 21: >= 1.3x one process on this 2-core machine)."""
GENERATOR_ROUNDS = 3
"""Rounds of wrk, one locust process and LOCUST_PROCESSES; the ratio of one round moved by up to 15 % (below)."""


def compare_generators(wrk: str, bare: tuple[str, int], payloads: list[Any], duration_s: int) -> dict[str, Any]:
    """What each load generator reaches against the bare endpoint at 64 connections, GENERATOR_ROUNDS times
    (medians, and each round's ratio): wrk and one locust process, both on core 1 with the server alone on
    core 0; then LOCUST_PROCESSES locust processes (locust's --processes), as `loadtest run --processes`
    would, sharing both cores with the server, which is unpinned meanwhile.

    Left on core 0, the server gets at most half of it beside a locust worker (the scheduler's share) where
    the best split gives it two thirds (`cpu_ceiling`): 0.85-1.14x one process in four rounds, median 1.01,
    against 0.98-1.12x, median 1.08, in eleven rounds unpinned (measured here, 2026-12-05)."""
    url, pid = bare
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        locustfile = Path(folder) / "ceiling.py"
        locustfile.write_text(
            "import itertools\n"
            "from locust import FastHttpUser, task, constant\n"
            f"BODIES = itertools.cycle({[payload.body for payload in payloads]!r})\n"
            "class Ceiling(FastHttpUser):\n"
            "    wait_time = constant(0)\n"
            "    @task\n"
            "    def post(self):\n"
            f"        self.client.post({payloads[0].path!r}, data=next(BODIES))\n"
        )
        command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--host", url,
                   "-u", "64", "-r", "64", "-t", f"{duration_s}s", "--json", "--skip-log"]  # fmt: skip
        several = [*command[:3], "--processes", str(LOCUST_PROCESSES), *command[3:]]
        for _ in range(GENERATOR_ROUNDS):
            wrk_result = run_wrk(wrk, url, payloads, 64, duration_s)
            one = locust_rps(
                subprocess.run(pinned(1, command), capture_output=True, text=True, timeout=duration_s + 60)
            )
            with unpinned(pid):
                more = locust_rps(subprocess.run(several, capture_output=True, text=True, timeout=duration_s + 60))
            rounds.append({"wrk_rps": wrk_result["requests"] / (wrk_result["duration_us"] / 1e6),
                           "locust_rps": one, "locust_processes_rps": more})  # fmt: skip
    medians = {name: statistics.median(each[name] for each in rounds) for name in rounds[0]}
    return {**medians, "locust_processes": LOCUST_PROCESSES, "cores": os.cpu_count() or 1,
            "ratios": [each["locust_processes_rps"] / each["locust_rps"] for each in rounds]}  # fmt: skip


def cpu_ceiling(generator: dict[str, Any]) -> float:
    """The most LOCUST_PROCESSES locust processes can reach over one, from the rates `compare_generators`
    measured: one process keeps a core busy at `locust_rps`, the server (one process, so at most `wrk_rps`)
    one at `wrk_rps`, and all of them share the machine's cores: rate * (1 / locust_rps + 1 / wrk_rps) <= cores."""
    one, server = generator["locust_rps"], generator["wrk_rps"]
    shared = generator["cores"] / (1 / one + 1 / server)
    return float(min(generator["locust_processes"] * one, server, shared) / one)


def locust_rps(completed: subprocess.CompletedProcess[str]) -> float:
    """Requests per second from locust's --json totals (with --processes, the master's merged document, last)."""
    from loadtest.runner import master_totals

    totals = master_totals(completed.stdout)
    if not totals:
        raise RuntimeError(f"locust failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    requests = sum(entry["num_requests"] for entry in totals)
    elapsed = max(entry["last_request_timestamp"] for entry in totals) - min(entry["start_time"] for entry in totals)
    return float(requests / elapsed)
