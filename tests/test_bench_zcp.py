"""scripts/bench_zcp without ../shared/data: its timings need none of it; its checks say what is missing."""
import json
import sys

import pytest

from tests.bench_scripts import SCRIPTS, load

SCRIPT = next(s for s in SCRIPTS if s.name == "bench_zcp")


def _run(flags, tmp_path, monkeypatch):
    module = load(SCRIPT)
    monkeypatch.setattr(module, "SHARED", tmp_path / "shared" / "data")  # a checkout without the public tables
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *flags, "--json", str(tmp_path / "zcp.json")])
    return module.main()


def test_no_check_asked_reads_no_shared_table(tmp_path, monkeypatch):
    """The NASLib check read ../shared/data's two CSVs before seeing it was not asked for (no --store, --check-n 0,
    the defaults), so a checkout without them ended every run, after its timings, in FileNotFoundError."""
    assert _run(["--n", "0"], tmp_path, monkeypatch) == 0
    assert json.loads((tmp_path / "zcp.json").read_text())["naslib_check"] is None


def test_a_check_without_its_table_is_refused_before_the_timings(tmp_path, monkeypatch, capsys):
    """--check-n 3 ran the timings (minutes at the default --n) and then ended in FileNotFoundError's traceback."""
    with pytest.raises(SystemExit) as stop:
        _run(["--check-n", "3"], tmp_path, monkeypatch)
    assert stop.value.code == 2
    shared = tmp_path / "shared" / "data"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"bench_zcp: error: {shared} has no nb201_zcp_naslib_subset.csv, nb201_accuracy.csv (the public data tables "
        "beside the checkout), which the --store, --check-n and --fbnet-check-n checks compare against")
    assert not (tmp_path / "zcp.json").exists()
