"""tabserve's server: ONNX Runtime sessions behind micro-batching, the Open Inference Protocol over Starlette."""

__version__ = "0.1.0"
