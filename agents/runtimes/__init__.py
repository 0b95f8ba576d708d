"""Runtime adapters, imported only when a request names them.

``onnxruntime`` (ONNX file; CPU or CUDA execution provider), ``torch`` (eager, from an
architecture key), ``tvm`` (ONNX -> Relax -> compiled library, timed by TVM's own timer) and
``command`` (an external benchmark tool whose output is parsed). :func:`available` checks what is
installed without importing anything heavy.
"""
from __future__ import annotations

import importlib
import importlib.util

from agents.errors import RuntimeUnavailable

# runtime name -> (adapter module, top-level package it needs)
ADAPTERS = {
    "onnxruntime": ("agents.runtimes.ort", "onnxruntime"),
    "torch": ("agents.runtimes.torch_eager", "torch"),
    "tvm": ("agents.runtimes.tvm_vm", "tvm"),
    "command": ("agents.runtimes.command", None),
}


def available() -> tuple[str, ...]:
    """Runtime names whose package is importable here (found, not imported)."""
    return tuple(name for name, (_, pkg) in ADAPTERS.items()
                 if pkg is None or importlib.util.find_spec(pkg) is not None)


def load(name: str):
    """The adapter module for a runtime name; raises RuntimeUnavailable naming the choices."""
    if name not in ADAPTERS:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; valid runtimes: {', '.join(ADAPTERS)}")
    module, pkg = ADAPTERS[name]
    if pkg is not None and importlib.util.find_spec(pkg) is None:
        raise RuntimeUnavailable(f"runtime {name!r} needs the Python package {pkg!r}, which is not "
                                 f"installed on this device; installed runtimes: {', '.join(available())}")
    return importlib.import_module(module)


__all__ = ["ADAPTERS", "available", "load"]
