"""uvicorn's httptools protocol with three changes: a header timeout, one write per small response, and
a way for the app to hear at once that a request's client has gone.

uvicorn closes idle keep-alive connections but sets no timer while a request's headers arrive: a
client that connects and trickles (or never sends) headers keeps its connection forever. This
protocol, passed through uvicorn's public `http=` option, closes such a connection after
`header_timeout_s`, counted from the connection or from the first byte of each request.

uvicorn writes a response's status line and headers when the app sends `http.response.start`, and its
body when the app sends `http.response.body`: two send() system calls for every response. Measured with
wrk at 64 connections on 1-row inference requests, holding the header block back and writing it with the
first body bytes took the server from ~56 to ~50-52 us of CPU per request. aiohttp coalesces its responses
the same way (aio-libs/aiohttp#10991).

An ASGI app learns of a disconnect only by awaiting `receive()`, which for a request waiting in a batch
queue means a watcher task per request (~40-50 us of CPU each in an A/B at 64 connections, 8 % of a
100-row request). The protocol instead offers the app `scope[ON_DISCONNECT](callback)`: a list append,
called back from `connection_lost`, so every queued request can be dropped when its client leaves.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serve.errors import InvalidRequestError, RequestTimeoutError, ServeError, render

FRESH_CONNECTION_GRACE_S = 0.25
"""At shutdown, how long a connection that has sent nothing yet may take to send its request."""

ON_DISCONNECT = "tabserve.on_disconnect"
"""Scope key: `register(callback)`; the callback runs if the client leaves before the response is complete."""


def _closing_response(error: ServeError) -> bytes:
    """A whole response to write on a connection that closes after it (no ASGI cycle to send it through)."""
    status, headers, body = render(error)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode(),
        *(name + b": " + value for name, value in headers),
    ]
    if (b"connection", b"close") not in headers:
        lines.append(b"connection: close")
    return b"\r\n".join([*lines, b"", body])


HEADER_TIMEOUT_RESPONSE = _closing_response(RequestTimeoutError("request headers took too long to send"))
INVALID_HTTP_RESPONSE = _closing_response(
    InvalidRequestError(
        "the request is not valid HTTP/1.1 (its request line, a header or a chunk); the connection closes"
    )
)


def _has_unread_bytes(transport: asyncio.Transport) -> bool:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as peek:
            return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing to read (BlockingIOError), or the connection is already gone
        return False


def http_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """What uvicorn's `http=` option takes: a class it calls once per connection with its own arguments.

    A partial of the class passes for one (uvicorn only calls it), and unlike a subclass made here it
    pickles: uvicorn's worker processes receive their config pickled.
    """
    return cast(type[asyncio.Protocol], functools.partial(ServeHttpProtocol, header_timeout_s=header_timeout_s))


class ServeHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers_since: float | None = None
        self._on_disconnect: list[Callable[[], object]] = []
        self._lost = False
        self._answer_then_close = False
        self._message_begun = False
        self._close_timer: asyncio.TimerHandle | None = None

    # Requests only note the time: one timer per connection, re-armed when it fires, instead of a
    # timer set and cancelled per request (~1 us each on the hot path).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_headers_since = self.loop.time()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._check_headers)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_begun = True
        self._awaiting_headers_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._awaiting_headers_since = None
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle is previous:  # a WebSocket upgrade, which hands the connection over
            return
        cycle.scope[ON_DISCONNECT] = self._when_disconnected  # type: ignore[literal-required]
        if self._answer_then_close:
            cycle.keep_alive = False
        # Every response writes body bytes after its header block (b"" when empty) except a HEAD
        # response, which has none; a 100 Continue is written before the response and must not wait.
        if cycle.scope["method"] != "HEAD" and not cycle.waiting_for_100_continue:
            cycle.transport = HeldHeaders(self.transport)  # type: ignore[assignment]

    def shutdown(self) -> None:
        # uvicorn closes a connection with no request under way at once. If the client's next request
        # has arrived but not been read yet (a connection accepted just before the listener closed, or a
        # keep-alive client a moment early), that close would reset it: answer it, then close. A
        # connection that has carried nothing yet was accepted moments ago and its request is on the way:
        # it gets FRESH_CONNECTION_GRACE_S to arrive before the close.
        if self.cycle is None:
            self._answer_then_close = True
            self._close_timer = self.loop.call_later(FRESH_CONNECTION_GRACE_S, self._close_if_still_idle)
            return
        if self.cycle.response_complete and _has_unread_bytes(self.transport):
            self._answer_then_close = True
            return
        super().shutdown()

    def _close_if_still_idle(self) -> None:
        # A request that has begun is left to finish (the header timeout bounds one that never does).
        begun = self._message_begun or _has_unread_bytes(self.transport)
        if self.cycle is None and not begun and not self.transport.is_closing():
            self.transport.close()

    def _when_disconnected(self, callback: Callable[[], object]) -> None:
        if self._lost:  # gone before the app asked
            callback()
        else:
            self._on_disconnect.append(callback)

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers bytes httptools cannot parse (a bad chunk, a broken request line) in text/plain;
        # every answer here is {"error": ...}. uvicorn has logged `msg` already.
        self.transport.write(INVALID_HTTP_RESPONSE)
        self.transport.close()

    def on_response_complete(self) -> None:
        # Before super(): that may start a pipelined request, whose callbacks are its own.
        self._on_disconnect.clear()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._lost = True
        super().connection_lost(exc)
        callbacks, self._on_disconnect = self._on_disconnect, []
        for callback in callbacks:
            callback()

    def _check_headers(self) -> None:
        since, now = self._awaiting_headers_since, self.loop.time()
        if since is None or now - since < self.header_timeout_s:
            wait = self.header_timeout_s if since is None else since + self.header_timeout_s - now
            self._header_timer = self.loop.call_later(wait, self._check_headers)
            return
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(HEADER_TIMEOUT_RESPONSE)
            self.transport.close()


class HeldHeaders:
    """One response's view of the connection: its first write (the header block) waits for the next.

    Everything else passes through to the connection's transport. Closing sends what is held first,
    as uvicorn would have: a response that fails after its start still shows its status line.
    """

    __slots__ = ("_transport", "_held", "_started")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            self._held = data
            return
        if self._held is not None:
            # Two buffers, one system call: writelines gathers them (uvloop) or joins them (asyncio).
            self._transport.writelines((self._held, data))
            self._held = None
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
