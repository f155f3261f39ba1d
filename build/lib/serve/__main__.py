"""python -m serve: the only place that reads the real environment."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click
import uvicorn

from serve.app import create_app
from serve.settings import Settings


@click.command(context_settings={"show_default": True})
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository [env SERVE_MODEL_DIR, default models].",
)
@click.option("--host", default=None, help="Bind address [env SERVE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env SERVE_PORT, default 8000].")
@click.option("--max-batch-size", type=int, default=None, help="Rows per onnxruntime call [SERVE_MAX_BATCH_SIZE].")
@click.option("--max-batch-delay-ms", type=float, default=None, help="Wait to grow batches [SERVE_MAX_BATCH_DELAY_MS].")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS certificate.")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS private key.")
@click.option("--log-level", default=None, help="debug, info, warning, error [SERVE_LOG_LEVEL].")
def main(**options: Any) -> None:
    """Serve every model in the repository over the Open Inference Protocol (see README for SERVE_* settings)."""
    try:
        settings = Settings.from_env(os.environ, **options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_keep_alive=int(settings.timeout_keep_alive_s),
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
    )


if __name__ == "__main__":
    main()
