"""The benchmark scripts (``scripts/bench_*``, files without a .py suffix) loaded as modules, for tests that call
their ``main`` in this process."""
import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("bench_*"))


def load(script: Path):
    """The script as a module, its ``main`` not run; the test is skipped where an optional runtime it imports (tvm, a
    GPU build) is missing on this machine."""
    loader = importlib.machinery.SourceFileLoader(f"_bench_{script.name}", str(script))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    try:
        loader.exec_module(module)
    except ImportError as exc:
        pytest.skip(f"{script.name}: {exc}")
    return module
