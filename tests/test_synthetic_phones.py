"""scripts/experiments/synthetic_phones.py: the synthetic whole-ms phones, the whole-ms terms' fit, its input errors."""
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictors.onboard import estimate
from tests.bench_scripts import run_main

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiments" / "synthetic_phones.py"
sp = SourceFileLoader("synthetic_phones", str(SCRIPT)).load_module()


def run_script(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def run_here(*args, cwd, monkeypatch, capsys) -> tuple[int, str, str]:
    """The script run from ``cwd`` in this process (:func:`tests.bench_scripts.run_main`)."""
    monkeypatch.chdir(cwd)
    return run_main(SCRIPT, args, monkeypatch, capsys)


def test_a_phone_like_table_is_whole_ms_in_the_range_and_ranks_as_the_device_without_noise():
    rng = np.random.default_rng(1)
    truth = pd.Series(rng.uniform(8.0, 14.0, 500), index=[f"a{i}" for i in range(500)], name="gpu_1")
    phone = sp.phone_like(truth, 20.0, 80.0, 0.0, seed=0)
    assert phone.name == "gpu_1~phone" and list(phone.index) == list(truth.index)
    assert estimate.is_whole_ms(phone.to_numpy()) and (phone.min(), phone.max()) == (20.0, 80.0)
    assert np.all(np.diff(phone.to_numpy()[np.argsort(truth.to_numpy())]) >= 0)  # rounding ties, never reorders
    noisy = sp.phone_like(truth, 20.0, 80.0, 0.3, seed=0)
    assert estimate.is_whole_ms(noisy.to_numpy()) and not noisy.equals(phone)
    assert noisy.equals(sp.phone_like(truth, 20.0, 80.0, 0.3, seed=0))  # seeded: a replay can be repeated


def test_sources_are_the_float_timed_devices_spread_over_the_list():
    table = lambda values: pd.Series(values, dtype=np.float64)  # noqa: E731
    full = {f"gpu{i}": table([1.5, 2.25, 3.125]) for i in range(5)}
    full["phone"] = table([20.0, 31.0, 45.0])
    assert sp.sources(full, None) == [f"gpu{i}" for i in range(5)]
    assert sp.sources(full, 3) == ["gpu0", "gpu2", "gpu4"]


def test_the_whole_ms_fit_finds_the_terms_its_rounds_were_made_with_and_keeps_a_b_c():
    rng = np.random.default_rng(2)
    a, b, c = estimate.DEFAULT_CALIBRATION[:3]
    rounds = []
    for _ in range(200):
        raw, n = float(rng.uniform(0.7, 0.97)), int(rng.integers(5, 21))
        true = np.tanh(a + b * np.arctanh(raw) + c / n + (-0.1 - 0.3 * np.arctanh(raw)))
        rounds.append({"raw_rho": raw, "true_rho": float(true), "n": n})
    coef = sp.fit_whole_ms(rounds)
    assert coef[:3] == (a, b, c)
    assert np.allclose(coef[3:], (-0.1, -0.3), atol=0.01)


@pytest.mark.parametrize("args, says", [
    (["--fit", "synth.json"], "synthetic_phones.py: error: --fit needs --test"),
    (["--tasks", "N0", "--json", "out.json"], "synthetic_phones.py: error: argument --tasks: unknown task(s) 'N0'"),
    (["--range", "80,20", "--json", "out.json"], "synthetic_phones.py: error: --range: two milliseconds, low < high"),
    (["--fit", "no-such.json", "--test", "test.json"],
     "synthetic_phones.py: error: no replay file no-such.json (bench_onboard --json writes one)"),
], ids=["fit-without-test", "nb201-task", "range", "missing-file"])
def test_bad_input_is_one_line(args, says, tmp_path, monkeypatch, capsys):
    code, _, err = run_here(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(says)


def test_a_tiny_replay_is_fitted_and_scored(tmp_path, monkeypatch, capsys):
    """One synthetic phone of F5, 7 measurements (3 rounds from STOP_FROM on), its rounds also standing in for a
    test replay: the fit and the report run end to end on a real replay (the report in a process of its own, the
    script run as a file from another folder)."""
    code, out, err = run_here("--tasks", "F5", "--per-task", "1", "--budget", "7", "--json", "synth.json",
                              cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert "F5 1080ti_1~phone" in out
    report = run_script("--fit", "synth.json", "--test", "synth.json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == "3 synthetic rounds (1 phones), 0 real train rounds, 3 test rounds (3 whole ms)"
    assert lines[1].startswith("F5: 3 test rounds (3 whole ms), 3 synthetic rounds clean")
    kept = "(" + ", ".join(map(str, estimate.DEFAULT_CALIBRATION[:3])) + ", "  # a, b, c as shipped
    fitted = [line for line in lines if line.strip().startswith("synthetic d, e clean")]
    assert len(fitted) == 1 and kept in fitted[0]
    assert lines[-1].startswith("all test rounds MAE: shipped ")
