"""Clients that keep opening new connections, each sending one request, through a server's stop.

Every attempt ends one way: answered (an HTTP status line came back), refused (the connect failed, so
nothing was sent: fine during a stop), or lost (the request was sent and a reset or a bare close came
back instead of an answer: the failure a graceful stop must never produce). Raw sockets, not an HTTP
client, so a reset is never retried or folded into another error.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import dataclass, field


def http_request(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Outcomes:
    answered: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    lost: Counter[str] = field(default_factory=Counter)

    def total(self) -> int:
        return sum(self.answered.values()) + self.refused + sum(self.lost.values())


class ConnectionStorm:
    """`clients` threads sending `request` on a new connection each time, until stopped."""

    def __init__(self, port: int, request: bytes, clients: int = 16, host: str = "127.0.0.1") -> None:
        self.address = (host, port)
        self.request = request
        self.outcomes = Outcomes()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _attempt(self) -> tuple[str, int | str]:
        try:
            sock = socket.create_connection(self.address, timeout=5)
        except ConnectionRefusedError:
            return "refused", 0
        except OSError as exc:  # a connect that timed out also sent nothing
            return "refused", type(exc).__name__
        with sock:
            try:
                sock.sendall(self.request)
                reply = b""
                while b"\r\n" not in reply:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return "lost", "closed without an answer"
                    reply += chunk
            except OSError as exc:  # ConnectionResetError, BrokenPipeError, a read timeout
                return "lost", type(exc).__name__
        status_line = reply.split(b"\r\n", 1)[0].split()
        return "answered", int(status_line[1])

    def _client(self) -> None:
        while not self._stop.is_set():
            kind, detail = self._attempt()
            with self._lock:
                if kind == "answered":
                    self.outcomes.answered[int(detail)] += 1
                elif kind == "refused":
                    self.outcomes.refused += 1
                else:
                    self.outcomes.lost[str(detail)] += 1

    def __enter__(self) -> ConnectionStorm:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
