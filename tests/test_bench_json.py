"""The benchmarks' --json file: refused at once where it cannot be written, strict JSON when written."""
import json
import sys
from pathlib import Path

import pytest

from tests.bench_scripts import SCRIPTS, load, refused, run_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_json_onto_a_folder_is_refused_before_the_run(script, tmp_path, monkeypatch, capsys):
    """--json naming a folder ran the whole benchmark (bench_soak: 2,000 jobs and a 200,000-job store) and then
    ended in IsADirectoryError's traceback, its numbers lost."""
    assert refused(script.name, ["--json", str(tmp_path)], monkeypatch, capsys) == \
        f"{script.name}: error: argument --json: {tmp_path} is a directory; give a file name to write"


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


@pytest.mark.slow
def test_a_benchmark_without_a_number_writes_null_not_nan(tmp_path, monkeypatch, capsys):
    """bench_agent_repro on 2 models has no Spearman rho (it needs 3): its JSON held a bare NaN, which JSON readers
    (jq, JavaScript, pandas' strict mode) refuse; it now holds null, and every number of the table."""
    out = tmp_path / "new" / "repro.json"
    code, stdout, stderr = run_main(ROOT / "scripts" / "bench_agent_repro", ["--n", "2", "--profile", "quick",
                                                                            "--json", out], monkeypatch, capsys)
    assert code == 0, stderr
    assert "Spearman rho" in stdout and "nan" in stdout
    summary = json.loads(out.read_text(), parse_constant=_refuse_constant)["summary"]
    assert summary["spearman"] is None
    assert summary["n_measured_both"] == 2 and summary["median_rel_diff"] >= 0
    assert f"{summary['median_rel_diff']:.2%}" in stdout


@pytest.mark.parametrize("script", ["ceiling.py", "expected_error.py", "loto.py"])
def test_an_experiments_json_onto_a_folder_is_refused_before_the_run(script, tmp_path, monkeypatch, capsys):
    """The research scripts' --json was written after the whole run (loto.py: minutes to hours), into a traceback
    when it named a folder."""
    variants = ["base"] if script == "loto.py" else []  # loto.py's one positional argument
    code, _, stderr = run_main(ROOT / "scripts" / "experiments" / script, [*variants, "--json", tmp_path],
                               monkeypatch, capsys)
    assert code == 2
    assert stderr.strip().splitlines()[-1] == \
        f"{script}: error: argument --json: {tmp_path} is a directory; give a file name to write"


def test_an_experiment_writes_its_json_into_a_new_folder(tmp_path, monkeypatch, capsys):
    """ceiling.py --json runs/n0.json, runs/ not made yet, printed its table and then ended in FileNotFoundError:
    the research scripts wrote with Path.write_text, which makes no folder."""
    out = tmp_path / "runs" / "n0.json"
    code, stdout, stderr = run_main(ROOT / "scripts" / "experiments" / "ceiling.py", ["--tasks", "N0", "--json", out],
                                    monkeypatch, capsys)
    assert code == 0, stderr
    devices = json.loads(out.read_text())["N0"]
    assert "raspi4" in devices and f"{devices['raspi4']['+lat']:.3f}" in stdout


@pytest.mark.parametrize("script, flags", [
    ("bench_predictors", ["--tasks", "N0", "--methods", "copy", "--trials", "1", "--samples", "5"]),
    ("bench_cross_space", ["--devices", "raspi4", "--samples", "4", "--trials", "1", "--epochs", "5"]),
])
def test_a_plot_onto_a_folder_is_refused_before_the_run(script, flags, tmp_path, monkeypatch, capsys):
    """--plot naming a folder was found when the figure was saved, after the whole run, in a traceback."""
    flags = [*flags, "--plot", str(tmp_path), "--json", str(tmp_path / "o.json")]
    assert refused(script, flags, monkeypatch, capsys) == \
        f"{script}: error: argument --plot: {tmp_path} is a directory; give a file name to write"


@pytest.mark.slow
def test_bench_cross_space_json_holds_the_tables_means(tmp_path, monkeypatch, capsys):
    """bench_cross_space's table prints each direction and method's mean rho over the devices; its JSON held only
    the per-device rows, so the table's numbers were nowhere to read."""
    path = next(s for s in SCRIPTS if s.name == "bench_cross_space")
    out = tmp_path / "cs.json"
    monkeypatch.setattr(sys, "argv", [str(path), "--devices", "raspi4,pixel3", "--samples", "4", "--trials", "1",
                                      "--epochs", "5", "--plot", str(tmp_path / "cs.png"), "--json", str(out)])
    assert load(path).main() == 0
    printed = capsys.readouterr().out
    summary = json.loads(out.read_text())["summary"]
    assert {(r["source"], r["method"]) for r in summary} == {(s, m) for s in ("nb201", "fbnet")
                                                            for m in ("hwl_transfer", "hwl_scratch", "vec_scratch")}
    for r in summary:
        assert r["devices"] == 2 and f"{r['mean']:.3f}" in printed
