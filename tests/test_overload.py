"""Overload: far past saturation for 30 s, excess requests are refused at once and service recovers."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import serving_process

pytestmark = pytest.mark.slow
OVERLOAD_S = 30
CONNECTIONS = 128
BODY = '{"inputs": [{"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [35]}]}'
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0 busy = 0 other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 503 then busy = busy + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local t = {{ok = 0, busy = 0, other = 0}}
  for _, thread in ipairs(threads) do
    t.ok = t.ok + thread:get("ok") t.busy = t.busy + thread:get("busy") t.other = t.other + thread:get("other")
  end
  io.write(string.format("STATUS %d %d %d %d\\n", t.ok, t.busy, t.other, summary.errors.timeout))
end
"""


def rss_mb(pid: int) -> float:
    line = next(row for row in Path(f"/proc/{pid}/status").read_text().splitlines() if row.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_far_past_saturation_excess_gets_fast_503s_accepted_requests_meet_deadlines_and_service_recovers(
    model_dir: Path, tmp_path: Path
) -> None:
    wrk = shutil.which("wrk")
    assert wrk, "wrk is needed (Debian package; make test installs it)"
    script = tmp_path / "overload.lua"
    script.write_text(WRK_SCRIPT)
    deadline_s = 2.0
    env = {"SERVE_MAX_QUEUE_SIZE": "16", "SERVE_REQUEST_TIMEOUT_S": str(deadline_s), "SERVE_MAX_BATCH_SIZE": "16"}
    with serving_process(model_dir, env) as (url, process):
        rss_before = rss_mb(process.pid)
        probe: list[tuple[int, float]] = []
        stop = threading.Event()

        def probe_loop() -> None:
            with httpx.Client(base_url=url, timeout=10) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    response = client.post("/v2/models/age-weight/infer", content=BODY)
                    probe.append((response.status_code, time.perf_counter() - started))

        # 128 connections against a 16-request queue: a refused client asks again at once, so the offered
        # load (served + refused) is several times what the server runs; the test checks it is >= 3x.
        command = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{OVERLOAD_S}s", "--timeout", "10s", "-s", str(script),
                   f"{url}/v2/models/age-weight/infer"]  # fmt: skip
        load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        prober = threading.Thread(target=probe_loop)
        prober.start()
        rss_peak = rss_before
        while load.poll() is None:
            rss_peak = max(rss_peak, rss_mb(process.pid))
            time.sleep(0.5)
        stop.set()
        prober.join()
        output, _ = load.communicate()
        ok, busy, other, timeouts = (int(value) for value in output.split("STATUS ")[1].split())
        # Recovery: the first request after the storm is served normally.
        started = time.perf_counter()
        after = httpx.post(f"{url}/v2/models/age-weight/infer", content=BODY)
        recovery_s = time.perf_counter() - started

    assert ok + busy >= 3 * ok, f"offered load is at least 3x what was served: {ok} served, {busy} refused"
    refused = [seconds for status, seconds in probe if status == 503]
    served = [seconds for status, seconds in probe if status == 200]
    assert {status for status, _ in probe} <= {200, 503}
    print(f"served {ok}, refused {busy}; probe: 503 p50/p95/max {np.percentile(refused, 50) * 1000:.1f}/"
          f"{np.percentile(refused, 95) * 1000:.1f}/{max(refused) * 1000:.1f} ms, 200 max {max(served) * 1000:.1f} ms, "
          f"rss {rss_before:.0f} -> {rss_peak:.0f} MB, recovery {recovery_s * 1000:.1f} ms")  # fmt: skip
    assert other == 0 and timeouts == 0, f"no other status, no client timeout ({other}, {timeouts})"
    assert refused and np.percentile(refused, 95) < 0.05, "a refusal takes milliseconds, not a queue's wait"
    assert served and max(served) < deadline_s, "an accepted request is answered within its deadline"
    assert rss_peak - rss_before < 100, f"memory stays bounded: {rss_before:.0f} -> {rss_peak:.0f} MB"
    # Served, and in well under a second: a server still working off the storm's backlog, or stuck, would
    # take seconds or fail. (0.11 s was seen on a loaded 2-core machine, so 0.1 s was too tight.)
    assert after.status_code == 200 and recovery_s < 1.0
