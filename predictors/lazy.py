"""Package names that import their module on first use (PEP 562 module ``__getattr__``).

A package ``__init__`` that imported all its modules made every light import of it (an error class, a tuple of
names for a command's flags) pay for scipy, scikit-learn or pandas: `hwl onboard --help` took 2 s.
"""
from __future__ import annotations

import importlib
import sys


def lazy_names(package: str, homes: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: ``homes`` maps each public name to the module (in the package) that
    defines it; the module is imported when the name is first read, and the name kept in the package after."""
    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__
