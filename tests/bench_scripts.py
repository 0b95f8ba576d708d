"""The benchmark scripts (``scripts/bench_*``, files without a .py suffix) loaded as modules, for tests that call
their ``main`` in this process."""
import importlib.machinery
import importlib.util
import runpy
import sys
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


def refused(name: str, flags: list, monkeypatch, capsys) -> str:
    """The last stderr line of ``scripts/NAME FLAGS`` run in this process, which must stop with exit code 2 (a usage
    error) before its work."""
    script = next(s for s in SCRIPTS if s.name == name)
    monkeypatch.setattr(sys, "argv", [str(script), *flags])
    with pytest.raises(SystemExit) as stop:
        load(script).main()
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def run_main(script: Path, args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """``script ARGS`` run in this process as its command line runs it (its ``__main__`` block: a benchmark's user
    error is one line there, an experiment's a traceback): (exit status, stdout, stderr). A fresh interpreter would
    spend seconds on imports this one has made already."""
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the repository first; taken back after
    try:
        runpy.run_path(str(script), run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
        if not isinstance(code, int):  # sys.exit("message"): the interpreter prints it and exits 1
            print(code, file=sys.stderr)
            code = 1
    out, err = capsys.readouterr()
    return code, out, err
