"""python -m serve: the only place that reads the real environment."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import click
import uvicorn

from serve import shutdown
from serve.app import create_app
from serve.fleet import STATE_ENV
from serve.http import http_protocol
from serve.settings import Settings

logger = logging.getLogger("tabserve")


def app_from_environment() -> Any:
    """The app factory each worker process calls when --workers > 1 (settings arrive as SERVE_* variables)."""
    settings = Settings.from_env(os.environ)
    configure_logging(settings)  # a spawned process starts with logging unconfigured
    return create_app(settings, shutdown.LIFECYCLE)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def size_workers(settings: Settings) -> Settings:
    """Never oversubscribe: workers x onnxruntime intra-op threads <= cores (onnxruntime issue #13808)."""
    cores = os.cpu_count() or 1
    threads = settings.ort_intra_op_threads
    if settings.workers * threads > cores:
        threads = max(1, cores // settings.workers)
        logger.warning("%d workers x %d onnxruntime threads > %d cores: using %d thread(s) per worker",
                       settings.workers, settings.ort_intra_op_threads, cores, threads)  # fmt: skip
        settings = dataclasses.replace(settings, ort_intra_op_threads=threads)
    logger.info("%d worker(s) x %d onnxruntime intra-op thread(s) on %d cores", settings.workers, threads, cores)
    return settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options from tabserve's settings, the same for one process and for several."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": http_protocol(settings.header_timeout_s),
        "lifespan": "on",
        "access_log": False,
        # tabserve reads neither the client's address nor the URL scheme, so uvicorn's X-Forwarded-*
        # middleware would only cost time (~1.5 us per request).
        "proxy_headers": False,
        "log_level": settings.log_level,
        # Seconds as given: uvicorn annotates these as int but hands them to timers that take floats.
        "timeout_keep_alive": settings.timeout_keep_alive_s,
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
    }


@click.command(context_settings={"show_default": True})
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository [env SERVE_MODEL_DIR, default models].",
)
@click.option("--host", default=None, help="Bind address [env SERVE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env SERVE_PORT, default 8000].")
@click.option(
    "--grpc-port", default=None, help="gRPC port, 'off' or 0 for any free one [env SERVE_GRPC_PORT, default 8001]."
)
@click.option("--workers", type=int, default=None, help="Worker processes [env SERVE_WORKERS, default 1].")
@click.option("--max-batch-size", type=int, default=None, help="Rows per onnxruntime call [SERVE_MAX_BATCH_SIZE].")
@click.option("--max-batch-delay-ms", type=float, default=None, help="Wait to grow batches [SERVE_MAX_BATCH_DELAY_MS].")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS certificate.")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS private key.")
@click.option("--log-level", default=None, help="debug, info, warning, error [SERVE_LOG_LEVEL].")
def main(**options: Any) -> None:
    """Serve every model in the repository over the Open Inference Protocol (settings: docs/configuration.md)."""
    try:
        # The gRPC port arrives as text ("off" or a number): parsed as the variable it stands for, which
        # worker processes read too.
        grpc_port = options.pop("grpc_port")
        if grpc_port is not None:
            os.environ["SERVE_GRPC_PORT"] = grpc_port
        settings = Settings.from_env(os.environ, **options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    configure_logging(settings)
    settings = size_workers(settings)
    common = uvicorn_options(settings)
    if settings.workers == 1:
        config = uvicorn.Config(create_app(settings, shutdown.LIFECYCLE), loop="uvloop", **common)
        shutdown.run(config, settings.shutdown_drain_s)
        return
    # Several processes: each builds its app from SERVE_* variables, so the flags travel as variables,
    # and metrics from every process are summed through prometheus-client's multiprocess directory.
    os.environ.update({f"SERVE_{key.upper()}": str(value) for key, value in options.items() if value is not None})
    os.environ["SERVE_ORT_INTRA_OP_THREADS"] = str(settings.ort_intra_op_threads)
    with (
        tempfile.TemporaryDirectory(prefix="tabserve-metrics-") as metrics_dir,
        tempfile.TemporaryDirectory(prefix="tabserve-state-") as state_dir,
    ):
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        os.environ[STATE_ENV] = state_dir  # load and unload through the API reach every worker (serve/fleet.py)
        # uvloop in every mode: it once crashed multiprocess servers here, but that no longer reproduces now
        # that sessions are created in each worker (10 start/load/SIGTERM cycles of 2 workers with gRPC, and
        # the suites' worker tests, clean), and it serves 8 % more than asyncio (23.3k vs 21.6k req/s).
        config = uvicorn.Config("serve.__main__:app_from_environment", factory=True, workers=settings.workers,
                                loop="uvloop", **common)  # fmt: skip
        shutdown.run(config, settings.shutdown_drain_s)


if __name__ == "__main__":
    main()
