"""Process and CPU accounting for the benchmark: pinning to a core, CPU seconds from /proc, steal, idleness.

Also what machine ran it. CPU figures come from Linux's /proc; pinning uses `taskset` or sched_setaffinity.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def pinned(core: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else command


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / ticks


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of the live threads of a process and of its descendants (a server's workers), to the
    nanosecond (schedstat); `cpu_seconds` counts 10-ms ticks and children only once they have exited.

    A thread that ends takes its time with it, so this is for servers whose threads live as long as they
    do (tabserve's are its event loop and thread pools, in each worker), not for Flask's thread per request.
    """
    total = 0
    for process in family(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in Path(f"/proc/{process}/task").iterdir():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def family(pid: int) -> list[int]:
    """`pid` and every live process descended from it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        process = pending.pop()
        found.append(process)
        pending.extend(children.get(process, ()))
    return found


def wait_idle(pids: list[int], timeout_s: float = 20.0) -> float:
    """Wait until the servers stop using CPU; return the seconds waited.

    Flask's threaded dev server keeps working through its backlog (about a second of queued requests at
    64 connections) after wrk stops; measured without this, that work landed on the next cell's server,
    which shares core 0, and cut it by up to 40 %.
    """
    processes = [process for pid in pids for process in family(pid)]  # the workers of a server with several

    def busy() -> float:
        total = 0.0
        for process in processes:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a worker that exited meanwhile
                total += cpu_seconds(process)
        return total

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = busy()
        time.sleep(0.25)
        if busy() - before < 0.01:
            break
    return time.monotonic() - started


def steal_ticks() -> tuple[int, int]:
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[7], sum(values)


@contextlib.contextmanager
def on_core(core: int) -> Iterator[None]:
    """Run this process on `core` for a while, as `pinned` does for a command."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def unpinned(pid: int) -> Iterator[None]:
    """Let `pid` and its descendants run on every core for a while, then pin them back where they were."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = {process: os.sched_getaffinity(process) for process in family(pid)}
    for process in before:
        os.sched_setaffinity(process, range(os.cpu_count() or 1))
    try:
        yield
    finally:
        for process, cores in before.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(process, cores)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
