"""Stopping without failing a request, with one process or several: readiness off, a drain, a quiet close.

On SIGTERM readiness turns 503 at once while requests are still served for `shutdown_drain_s` (load
balancers notice and stop routing); then new connections are refused at the kernel, the ones already
queued are accepted and answered (serve/backlog.py), and uvicorn's graceful shutdown lets in-flight
requests finish. A second signal stops at once. With `--workers N` every worker does the same: the
supervisor forwards SIGTERM to each, and each runs this server.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from prometheus_client import multiprocess as multiprocess_files
from uvicorn.supervisors import multiprocess

from serve import backlog
from serve.metrics import multiprocess as metrics_shared
from serve.state import Lifecycle

logger = logging.getLogger("tabserve")

# One per process. The signal handler (the server) and readiness (the app) must share it, and in a
# worker process the server is unpickled and the app built by a factory: a module attribute is what
# both reach.
LIFECYCLE = Lifecycle()


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_s: float) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining or self.drain_s <= 0 or not LIFECYCLE.ready:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        LIFECYCLE.ready = False
        logger.info("signal %d: readiness off; draining for %.1f s, then shutting down", sig, self.drain_s)
        timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:
            listeners = [listener for server in self.servers for listener in server.sockets]
            await backlog.quiesce([*listeners, *(sockets or [])])
        await super().shutdown(sockets)


class WorkerProcess(multiprocess.Process):
    """uvicorn's worker process, running the draining server instead of the plain one."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], drain_s: float) -> None:
        super().__init__(config, sockets)
        self.drain_s = drain_s

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(self.config, self.drain_s)
        return self._server

    def join(self) -> None:
        """Wait for the worker to end, then drop its live gauges (the quality windows, explains in flight):
        a worker that died, or was replaced, must not count in their sums. Its counters stay."""
        super().join()
        if metrics_shared() and self.pid is not None:
            multiprocess_files.mark_process_dead(self.pid)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _draining_workers(drain_s: float) -> Iterator[None]:
    # uvicorn's supervisor names its worker class as a module global and offers no hook; swapped only
    # while our supervisor runs (tests/test_http.py pins the uvicorn internals this relies on).
    original = multiprocess.Process
    multiprocess.Process = functools.partial(WorkerProcess, drain_s=drain_s)  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]


def run(config: uvicorn.Config, drain_s: float) -> None:
    """Serve `config` in this process, or in `config.workers` worker processes, until a signal stops it."""
    if config.workers == 1:
        DrainingServer(config, drain_s).run()
        return
    sock = config.bind_socket()
    with _draining_workers(drain_s):
        multiprocess.Multiprocess(config, sockets=[sock]).run()
