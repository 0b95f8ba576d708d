"""`hwl --help`, each command's `--help` and a usage error load no heavy package: `hwl --help` took 3 s (scipy,
scikit-learn and pandas came in through package imports the parsers did not need)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import COMMAND_MODULES, MODULE_COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["pandas", "ray", "scipy", "sklearn", "torch"]
COMMANDS = [command for module in COMMAND_MODULES for command in MODULE_COMMANDS.get(module, (module,))]

# Runs each argv (a JSON list of them) through `hwl` in one fresh process; prints their exit statuses and which heavy
# packages were imported.
RUN = f"""
import contextlib, io, json, sys
from harness.cli import main

codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as stop:
            codes.append(stop.code)
print(json.dumps({{"codes": codes, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _hwl(*argvs: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(argvs)], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def _subcommands(command: str) -> list[str]:
    """`hwl campaign`'s run, resume, ...; none for a command without subcommands."""
    parser = build_parser([command])._subparsers._group_actions[0].choices[command]
    actions = parser._subparsers._group_actions if parser._subparsers else ()
    return [sub for action in actions for sub in action.choices]


def test_hwl_help_imports_no_heavy_package():
    ran = _hwl(["--help"], [])
    assert ran["codes"] == [0, 2] and ran["heavy"] == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_commands_help_imports_no_heavy_package(command):
    argvs = [[command, "--help"], *([command, sub, "--help"] for sub in _subcommands(command))]
    ran = _hwl(*argvs)
    assert ran["codes"] == [0] * len(argvs) and ran["heavy"] == []


@pytest.mark.parametrize("argv", [
    ["onboard", "nope", "--space", "nb201"],  # no --out
    ["train", "--space", "nb201", "--n-pretrain", "0", "--out", "m.pt"],
    ["evaluate", "--task", "N0", "--first-seed", "x"],
    ["zcp", "nb201", "--archs", "1", "--init-seed", "-3", "--out", "z.parquet"],
    ["predict", "m.pt", "--device", "d"],  # no --archs, no --out
    ["adapt", "m.pt", "--out", "a.pt"],  # no --device
], ids=" ".join)
def test_a_usage_error_imports_no_heavy_package(argv):
    ran = _hwl(argv)
    assert ran["codes"] == [2] and ran["heavy"] == []
