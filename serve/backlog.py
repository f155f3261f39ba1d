"""Closing a listener without resetting a connection the kernel has already accepted for it.

A listening socket's accept queue holds connections whose handshake is complete: their clients have
sent (or are sending) a request. Closing the listener resets every one of them, so a plain graceful
shutdown under traffic turns 13-16 requests per stop into TCP resets (measured with 16 clients
opening new connections through a SIGTERM). Here, before the listener closes, the kernel is told to
drop new SYNs (a socket filter), the server keeps accepting until the queue stays empty, and only then
does the close happen: a client that arrives later sees a refused connect, before it sent anything.

Linux only (a classic BPF filter and TCP_INFO's accept-queue length); elsewhere `quiesce` does nothing.
Some kernels refuse socket filters to a process without CAP_NET_ADMIN (this one, in a container, as a
non-root user; mainline kernels let any process filter its own sockets): there the queue is shrunk to
one connection and the close follows the moment it is seen empty, which narrows the window to
microseconds but cannot close it (measured in a container: 1 reset in 14 stops; docs/operations.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import struct
import time
from collections.abc import Iterable
from typing import Protocol

logger = logging.getLogger("tabserve")

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; not in Python's socket module


def _instruction(code: int, jump_true: int, jump_false: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jump_true, jump_false, k)


# A TCP socket's filter sees the segment from its TCP header: byte 13 holds the flags. A bare SYN (SYN
# set, ACK clear) starts a new connection and is dropped; everything else, including the last ACK of a
# handshake already under way, passes, so those connections still reach the queue and get answered.
_DROP_NEW_CONNECTIONS = b"".join(
    (
        _instruction(0x30, 0, 0, 13),  # ldb [13]
        _instruction(0x54, 0, 0, 0x12),  # and #(SYN|ACK)
        _instruction(0x15, 0, 1, 0x02),  # jeq #SYN ? drop : keep
        _instruction(0x06, 0, 0, 0),  # ret #0: drop
        _instruction(0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole segment
    )
)
_PROGRAM = ctypes.create_string_buffer(_DROP_NEW_CONNECTIONS)
_SOCK_FPROG = struct.pack("HP", len(_DROP_NEW_CONNECTIONS) // 8, ctypes.addressof(_PROGRAM))
_TCP_INFO_UNACKED = 24  # offset of tcpi_unacked: a listener's current accept-queue length


class Listener(Protocol):
    """What asyncio's and uvloop's server sockets have in common."""

    def fileno(self) -> int: ...


def _duplicate(listener: Listener) -> socket.socket:
    """A socket object of our own on the same kernel socket: options set on it apply to the listener."""
    return socket.socket(fileno=os.dup(listener.fileno()))


def refuse_new_connections(listener: Listener) -> bool:
    """True once the kernel drops new connections; False if it only holds fewer (the filter was refused)."""
    with _duplicate(listener) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _SOCK_FPROG)
            return True
        except PermissionError:
            sock.listen(0)  # room for one queued connection: fewer to lose if one slips in before the close
            return False


def queued_connections(listener: Listener) -> int:
    with _duplicate(listener) as sock:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_UNACKED + 8)
    queued: int = struct.unpack_from("I", info, _TCP_INFO_UNACKED)[0]
    return queued


async def quiesce(listeners: Iterable[Listener], settle_s: float = 0.05, limit_s: float = 2.0) -> bool:
    """Stop new connections and wait until the running server has accepted every queued one.

    The event loop keeps accepting and reading meanwhile; `settle_s` of an empty queue covers handshakes
    that were half done when the filter went on and lets the last accepted connections deliver their
    request. True once quiet, False if connections still queued after `limit_s` (the caller closes anyway).
    """
    unique = {listener.fileno(): listener for listener in listeners}
    tcp, refusing = [], True
    for listener in unique.values():
        try:
            refusing &= refuse_new_connections(listener)
            tcp.append(listener)
        except OSError as exc:  # not Linux, not TCP (a Unix socket): nothing to drain
            logger.debug("listener %d keeps its plain close: %s", listener.fileno(), exc)
    if not refusing:
        logger.warning(
            "socket filters are not permitted here (this kernel wants CAP_NET_ADMIN for them): closing "
            "the listener as soon as its queue is empty, which a connection may still race"
        )
    give_up = time.monotonic() + limit_s
    quiet_since = time.monotonic()
    while time.monotonic() < give_up:
        if any(queued_connections(listener) for listener in tcp):
            quiet_since = time.monotonic()
        elif not refusing or time.monotonic() - quiet_since >= settle_s:
            # Without the filter new connections keep coming, so waiting for a quiet spell only lets more in.
            return True
        await asyncio.sleep(0.005 if refusing else 0)
    logger.warning("connections still queued after %.1f s; closing the listener anyway", limit_s)
    return False
