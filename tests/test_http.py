"""tabserve's HTTP protocol: a response leaves in one write, nothing that must go out is held back, and
the app hears at once when a client leaves before its answer.

The write-counting tests drive uvicorn's real protocol code over a transport that records each write
call (one call is one send() system call on a real socket); the last test checks the same cases
against a real server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.server import ServerState

from serve.http import ON_DISCONNECT, ServeHttpProtocol

POST = b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.writes.append(b"".join(list_of_data))  # one call: one gathered system call on a socket

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def exchange(app: Any, *chunks: bytes) -> RecordingTransport:
    """Feed `chunks` to a connection served by `app`, letting the app run after each, then close the
    connection and let the app run again; return the transport."""
    server_state = ServerState()
    protocol = ServeHttpProtocol(
        config=Config(app, log_level="critical"), server_state=server_state, app_state={}, header_timeout_s=10.0
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
        await settle()
    protocol.connection_lost(None)
    await settle()
    return transport


async def settle() -> None:
    for _ in range(20):  # let the request's task (and a pipelined next one) run as far as it can
        await asyncio.sleep(0)


async def small_json(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def streamed(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    await send({"type": "http.response.body", "body": b"second"})


async def fails_after_start(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    raise RuntimeError("the app broke mid-response")


def test_a_small_response_is_one_write() -> None:
    transport = asyncio.run(exchange(small_json, POST))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(
        b'\r\n\r\n{"ok":true}'
    )


def test_pipelined_requests_get_one_write_each_in_order() -> None:
    transport = asyncio.run(exchange(small_json, POST + POST.replace(b"/infer", b"/second")))
    assert len(transport.writes) == 2 and all(write.endswith(b'{"ok":true}') for write in transport.writes)


def test_a_streamed_response_sends_its_headers_with_the_first_chunk() -> None:
    transport = asyncio.run(exchange(streamed, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(transport.writes) == 2
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].endswith(b"5\r\nfirst\r\n")
    assert transport.writes[1] == b"6\r\nsecond\r\n0\r\n\r\n"


def test_a_head_response_is_not_held_for_a_body_it_never_has() -> None:
    transport = asyncio.run(exchange(small_json, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    assert transport.writes[0].endswith(b"\r\n\r\n")


def test_100_continue_goes_out_before_the_body_arrives() -> None:
    headers = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    transport = asyncio.run(exchange(small_json, headers, b"{}"))
    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    # Not coalesced: clients ask for a 100 Continue before large uploads, where a write is noise.
    assert b"".join(transport.writes[1:]) == b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{"ok":true}'


def test_a_response_that_fails_after_its_start_still_shows_its_status_then_closes() -> None:
    transport = asyncio.run(exchange(fails_after_start, POST))
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    assert transport.closed


class Abandonment:
    """An app whose requests register for the client's departure; those to /answer are answered, the
    others wait for an answer that never comes, or register only after a pause."""

    def __init__(self) -> None:
        self.gone: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        path = scope["path"]
        if path == "/late":
            await asyncio.sleep(0.05)  # the client leaves meanwhile
        scope[ON_DISCONNECT](lambda: self.gone.append(path))
        if path == "/answer":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})
        else:
            await asyncio.Event().wait()


def test_a_client_that_leaves_before_its_answer_is_heard_of_once() -> None:
    app = Abandonment()
    asyncio.run(exchange(app, POST.replace(b"/infer", b"/wait")))
    assert app.gone == ["/wait"]


def test_answered_requests_are_forgotten_and_a_pipelined_one_keeps_its_callback() -> None:
    app = Abandonment()
    answered = POST.replace(b"/infer", b"/answer")
    transport = asyncio.run(exchange(app, answered * 3 + POST.replace(b"/infer", b"/wait")))
    assert len(transport.writes) == 3
    assert app.gone == ["/wait"]  # not the three answered before the connection closed


def test_a_request_that_registers_after_its_client_left_is_told_at_once() -> None:
    app = Abandonment()

    async def run() -> None:
        await exchange(app, POST.replace(b"/infer", b"/late"))
        await asyncio.sleep(0.1)  # the app registers now, on a connection already lost

    asyncio.run(run())
    assert app.gone == ["/late"]


@pytest.mark.slow
def test_real_server_answers_head_100_continue_and_pipelined_requests(server_url: str) -> None:
    host, port = server_url.removeprefix("http://").split(":")
    body = b'{"age": 35}'
    predict = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        reader = connection.makefile("rb")

        def head() -> tuple[bytes, int]:
            """The status line and Content-Length of the next response (a timeout or EOF fails the test)."""
            status, length = reader.readline(), 0
            while (line := reader.readline()) != b"\r\n":
                assert line, f"the connection closed inside a response that began {status!r}"
                name, _, value = line.partition(b":")
                length = int(value) if name.lower() == b"content-length" else length
            return status, length

        def response() -> tuple[bytes, bytes]:
            status, length = head()
            return status, reader.read(length)

        connection.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head()[0] == b"HTTP/1.1 200 OK\r\n"  # headers only: a HEAD response has no body
        connection.sendall(predict + b"Expect: 100-continue\r\n\r\n")
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n" and reader.readline() == b"\r\n"
        connection.sendall(body)
        assert response() == (b"HTTP/1.1 200 OK\r\n", b'{"predicted_weight":75.0}')
        connection.sendall((predict + b"\r\n" + body) * 2)
        assert [response() for _ in range(2)] == [(b"HTTP/1.1 200 OK\r\n", b'{"predicted_weight":75.0}')] * 2
        # Header values are bytes, not necessarily UTF-8: a Content-Encoding that is not is named, not a 500.
        connection.sendall(predict + b"Content-Encoding: gz\xffip\r\n\r\n" + body)
        status, answer = response()
        assert status == b"HTTP/1.1 400 Bad Request\r\n"
        assert json.loads(answer)["error"].startswith("unsupported Content-Encoding 'gz\xffip'")


def test_bytes_that_are_not_http_get_a_json_400_and_a_closed_connection() -> None:
    transport = asyncio.run(
        exchange(small_json, b"POST /infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    )
    head, _, body = b"".join(transport.writes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"content-type: application/json" in head
    assert b"connection: close" in head and transport.closed
    assert json.loads(body)["error"].startswith("the request is not valid HTTP/1.1")


def test_the_uvicorn_internals_tabserve_relies_on_are_still_there() -> None:
    """serve/http.py subclasses uvicorn's private HttpToolsProtocol (pyproject pins the tested versions):
    this names everything it relies on, so an upgrade that moves any of it fails here, by name."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    for method in ("connection_made", "on_message_begin", "on_headers_complete", "on_response_complete",
                   "connection_lost", "send_400_response"):  # fmt: skip
        assert callable(getattr(HttpToolsProtocol, method, None)), f"HttpToolsProtocol.{method}"
    assert list(inspect.signature(HttpToolsProtocol.__init__).parameters)[1:4] == [
        "config",
        "server_state",
        "app_state",
    ]
    protocol_source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.cycle", "self.transport", "self.loop"):
        assert attribute in protocol_source, f"HttpToolsProtocol no longer has {attribute}"
    cycle_source = inspect.getsource(RequestResponseCycle)
    for attribute in ("self.scope", "self.transport.write", "self.waiting_for_100_continue"):
        assert attribute in cycle_source, f"RequestResponseCycle no longer uses {attribute}"


def test_the_uvicorn_supervisor_internals_the_draining_workers_rely_on_are_still_there() -> None:
    """serve/shutdown.py runs its own server in uvicorn's worker processes: the supervisor must still build
    workers from the module's `Process` name, a worker must still build its server lazily, and every ended
    worker must still be joined (where its live gauges are dropped)."""
    import inspect

    from uvicorn.supervisors import multiprocess

    for method in ("init_processes", "keep_subprocess_alive", "restart_all"):
        assert "Process(self.config, self.sockets)" in inspect.getsource(getattr(multiprocess.Multiprocess, method))
    server = inspect.getsource(multiprocess.Process.server.fget)  # type: ignore[attr-defined]
    assert "self._server" in server and "Server(config=self.config)" in server
    assert "self.server.run(sockets)" in inspect.getsource(multiprocess.Process.target)
    assert list(inspect.signature(uvicorn.Server.shutdown).parameters) == ["self", "sockets"]
    for method in ("keep_subprocess_alive", "join_all"):
        assert "process.join()" in inspect.getsource(getattr(multiprocess.Multiprocess, method))
