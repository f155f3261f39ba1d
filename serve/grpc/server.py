"""The grpc.aio server: started by the app's lifespan on uvicorn's loop, with the health and reflection services.

Limits follow REST's: a message may be as large as a body, TLS uses the same certificate and key. With
one worker the port is bound without SO_REUSEPORT, so a port already taken is an error, not a silent
second server; with several, each worker binds the shared port with it (gRPC's default).
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from serve.auth import KeyRing
from serve.grpc import open_inference_pb2 as pb
from serve.grpc.servicer import EXPLAIN_SERVICE, SERVICE, Servicer
from serve.inflight import InFlight
from serve.repository import ModelRepository
from serve.state import AppState, Lifecycle

logger = logging.getLogger("tabserve.grpc")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for Kubernetes' grpc probes: SERVING exactly when REST's readiness says ready."""

    def __init__(self, lifecycle: Lifecycle, repository: ModelRepository) -> None:
        self.lifecycle = lifecycle
        self.repository = repository

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> object:
        if request.service not in ("", SERVICE):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        ready = self.lifecycle.ready and len(self.repository) > 0
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


async def start_grpc(state: AppState, keys: KeyRing, in_flight: InFlight) -> grpc.aio.Server:
    settings = state["settings"]
    limit = settings.max_body_bytes
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", 4 * limit),  # answers are smaller than requests for these models
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    server = grpc.aio.server(options=options)
    servicer = Servicer(state, keys, in_flight)
    server.add_generic_rpc_handlers(servicer.handlers())
    health_pb2_grpc.add_HealthServicer_to_server(Health(state["lifecycle"], state["repository"]), server)
    names = (SERVICE, EXPLAIN_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=_reflection_pool(servicer))
    address = f"{settings.host}:{settings.grpc_port}"
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        credentials = grpc.ssl_server_credentials(
            [(settings.ssl_keyfile.read_bytes(), settings.ssl_certfile.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    await server.start()
    logger.info("gRPC (Open Inference Protocol) on %s:%d", settings.host, port)
    return server


def _reflection_pool(servicer: Servicer) -> descriptor_pool.DescriptorPool:
    """What server reflection describes: the service under its wire name, over tabserve's message package.

    A pool of its own, since the default one must not hold a second inference.GRPCInferenceService (a
    process that also imports tritonclient has its own there).
    """
    pool = descriptor_pool.DescriptorPool()
    for module in (pb, health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    package, _, name = SERVICE.rpartition(".")
    service_file = descriptor_pb2.FileDescriptorProto(
        name="tabserve/grpc_inference_service.proto", package=package, dependency=[pb.DESCRIPTOR.name], syntax="proto3"
    )
    service = service_file.service.add(name=name)
    for method, (_, request, response, _, _) in servicer.rpcs.items():
        service.method.add(
            name=method, input_type=f".{request.DESCRIPTOR.full_name}", output_type=f".{response.DESCRIPTOR.full_name}"
        )
    pool.Add(service_file)
    return pool
