"""The Open Inference Protocol over gRPC: a second front end over the same core as REST.

A subpackage because it carries generated protobuf code (open_inference_pb2, from open_inference.proto)
beside its adapter modules: converters (messages <-> the core's documents), servicer (the RPCs) and
server (the grpc.aio server the app's lifespan starts and stops beside uvicorn).
"""
