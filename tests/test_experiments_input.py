"""The research scripts under scripts/experiments: a missing argument, an unknown task or a missing replay file is
one line, not a traceback."""
from pathlib import Path

import pytest

from tests.bench_scripts import run_main

EXPERIMENTS = Path(__file__).resolve().parents[1] / "scripts" / "experiments"


@pytest.mark.parametrize("args, says", [
    (["bayes_lab.py"], "usage: scripts/experiments/bayes_lab.py TASK[,TASK..] GROUP+GROUP.. [KS]"),
    (["bayes_lab.py", "N0,X9", "hw"], "bayes_lab.py: unknown task(s) X9; valid: N0, F0, F1, F2, F3, F4, F5"),
    (["lodo_check.py", "X9"], "lodo_check.py: unknown task(s) X9; valid: N0, F0, F1, F2, F3, F4, F5"),
    (["target_stops.py", "no-such-replay.json"],
     "target_stops.py: error: no replay file no-such-replay.json (bench_onboard --json writes one)"),
    (["calibration_leak.py", "no-such-train.json", "test.json"],
     "calibration_leak.py: error: no replay file no-such-train.json (bench_onboard --json writes one)"),
    (["noise_blindness.py", "--tasks", "N0,X9", "--json", "out.json"],
     "noise_blindness.py: error: argument --tasks: unknown task(s) 'X9'; valid: N0, F0, F1, F2, F3, F4, F5"),
    (["noise_blindness.py", "--compare", "no-such-clean.json", "noisy.json"],
     "noise_blindness.py: error: no rounds file no-such-clean.json"),
], ids=["bayes_lab-no-args", "bayes_lab-task", "lodo_check-task", "target_stops-file", "calibration_leak-file",
        "noise_blindness-task", "noise_blindness-file"])
def test_bad_input_is_one_line(args, says, tmp_path, monkeypatch, capsys):
    """IndexError (bayes_lab.py with no arguments), KeyError: 'X9' and FileNotFoundError tracebacks before."""
    script, *rest = args
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(EXPERIMENTS / script, rest, monkeypatch, capsys)  # a traceback fails the test here
    assert code != 0
    assert err.strip().splitlines()[-1].startswith(says)
    assert "Traceback" not in err
