"""The server-wide limit on inference requests being handled at once, shared by every front end."""

from __future__ import annotations

from serve.errors import InFlightLimitError


class InFlight:
    __slots__ = ("count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def refusal(self) -> InFlightLimitError | None:
        """The error to answer at once when the limit is reached, else None (then `count` is the caller's to
        raise and lower around the request)."""
        if self.count < self.limit:
            return None
        return InFlightLimitError(f"the server is handling {self.limit} inference requests, its limit; retry shortly")
