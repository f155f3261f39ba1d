"""One timer for the earliest of many deadlines, instead of one per request (a timer costs ~1 us to set and cancel)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class EarliestDeadline:
    """Calls `expire(now)` when the earliest watched deadline passes; it returns the next one (inf: none)."""

    __slots__ = ("_expire", "_handle", "_loop", "at")

    def __init__(self, expire: Callable[[float], float]) -> None:
        self._expire = expire
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.at = math.inf
        """The deadline the timer is set for."""

    def watch(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Make sure the timer fires by `deadline` (loop time)."""
        if deadline < self.at:
            self._arm(loop, deadline)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self.at = None, math.inf

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._loop = loop
        self._handle, self.at = loop.call_at(at, self._fire), at

    def _fire(self) -> None:
        loop = self._loop
        assert loop is not None
        self._handle, self.at = None, math.inf
        following = self._expire(loop.time())
        if following < math.inf:
            self._arm(loop, following)
