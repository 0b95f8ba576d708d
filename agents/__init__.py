"""The device-side agent: measures models and answers the JSON-lines protocol.

Importing ``agents`` loads only the standard library and numpy-free modules; numpy is loaded
by the measurement code and each runtime (onnxruntime, torch, TVM) only when a request names it,
so a Raspberry Pi needs Python, numpy and one runtime. Start it with
``python -m agents serve --stdio``.
"""
__version__ = "0.1.0"

from agents.errors import HwlError, ProtocolError  # noqa: E402

__all__ = ["HwlError", "ProtocolError", "__version__"]
