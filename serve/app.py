"""The ASGI application: route table, lifespan that owns every resource, error rendering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from serve import endpoints, inference
from serve.access import http_request_id
from serve.auth import AuthMiddleware, KeyRing
from serve.cache import ResponseCache
from serve.errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    RouteNotFoundError,
    ServeError,
    render,
    send_error,
)
from serve.explanations import Explainer
from serve.fleet import STATE_ENV, Fleet
from serve.gc_tuning import tuned_gc
from serve.grpc.server import start_grpc
from serve.inflight import InFlight
from serve.metrics import Metrics
from serve.repository import ModelRepository
from serve.scoring import Scorer
from serve.settings import Settings
from serve.shared_tallies import PUBLISH_S
from serve.state import AppState, Lifecycle

logger = logging.getLogger("tabserve")
STATIC_DIR = Path(__file__).with_name("static")


def routes() -> list[BaseRoute]:
    GET, POST = ["GET"], ["POST"]
    table: list[tuple[str, Callable[..., Any], list[str]]] = [
        ("/v2/health/live", endpoints.server_live, GET),
        ("/v2/health/ready", endpoints.server_ready, GET),
        ("/v2", endpoints.server_metadata, GET),
        ("/v2/models/stats", endpoints.model_stats, GET),
        ("/v2/repository/index", endpoints.repository_index, POST),
        ("/v2/repository/models/{model_name}/load", endpoints.repository_load, POST),
        ("/v2/repository/models/{model_name}/unload", endpoints.repository_unload, POST),
        ("/metrics", endpoints.metrics, GET),
        ("/openapi.json", endpoints.openapi, GET),
        ("/predict", inference.predict_seed, POST),
    ]
    for prefix in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"):
        table += [
            (prefix, endpoints.model_metadata, GET),
            (prefix + "/ready", endpoints.model_ready, GET),
            (prefix + "/config", endpoints.model_config, GET),
            (prefix + "/stats", endpoints.model_stats, GET),
            (prefix + "/quality", endpoints.model_quality, GET),
            (prefix + "/infer", inference.infer, POST),
            (prefix + "/explain", inference.explain, POST),
        ]
    for prefix in ("/v1/models/{model_name}", "/v1/models/{model_name}/versions/{model_version}"):
        table.append((prefix + ":predict", inference.predict_records, POST))
        table.append((prefix + ":explain", inference.explain_records, POST))
        table.append((prefix + "/golden", endpoints.model_golden, GET))
    pages: list[BaseRoute] = [
        Route("/", endpoints.playground, methods=GET),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return [Route(path, endpoint, methods=methods) for path, endpoint, methods in table] + pages


class InferenceFront:
    """ASGI front door: inference POSTs go straight to their ASGI endpoints, everything else to Starlette.

    The same route table drives both, so a POST that matches here is one Starlette would have sent to the
    same endpoint; what is skipped is Starlette's middleware and Request wrapping (about 25 us per request).
    """

    MAX_REMEMBERED_PATHS = 1024

    def __init__(self, app: Starlette, routes: list[BaseRoute], in_flight: InFlight) -> None:
        self.app = app
        self.in_flight = in_flight
        self.fast = [
            (route, route.endpoint)
            for route in routes
            if isinstance(route, Route) and isinstance(route.endpoint, inference.InferenceEndpoint)
        ]
        # Clients post to the same few paths over and over: a dict lookup instead of regexes (~1 us).
        self._matches: dict[str, tuple[inference.InferenceEndpoint, dict[str, str]] | None] = {}

    def _match(self, path: str) -> tuple[inference.InferenceEndpoint, dict[str, str]] | None:
        if path in self._matches:
            return self._matches[path]
        found = None
        for route, endpoint in self.fast:
            match = route.path_regex.match(path)
            if match:
                found = endpoint, match.groupdict()
                break
        if len(self._matches) >= self.MAX_REMEMBERED_PATHS:
            self._matches.clear()
        self._matches[path] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, params = found
        in_flight = self.in_flight
        refusal = in_flight.refusal()
        if refusal is not None:
            scope["state"]["metrics"].rejected.labels("in_flight").inc()
            await send_error(send, refusal, http_request_id(scope["headers"]))
            return
        scope["path_params"] = params  # shared between requests to the same path: read, never written
        in_flight.count += 1
        try:
            await endpoint(scope, receive, send)
        finally:
            in_flight.count -= 1


async def render_serve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServeError)
    status, headers, body = render(exc)
    response = Response(body, status)
    response.raw_headers = headers  # already complete: content type and length included
    return response


async def render_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (routing, static files) as the ServeErrors they are."""
    assert isinstance(exc, HTTPException)
    error: ServeError
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        error = MethodNotAllowedError(message, {"Allow": allowed})
    elif exc.status_code == HTTPStatus.NOT_FOUND:
        error = RouteNotFoundError(f"no route for {request.method} {request.url.path}")
    else:  # Starlette raises no other in tabserve's routes; a 4xx stays a 4xx
        error = (InvalidRequestError if exc.status_code < 500 else ServeError)(str(exc.detail))
    return await render_serve_error(request, error)


QUALITY_FLUSH_S = 1.0


async def _every(interval_s: float, call: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            call()
        except Exception:  # a full disk must not stop the figures for good: try again next time
            logger.exception("%s failed; retrying in %.2f s", getattr(call, "__qualname__", call), interval_s)


def create_app(settings: Settings, lifecycle: Lifecycle | None = None) -> ASGIApp:
    """Create the ASGI app; sessions, batchers and threads exist only inside the lifespan.

    `lifecycle` lets the process (its SIGTERM handler) turn readiness off before the server stops.
    """
    keys = KeyRing.from_settings(settings)
    lifecycle = lifecycle or Lifecycle()
    in_flight = InFlight(settings.max_in_flight)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        metrics = Metrics()
        (logger.info if keys.enabled else logger.warning)(keys.describe())
        # Batches above inline_batch_rows run here; one thread per core that onnxruntime may use.
        threads = max(1, (os.cpu_count() or 1) // settings.ort_intra_op_threads // settings.workers)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ort") as executor:
            repository = ModelRepository(settings, executor, metrics)
            await repository.refresh()  # start-up is the first scan; later ones pick up new versions
            if not len(repository):
                logger.warning("no servable model under %s: readiness stays false", settings.model_dir)
            poller = (
                asyncio.create_task(repository.poll(settings.poll_interval_s)) if settings.poll_interval_s else None
            )
            metrics.watch_quality(repository.monitors)
            # A reader of the quality figures (/metrics, /quality) has them counted and exported first, so
            # one process exports nothing between reads: each second under load that cost ~1 % of its CPU.
            # Several workers read each other's from files, so there each exports every second, which
            # bounds how stale another worker's scrape finds them.
            flusher = (
                asyncio.create_task(_every(QUALITY_FLUSH_S, repository.publish_quality))
                if settings.quality_monitoring and metrics.shared
                else None
            )
            # With several workers each one's request counts reach the others' scrapes within PUBLISH_S.
            publisher = asyncio.create_task(_every(PUBLISH_S, metrics.publish)) if metrics.shared else None
            cache = ResponseCache(settings.cache_max_entries) if settings.cache_max_entries else None
            explainer = Explainer(settings, metrics)
            state_dir = os.environ.get(STATE_ENV)
            fleet = Fleet(Path(state_dir), repository) if state_dir and settings.workers > 1 else None
            follower = asyncio.create_task(fleet.follow()) if fleet is not None else None
            state: AppState = {
                "settings": settings,
                "repository": repository,
                "lifecycle": lifecycle,
                "metrics": metrics,
                "scorer": Scorer(settings.request_timeout_s, cache),
                "explainer": explainer,
                "fleet": fleet,
            }
            # gRPC shares this loop, these models, batchers, keys and limits: one lifespan for both.
            grpc_server = await start_grpc(state, keys, in_flight) if settings.grpc_port is not None else None
            lifecycle.ready = True
            try:
                with tuned_gc(settings.gc_threshold):
                    yield state
            finally:
                lifecycle.ready = False
                try:
                    if grpc_server is not None:
                        await grpc_server.stop(settings.shutdown_timeout_s)  # in-flight RPCs finish first
                    for task in (poller, flusher, follower, publisher):
                        if task is not None:
                            task.cancel()
                    explainer.close()
                    if fleet is not None:
                        fleet.close()
                    await repository.close()
                    if flusher is not None:  # a worker's last rows reach the files the others' scrapes read
                        repository.publish_quality()
                finally:
                    metrics.publish()  # the last requests of a worker that stops stay counted

    table = routes()
    app = Starlette(
        routes=table,
        lifespan=lifespan,
        exception_handlers={ServeError: render_serve_error, HTTPException: render_http_error},
    )
    front = InferenceFront(app, table, in_flight)
    return AuthMiddleware(front, keys) if keys.enabled else front  # no key, no layer on the hot path
