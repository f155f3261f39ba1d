"""Atomic, versioned writes into the model repository: models/<name>/<version>/.

A version is staged in a hidden sibling folder and renamed into place in one step, so a crashed or
refused export never leaves a partial version, and two exporters racing for one version number both
succeed with different numbers. See docs/model-repository.md for the layout.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from contract import NAME_PATTERN, STAGING_PREFIX


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r} must match {NAME_PATTERN.pattern} (it becomes a folder and a URL part)")
    return name


def versions(model_dir: Path, name: str) -> list[int]:
    """Published versions of `name`, ascending; staging folders and stray files are not versions."""
    folder = model_dir / name
    if not folder.is_dir():
        return []
    return sorted(int(child.name) for child in folder.iterdir() if child.name.isdigit() and child.is_dir())


def publish(model_dir: Path, name: str, render: Callable[[int], dict[str, bytes]]) -> tuple[int, Path]:
    """Write `render(version)` as the next version of `name`; return (version, folder).

    The files depend on the version (the card and the ONNX metadata carry it), so a lost race
    re-renders them for the next number.
    """
    folder = model_dir / check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    staging.chmod(0o755)  # mkdtemp makes it 0700; a server running as another user must read it
    try:
        version = max(versions(model_dir, name), default=0) + 1
        while True:
            for stale in staging.iterdir():
                stale.unlink()
            for filename, content in render(version).items():
                _write_synced(staging / filename, content)
            target = folder / str(version)
            try:
                # rename() of a directory onto an existing non-empty directory fails: that is the lock.
                if target.exists():
                    raise FileExistsError(target)
                os.rename(staging, target)
            except OSError as exc:
                if not isinstance(exc, FileExistsError) and exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                version += 1
                continue
            _sync_directory(folder)
            return version, target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_synced(path: Path, content: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
