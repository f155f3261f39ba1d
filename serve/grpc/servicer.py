"""inference.GRPCInferenceService: each RPC a thin adapter over the core REST uses, errors mapped by the error table.

Handlers are registered by hand under the service name clients call (see open_inference.proto for why
the messages live in another package). Keys, the in-flight limit, metrics and the access log are the
ones REST uses; a request's metrics carry protocol="grpc" and the HTTP status REST would have answered.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from serve import descriptions, explanations, fleet, protocol
from serve.access import RequestContext, finish, request_id
from serve.auth import KeyRing, presented_key
from serve.errors import (
    INTERNAL_ERROR,
    ClientDisconnectedError,
    ModelNotFoundError,
    ServeError,
    codes,
)
from serve.grpc import converters
from serve.grpc import open_inference_pb2 as pb
from serve.inflight import InFlight
from serve.repository import ModelEntry
from serve.state import AppState

SERVICE = "inference.GRPCInferenceService"
EXPLAIN_SERVICE = "tabserve.v2.ExplainService"
"""tabserve's extension: explanations, declared at the end of open_inference.proto."""
logger = logging.getLogger("tabserve.grpc")
Handler = Callable[[Any, grpc.aio.ServicerContext, RequestContext], Awaitable[Any]]
Rpc = tuple[Handler, type[Any], type[Any], bool, bool]
"""(handler, request type, response type, needs an admin key, is an inference request)"""


class Servicer:
    def __init__(self, state: AppState, keys: KeyRing, in_flight: InFlight) -> None:
        self.state = state
        self.keys = keys
        self.in_flight = in_flight
        self.rpcs: dict[str, Rpc] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse, False, False),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse, False, False),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse, False, False),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse, False, False),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse, False, False),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse, False, True),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse, False, False),
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse, False,
                                False),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse, False,
                                False),
            "RepositoryModelLoad": (self.repository_load, pb.RepositoryModelLoadRequest,
                                    pb.RepositoryModelLoadResponse, True, False),
            "RepositoryModelUnload": (self.repository_unload, pb.RepositoryModelUnloadRequest,
                                      pb.RepositoryModelUnloadResponse, True, False),
        }  # fmt: skip
        self.extensions: dict[str, Rpc] = {
            "ModelExplain": (self.model_explain, pb.ModelInferRequest, pb.ModelExplainResponse, False, True),
        }

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        """inference.GRPCInferenceService, and tabserve's ExplainService beside it."""
        return self._service(SERVICE, self.rpcs), self._service(EXPLAIN_SERVICE, self.extensions)

    def _service(self, service: str, rpcs: dict[str, Rpc]) -> grpc.GenericRpcHandler:
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                self._guarded(f"/{service}/{name}", handle, admin, counted),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (handle, request, response, admin, counted) in rpcs.items()
        }
        return grpc.method_handlers_generic_handler(service, methods)

    def _guarded(
        self, path: str, handle: Handler, admin: bool, counted: bool
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """Auth, the in-flight limit, error mapping, metrics and the access log around one RPC."""

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            record = RequestContext("grpc")
            status = codes(ClientDisconnectedError)[0]  # what an RPC cancelled by its client counts as
            entered = False
            metadata: dict[str, Any] = {}
            try:
                metadata = dict(context.invocation_metadata() or ())
                self._authorize(metadata, admin)
                if counted:
                    refusal = self.in_flight.refusal()
                    if refusal is not None:
                        self.state["metrics"].rejected.labels("in_flight").inc()
                        raise refusal
                    self.in_flight.count += 1
                    entered = True
                response = await handle(request, context, record)
                status = 200
                return response
            except ServeError as exc:
                status = exc.status
                await context.abort(grpc.StatusCode[exc.grpc_code], exc.message)
            except Exception:
                logger.exception("unexpected error in %s", path)
                status = INTERNAL_ERROR.status
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR.message)
            finally:
                if entered:
                    self.in_flight.count -= 1
                if counted:
                    logged = self.state["settings"].access_log
                    identifier = request_id(metadata.get("x-request-id"), generate=logged) if logged else None
                    log = ("POST", path, identifier) if logged else None
                    finish(record, self.state["metrics"], status, time.perf_counter() - started, log)

        return call

    def _authorize(self, metadata: dict[str, Any], admin: bool) -> None:
        if not self.keys.enabled:
            return
        key = presented_key(metadata.get("authorization"), metadata.get("x-api-key"))
        refusal = self.keys.refusal(key, admin, "'authorization: Bearer <key>' or 'x-api-key: <key>' metadata")
        if refusal is not None:
            raise refusal

    def _parsed(
        self, request: pb.ModelInferRequest, context: Any, record: RequestContext, scoring: bool
    ) -> tuple[ModelEntry, dict[str, Any], protocol.InferRequest, float | None]:
        """The model version, the V2 document, the validated request and its timeout, as REST has them
        (a request for `scoring` that its model's queue would refuse is refused before it is converted)."""
        entry = record.entry = self.state["repository"].get(request.model_name, request.model_version or None)
        if scoring:
            self.state["scorer"].admit(entry)
        document, tail = converters.infer_document(request)
        parsed = protocol.parse_infer_request(document, entry.model, tail, self.state["settings"].max_request_rows)
        timeout_s = parsed.timeout_s
        remaining = context.time_remaining()
        if remaining is not None:  # the caller's gRPC deadline is the request's deadline too
            timeout_s = min(math.inf if timeout_s is None else timeout_s, max(remaining, 0.0))
        record.rows = parsed.rows
        return entry, document, parsed, timeout_s

    async def model_infer(self, request: pb.ModelInferRequest, context: Any, record: RequestContext) -> Any:
        entry, _, parsed, timeout_s = self._parsed(request, context, record, scoring=True)
        outputs = await self.state["scorer"].score(entry, parsed.feed, parsed.rows, timeout_s, _on_leave(context))
        record.batch_rows = outputs.batch_rows
        return converters.infer_response(entry.model, parsed, outputs)

    async def model_explain(self, request: pb.ModelInferRequest, context: Any, record: RequestContext) -> Any:
        """An infer request explained: its parameters "method", "permutations" and "seed" as REST's."""
        record.explain = True
        entry, document, parsed, timeout_s = self._parsed(request, context, record, scoring=False)
        options = explanations.parse_options(document.get("parameters"), entry.model)
        explained = await self.state["explainer"].explain(entry.model, parsed.feed, parsed.rows, options, timeout_s)
        return converters.explain_response(explained, request.id)

    async def server_live(self, request: Any, context: Any, record: RequestContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any, record: RequestContext) -> Any:
        return pb.ServerReadyResponse(ready=self.state["lifecycle"].ready and len(self.state["repository"]) > 0)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any, record: RequestContext) -> Any:
        self.state["repository"].get(request.name, request.version or None)  # unknown: NOT_FOUND, as REST's 404
        return pb.ModelReadyResponse(ready=self.state["lifecycle"].ready)

    async def server_metadata(self, request: Any, context: Any, record: RequestContext) -> Any:
        return converters.to_message(descriptions.server_metadata(), pb.ServerMetadataResponse)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Any, record: RequestContext) -> Any:
        repository = self.state["repository"]
        model = repository.get(request.name, request.version or None).model
        document = descriptions.model_metadata(model, repository.versions(model.name))
        return converters.to_message(document, pb.ModelMetadataResponse)

    async def model_config(self, request: pb.ModelConfigRequest, context: Any, record: RequestContext) -> Any:
        model = self.state["repository"].get(request.name, request.version or None).model
        config = descriptions.model_config(model, self.state["settings"])
        return pb.ModelConfigResponse(config=converters.to_message(config, pb.ModelConfig))

    async def model_statistics(self, request: pb.ModelStatisticsRequest, context: Any, record: RequestContext) -> Any:
        stats = descriptions.model_statistics(self.state["repository"], request.name, request.version or None)
        return converters.to_message({"model_stats": stats}, pb.ModelStatisticsResponse)

    async def repository_index(self, request: pb.RepositoryIndexRequest, context: Any, record: RequestContext) -> Any:
        index = descriptions.repository_index(self.state["repository"], request.ready)
        return converters.to_message({"models": index}, pb.RepositoryIndexResponse)

    async def repository_load(
        self, request: pb.RepositoryModelLoadRequest, context: Any, record: RequestContext
    ) -> Any:
        await fleet.load(self.state["repository"], self.state["fleet"], request.model_name, list(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any, record: RequestContext
    ) -> Any:
        if not request.model_name:
            raise ModelNotFoundError("RepositoryModelUnload names no model")
        await fleet.unload(self.state["repository"], self.state["fleet"], request.model_name, list(request.parameters))
        return pb.RepositoryModelUnloadResponse()


def _on_leave(context: grpc.aio.ServicerContext) -> Callable[[Callable[[], object]], None]:
    """The RPC's end (answered, cancelled or past its deadline) tells the scorer; a done request ignores it."""

    def register(callback: Callable[[], object]) -> None:
        context.add_done_callback(lambda _: callback())

    return register
