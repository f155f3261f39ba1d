"""Export scikit-learn pipelines to parity-verified, versioned ONNX models.

The model repository this writes is the only contract with `serve/`; see docs/model-repository.md.
"""
