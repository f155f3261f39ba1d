"""Load and unload through the API, applied by every worker process, not only the one that took the call.

With `--workers N` each process has its own repository, and a load or unload reaches one of them
(measured before this: after an unload, 5 of the next 6 infers answered 404 and 1 answered 200). The
change is written as the fleet's desired state, `desired.json` in a runtime directory the supervisor
creates (TABSERVE_STATE_DIR; nothing is written to the model directory, which may be read-only).
Every worker follows it within FOLLOW_S and records the generation it has applied; the worker that
took the call answers once every live worker has applied it, or 503 naming those that have not
within APPLY_TIMEOUT_S. A worker that starts later (uvicorn restarts a crashed one) applies the state
as it finds it. With one process there is no fleet and the repository is changed directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from serve import descriptions
from serve.errors import InvalidRequestError, ModelNotFoundError, WorkersBehindError
from serve.repository import ModelRepository

logger = logging.getLogger("tabserve.fleet")
STATE_ENV = "TABSERVE_STATE_DIR"
FOLLOW_S = 0.1
APPLY_TIMEOUT_S = 10.0


class Fleet:
    """This worker's view of the shared desired state: it writes changes and follows everyone's."""

    def __init__(self, folder: Path, repository: ModelRepository) -> None:
        self.folder = folder
        self.repository = repository
        self.pid = os.getpid()
        self.applied = 0
        self._reloads: dict[str, int] = {}
        self._seen: tuple[int, int] | None = None
        """The state file last read (inode, mtime): each write replaces the file, so a new inode is a change."""
        self._applying = asyncio.Lock()
        """One application of the state at a time: the follower and an API call may both apply one."""
        (folder / f"worker-{self.pid}").touch()
        self._record()

    def close(self) -> None:
        for name in (f"worker-{self.pid}", f"applied-{self.pid}"):
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()

    async def load(self, name: str) -> list[int]:
        """Load here (a refusal is the caller's 400, and nothing changes), then everywhere."""
        versions = await descriptions.load_model(self.repository, name)
        await self._everywhere("load", name)
        return versions

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)  # unknown here: 404, and nothing changes
        await self._everywhere("unload", name)

    async def follow(self) -> None:
        """Apply the desired state whenever it changes, until cancelled."""
        while True:
            try:
                await self._catch_up()
            except Exception:  # a half-written or vanished file must not stop this worker following
                logger.exception("following %s failed", self.folder / "desired.json")
            await asyncio.sleep(FOLLOW_S)

    async def _everywhere(self, op: str, name: str) -> None:
        with self._locked() as state:
            state["generation"] += 1
            generation = state["generation"]
            unloaded = set(state["unloaded"])
            if op == "unload":
                unloaded.add(name)
            else:
                unloaded.discard(name)
                state["reloads"][name] = generation
            state["unloaded"] = sorted(unloaded)
        if op == "load":
            self._reloads[name] = generation  # applied here before it was written
        # The state may hold other workers' changes this one has not followed yet: apply it whole.
        await self._apply(state)
        await self._wait_for(generation)

    async def _catch_up(self) -> None:
        path = self.folder / "desired.json"
        try:
            found = path.stat()
        except FileNotFoundError:
            return
        stamp = (found.st_ino, found.st_mtime_ns)
        if stamp == self._seen:
            return
        self._seen = stamp
        state = _read(path)
        if state["generation"] > self.applied:
            await self._apply(state)

    async def _apply(self, state: dict[str, Any]) -> None:
        """Make this worker's repository what `state` says (idempotent), then record its generation."""
        async with self._applying:
            await self._apply_locked(state)

    async def _apply_locked(self, state: dict[str, Any]) -> None:
        loaded = {entry.model.name for entry in self.repository.entries()}
        for name in state["unloaded"]:
            if name in loaded:
                with contextlib.suppress(ModelNotFoundError):
                    await self.repository.unload(name)
        for name, generation in state["reloads"].items():
            if name not in state["unloaded"] and self._reloads.get(name, 0) < generation:
                self._reloads[name] = generation
                refusals = await self.repository.refresh(only=name)
                if refusals:
                    logger.error("loading %s as the fleet asked: %s", name, "; ".join(refusals))
        self.applied = max(self.applied, state["generation"])
        self._record()

    async def _wait_for(self, generation: int) -> None:
        give_up = time.monotonic() + APPLY_TIMEOUT_S
        while True:
            behind = [pid for pid in self._live_workers() if self._applied_by(pid) < generation]
            if not behind:
                return
            if time.monotonic() > give_up:
                raise WorkersBehindError(
                    f"applied here, but worker process(es) {behind} did not apply it within {APPLY_TIMEOUT_S:g} s; "
                    "they may still: retry to see"
                )
            await asyncio.sleep(FOLLOW_S / 2)

    def _live_workers(self) -> list[int]:
        pids = []
        for path in self.folder.glob("worker-*"):
            pid = int(path.name.removeprefix("worker-"))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:  # a worker that died without cleaning up is not waited for
                continue
            except PermissionError:
                pass
            pids.append(pid)
        return sorted(pids)

    def _applied_by(self, pid: int) -> int:
        try:
            return int(json.loads((self.folder / f"applied-{pid}").read_text())["generation"])
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    def _record(self) -> None:
        path = self.folder / f"applied-{self.pid}"
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(json.dumps({"generation": self.applied}))
        staging.replace(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The desired state, read and rewritten under an exclusive lock (workers may change it at once)."""
        with open(self.folder / "desired.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.folder / "desired.json"
            state = _read(path) if path.exists() else {"generation": 0, "unloaded": [], "reloads": {}}
            yield state
            staging = path.with_name(".desired.json.tmp")
            staging.write_text(json.dumps(state))
            staging.replace(path)  # atomic: a follower reads the old state or the new one, never half


def _read(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(path.read_text())
    return state


IGNORED_PARAMETERS = {"load": frozenset(), "unload": frozenset({"unload_dependents"})}
"""Triton's load / unload parameters tabserve takes and ignores: it has no ensembles, so nothing depends on a
model. The others (config, file:...) would load something other than the folder's files: refused, not ignored."""


def check_parameters(action: str, names: Collection[str]) -> None:
    unsupported = sorted(set(names) - IGNORED_PARAMETERS[action])
    if unsupported:
        raise InvalidRequestError(
            f"{action} parameters {unsupported} are not supported: tabserve {action}s every version of the model "
            "as its folder in the model repository holds it"
        )


async def load(
    repository: ModelRepository, fleet: Fleet | None, name: str, parameters: Collection[str] = ()
) -> list[int]:
    """The repository API's load: in this process only, or in every worker."""
    check_parameters("load", parameters)
    if fleet is None:
        return await descriptions.load_model(repository, name)
    return await fleet.load(name)


async def unload(repository: ModelRepository, fleet: Fleet | None, name: str, parameters: Collection[str] = ()) -> None:
    check_parameters("unload", parameters)
    if fleet is None:
        await repository.unload(name)
    else:
        await fleet.unload(name)
