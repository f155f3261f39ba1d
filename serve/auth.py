"""API keys: Bearer or X-API-Key, compared as sha256 digests in constant time; admin keys for repository changes.

Keys come from SERVE_API_KEYS / SERVE_ADMIN_KEYS (comma lists) or *_FILE (one sha256 hex digest per
line, so the file never holds a usable key). Health endpoints and the playground page stay open; with
no key configured auth is off, and the server says so when it starts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from serve.access import http_request_id
from serve.errors import PermissionDeniedError, ServeError, UnauthenticatedError, send_error
from serve.settings import Settings

Role = Literal["user", "admin"]
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/", "/favicon.ico", "/openapi.json"})
OPEN_PREFIXES = ("/static/",)
ADMIN_PATH = re.compile(r"^/v2/repository/models/[^/]+/(load|unload)$")
HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_digests(path: Path | None) -> tuple[bytes, ...]:
    if path is None:
        return ()
    digests = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not HEX_DIGEST.match(text):
            raise ValueError(
                f"{path}:{number}: expected a sha256 hex digest (64 hex characters), got {len(text)} characters"
            )
        digests.append(bytes.fromhex(text))
    return tuple(digests)


@dataclass(frozen=True)
class KeyRing:
    users: tuple[bytes, ...]
    admins: tuple[bytes, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        users = tuple(digest(key) for key in settings.api_keys) + read_digests(settings.api_keys_file)
        admins = tuple(digest(key) for key in settings.admin_keys) + read_digests(settings.admin_keys_file)
        return cls(users, admins)

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.admins)

    def role(self, key: str) -> Role | None:
        """Compare against every digest (no early exit), so timing says nothing about which matched."""
        presented = digest(key)
        admin = user = False
        for known in self.admins:
            admin |= hmac.compare_digest(presented, known)
        for known in self.users:
            user |= hmac.compare_digest(presented, known)
        return "admin" if admin else "user" if user else None

    def refusal(self, key: str | None, admin: bool, how: str) -> ServeError | None:
        """Why a request presenting `key` may not go on (`admin`: it loads or unloads), or None; `how` says how
        to send a key in the caller's protocol."""
        if key is None:
            return UnauthenticatedError(f"missing API key: send {how}")
        role = self.role(key)
        if role is None:
            return PermissionDeniedError("API key not recognised")
        if admin and role != "admin":
            return PermissionDeniedError("loading and unloading models needs an admin key")
        return None

    def describe(self) -> str:
        if not self.enabled:
            return "API keys: OFF (no key configured): every endpoint is open to anyone who can connect"
        return (
            f"API keys: on ({len(self.users)} user key(s), {len(self.admins)} admin key(s)); health endpoints stay open"
        )


HTTP_KEY_HEADERS = "'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


class AuthMiddleware:
    """Keys checked before any endpoint; create_app installs it only when a key is configured."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        refusal = self.keys.refusal(_presented_key(scope), bool(ADMIN_PATH.match(path)), HTTP_KEY_HEADERS)
        if refusal is not None:
            await send_error(send, refusal, http_request_id(scope["headers"]))
            return
        await self.app(scope, receive, send)


def _presented_key(scope: Scope) -> str | None:
    headers = dict(scope["headers"])
    authorization, api_key = headers.get(b"authorization"), headers.get(b"x-api-key")
    return presented_key(
        None if authorization is None else authorization.decode("latin-1"),
        None if api_key is None else api_key.decode("latin-1"),
    )


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key from 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (HTTP headers or gRPC metadata)."""
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key is not None and api_key.strip():
        return api_key.strip()
    return None
