"""Server settings: one frozen object, read once from SERVE_* environment variables (or flags)."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _parse_port_or_off(text: str) -> int | None:
    return None if text.strip().lower() == "off" else int(text)


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


# Keyed by the fields' resolved types (typing.get_type_hints), not their annotation text.
PARSERS: dict[Any, Callable[[str], Any]] = {
    int: int,
    float: float,
    str: str,
    bool: _parse_bool,
    Path: Path,
    Path | None: Path,
    str | None: str,
    int | None: _parse_port_or_off,
    tuple[str, ...]: _parse_list,
}


@dataclass(frozen=True)
class Settings:
    model_dir: Path = Path("models")
    """Model repository: <name>/<version>/model.onnx + model.json (docs/model-repository.md)."""
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001
    """The Open Inference Protocol over gRPC (Triton's port); "off" serves none, 0 picks a free port and logs it."""
    workers: int = 1
    """Server processes; ONNX Runtime threads per process are sized so workers x threads <= cores."""
    default_model: str = "age-weight"
    """The model behind the seed article's POST /predict."""

    max_batch_size: int = 2048
    """Rows per onnxruntime call; a request with more rows runs alone. Large, as Triton's FIL backend
    configures tree models (32,768): a tabular model's per-row cost keeps falling with the batch, and at
    256 two 100-row requests filled one, which ran inline and left the other clients' requests unread
    (docs/benchmarks.md, "The ninth round")."""
    max_batch_delay_ms: float = 0.0
    """Wait this long for a full batch, even when idle (Triton's max_queue_delay); 0 = never."""
    adaptive_batch_wait_ms: float = 0.5
    """Under sustained load only, wait up to this long for max_batch_size rows or a wave of requests (waves.py)."""
    max_queue_size: int = 1024
    """Requests waiting per model version; beyond it new ones get 503 + Retry-After at once."""
    inline_batch_rows: int = 256
    """Batches up to this many rows run on the event loop; larger ones in a worker thread (docs/operations.md)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_request_rows: int = 10_000
    quality_monitoring: bool = True
    """Count what callers send per input feature against the training reference (serve/quality.py)."""
    quality_window_rows: int = 10_000
    """Recent rows per model version behind each drift score (PSI), all workers together."""
    max_explain_rows: int = 16
    """Rows one explain request may ask to explain; beyond, 413."""
    max_explain_model_rows: int = 2_000_000
    """Model rows one explain request may cost (rows x coalitions x background rows); beyond, 413."""
    max_explain_in_flight: int = 4
    """Explain requests being handled at once; beyond, 503 + Retry-After. They run one at a time."""
    request_timeout_s: float = 10.0
    """Deadline from arrival to answer; past it the request gets 504 instead of running late."""
    timeout_keep_alive_s: float = 5.0
    header_timeout_s: float = 10.0
    """A request's headers must arrive within this (from the connection or the request's first byte)."""
    max_in_flight: int = 4096
    """Inference requests being handled at once (all models); beyond it 503 + Retry-After at once."""
    poll_interval_s: float = 2.0
    """How often the model directory is scanned for new versions (0 = never; the load API still works)."""
    shutdown_drain_s: float = 1.0
    """On SIGTERM, readiness turns 503 and requests are still served this long before the listener closes."""
    shutdown_timeout_s: float = 20.0
    """After the drain, how long in-flight and queued requests may take to finish."""

    gc_threshold: int = 50_000
    """Net new container objects between the cyclic GC's youngest collections (Python's default is 700)."""

    ort_intra_op_threads: int = 1
    ort_inter_op_threads: int = 1
    ort_allow_spinning: bool = False
    """Spinning threads burn a core between calls: off, since batches arrive in bursts."""

    log_level: str = "info"
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Comma list of keys for inference and metadata; with none here or in the file, auth is off."""
    api_keys_file: Path | None = None
    """One sha256 hex digest of a key per line."""
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    """Keys that may also load and unload models."""
    admin_keys_file: Path | None = None
    cache_max_entries: int = 0
    """Response cache size in requests (LRU); 0 = off. Only requests of up to 64 rows are cached."""
    access_log: bool = False
    """One JSON line per inference request (request id, model, version, rows, status, latency, batch)."""

    def __post_init__(self) -> None:
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"SERVE_GRPC_PORT must be a port (0 picks one) or 'off', got {self.grpc_port!r}")
        positive = ("port", "workers", "max_batch_size", "max_queue_size", "max_body_bytes", "max_request_rows",
                    "ort_intra_op_threads", "ort_inter_op_threads", "max_in_flight", "gc_threshold", "max_explain_rows",
                    "max_explain_model_rows", "max_explain_in_flight", "quality_window_rows")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"SERVE_{name.upper()} must be > 0, got {getattr(self, name)!r}")
        for name in ("cache_max_entries", "max_batch_delay_ms", "adaptive_batch_wait_ms", "request_timeout_s",
                     "timeout_keep_alive_s", "header_timeout_s", "poll_interval_s", "shutdown_drain_s",
                     "shutdown_timeout_s"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"SERVE_{name.upper()} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, prefix: str = "SERVE_", **overrides: Any) -> Settings:
        """Build from `environ`; an unknown SERVE_* key or a bad value raises ValueError naming it."""
        fields = {item.name: item for item in dataclasses.fields(cls)}
        parsers = _parsers(cls)
        values: dict[str, Any] = {}
        for key, text in environ.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :].lower()
            if name not in fields:
                raise ValueError(f"unknown setting {key}; known: {', '.join(prefix + n.upper() for n in fields)}")
            try:
                values[name] = parsers[name](text)
            except ValueError as exc:
                raise ValueError(f"{key}={text!r}: {exc}") from None
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


def _parsers(cls: type[Settings]) -> dict[str, Callable[[str], Any]]:
    """Each field's parser from its type; a field of a type with none is a TypeError naming it."""
    hints = typing.get_type_hints(cls)
    unknown = {item.name: hints[item.name] for item in dataclasses.fields(cls) if hints[item.name] not in PARSERS}
    if unknown:
        raise TypeError(f"Settings field(s) with no SERVE_* parser for their type: {unknown}; add them to PARSERS")
    return {item.name: PARSERS[hints[item.name]] for item in dataclasses.fields(cls)}


_parsers(Settings)  # at import: a field added with a new type fails here, not when someone sets it
