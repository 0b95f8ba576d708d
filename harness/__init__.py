"""hwl harness: coordinator side (CLI, ONNX export, store, campaigns, deployment)."""
__version__ = "0.1.0"
