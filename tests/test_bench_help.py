"""`scripts/bench_* --help`: each script's description is its docstring's whole first paragraph."""
import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("bench_*"))


def _words(text: str) -> str:
    """The text as one line: argparse wraps it anew, also after a hyphen ('fine-' / 'tune')."""
    return re.sub(r"\s+", " ", re.sub(r"-\n\s*", "-", text)).strip()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_shows_the_whole_first_paragraph(script, monkeypatch, capsys):
    """bench_accuracy's help stopped at 'and the' (the docstring's first line, a sentence cut where it wraps)."""
    loader = importlib.machinery.SourceFileLoader(f"_bench_{script.name}", str(script))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    try:
        loader.exec_module(module)
    except ImportError as exc:  # an optional runtime (tvm, a GPU build) this machine lacks
        pytest.skip(f"{script.name}: {exc}")
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 0
    first = _words(module.__doc__.split("\n\n")[0])
    assert first in _words(capsys.readouterr().out), script.name
