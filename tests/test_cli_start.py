"""`hwl --help`, each command's `--help` and a usage error load no heavy package: `hwl --help` took 3 s (scipy,
scikit-learn and pandas came in through package imports the parsers did not need), and a command's refusal of a bad
flag value (an unknown task, device or proxy, an output's suffix) up to 1.1 s (pandas, paramiko)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["pandas", "paramiko", "ray", "scipy", "sklearn", "torch"]

# Runs each argv (a JSON list of them) through `hwl` in one fresh process; prints their exit statuses, what they said
# on stderr and which heavy packages were imported.
RUN = f"""
import contextlib, io, json, sys
from harness.cli import main

codes, said = [], []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            codes.append(main(argv))
        except SystemExit as stop:
            codes.append(stop.code)
    said.append(err.getvalue())
print(json.dumps({{"codes": codes, "said": said, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
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


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_commands_help_imports_no_heavy_package(command):
    argvs = [[command, "--help"], *([command, sub, "--help"] for sub in _subcommands(command))]
    ran = _hwl(*argvs)
    assert ran["codes"] == [0] * len(argvs) and ran["heavy"] == []


REFUSALS = [  # (argv, what its one line says)
    (["onboard", "nope", "--space", "nb201"], "the following arguments are required: --out"),
    (["train", "--space", "nb201", "--n-pretrain", "0", "--out", "m.pt"], "argument --n-pretrain"),
    (["evaluate", "--task", "N0", "--first-seed", "x"], "argument --first-seed"),
    (["zcp", "nb201", "--archs", "1", "--init-seed", "-3", "--out", "z.parquet"], "argument --init-seed"),
    (["predict", "m.pt", "--device", "d"], "the following arguments are required: --archs, --out"),
    (["adapt", "m.pt", "--out", "a.pt"], "the following arguments are required: --device"),
    # refused by the command itself, before it imports what it runs with
    (["onboard", "pi", "--space", "nb201", "--out", "{tmp}/p.pt", "--budget", "1"], "--budget must be at least 2"),
    (["train", "--space", "nb201", "--method", "nope", "--out", "{tmp}/m.pt"], "unknown method 'nope'"),
    (["onboard", "nope", "--space", "nb201", "--out", "{tmp}/p.pt"], "unknown device 'nope'"),
    (["onboard", "local-ort-1t", "--space", "nb201", "--out", "{tmp}/p.pt", "--method", "nope"],
     "unknown method 'nope'"),
    (["evaluate", "--task", "X9"], "unknown task 'X9'"),
    (["evaluate", "--task", "N0", "--method", "nope"], "unknown method 'nope'"),
    (["evaluate", "--task", "N0", "--samples", "x"], "--samples must be comma-separated integers"),
    (["predict", "m.pt", "--device", "d", "--archs", "1", "--out", "{tmp}/x.txt"], "use a .parquet or .csv file"),
    (["zcp", "nb201", "--archs", "1", "--proxies", "nope", "--out", "{tmp}/z.parquet"], "unknown proxies ['nope']"),
    (["search", "--device", "d", "--max-latency-ms", "1", "--accuracy-table", "a.csv", "--seeds", "0"],
     "--seeds must be at least 1"),
    (["search", "--device", "d", "--max-latency-ms", "1", "--accuracy-table", "a.csv", "--method", "nope"],
     "unknown method 'nope'"),
    (["campaign", "run", "--space", "nb201", "--archs", "1", "--devices", "nope", "--store", "{tmp}/lab.db"],
     "unknown device 'nope'"),
    (["campaign", "run", "--space", "nb201", "--archs", "1", "--devices", "local-ort-1t", "--store", "{tmp}/lab.db",
      "--canary-every", "-1"], "--canary-every must be >= 0"),
    (["campaign", "export", "--store", "{tmp}/lab.db", "--format", "help", "--out", "{tmp}/x.parquet"],
     "is a Parquet name, but --format help writes CSV"),
    (["deploy", "nope"], "unknown device 'nope'"),
    (["status", "nope"], "unknown device 'nope'"),
    (["logs", "nope"], "unknown device 'nope'"),
]


@pytest.mark.parametrize("argv, said", REFUSALS, ids=[" ".join(argv) for argv, _ in REFUSALS])
def test_a_usage_error_imports_no_heavy_package(argv, said, tmp_path):
    ran = _hwl([word.format(tmp=tmp_path) for word in argv])
    assert ran["codes"] == [2] and said in ran["said"][0] and ran["heavy"] == []
