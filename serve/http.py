"""uvicorn's httptools protocol with a header timeout, so a slow client cannot hold a connection.

uvicorn closes idle keep-alive connections but sets no timer while a request's headers arrive: a
client that connects and trickles (or never sends) headers keeps its connection forever. This
protocol, passed through uvicorn's public `http=` option, closes such a connection after
`header_timeout_s`, counted from the connection or from the first byte of each request.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 10.0


class HeaderTimeoutProtocol(HttpToolsProtocol):
    # A class attribute, not a constructor argument: uvicorn builds the protocol itself, and worker
    # processes import this class afresh (they read SERVE_HEADER_TIMEOUT_S from their environment).
    header_timeout_s = float(os.environ.get("SERVE_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers_since: float | None = None

    # Requests only note the time: one timer per connection, re-armed when it fires, instead of a
    # timer set and cancelled per request (~1 us each on the hot path).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_headers_since = self.loop.time()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._check_headers)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._awaiting_headers_since = None
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _check_headers(self) -> None:
        since, now = self._awaiting_headers_since, self.loop.time()
        if since is None or now - since < self.header_timeout_s:
            wait = self.header_timeout_s if since is None else since + self.header_timeout_s - now
            self._header_timer = self.loop.call_later(wait, self._check_headers)
            return
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b'content-length: 49\r\n\r\n{"error":"request headers took too long to send"}'
            )
            self.transport.close()
