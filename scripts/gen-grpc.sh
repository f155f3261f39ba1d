#!/usr/bin/env bash
# Regenerate serve/grpc/open_inference_pb2.py(.pyi) from serve/grpc/open_inference.proto with the pinned grpcio-tools
# (its protoc matches the protobuf runtime the server pins; tests/test_grpc.py checks the files are current).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-serve/grpc}
python -m grpc_tools.protoc --proto_path=serve/grpc --python_out="$out" --pyi_out="$out" serve/grpc/open_inference.proto
