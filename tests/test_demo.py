"""scripts/demo's flags (the README's first command): a bad value is one line, before any measurement."""
import pytest

from scripts.demo_main import ROOT, main


@pytest.mark.parametrize("flags, says", [
    (["--archs", "2"], "--archs 2: the predictor step adapts with 10 measurements and scores rho on at least 3 more; "
                       "give 13 or more"),
    (["--archs", "0"], "argument --archs: expected a whole number >= 1, got 0"),
    (["--seed", "-1"], "argument --seed: expected a whole number >= 0, got -1"),
    (["--onboard-budget", "x"], "argument --onboard-budget: expected a whole number >= 0, got 'x'"),
    (["--onboard-budget", "1"], "--onboard-budget 1: give at least 2, or 0 to skip the onboarding step: a predictor "
                                "adapted on one latency predicts that latency for every architecture (it ranks "
                                "nothing)"),
])
def test_a_bad_number_is_one_usage_line(flags, says, tmp_path, capsys):
    """--archs 2 measured 2 archs on both devices and then died in a ValueError traceback ('the demo needs at least
    13'); --archs 0 and --seed -1 in ArchError / numpy tracebacks."""
    with pytest.raises(SystemExit) as stop:
        main([*flags, "--out", str(tmp_path / "demo")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"scripts/demo: error: {says}"
    assert not (tmp_path / "demo").exists()


def test_an_unknown_device_is_one_line(tmp_path, capsys):
    """--devices local-ort-1 (a typo) ended in ProfileError's traceback; then, refused, it left a new store (lab.db,
    lab.db-locks) in --out."""
    assert main(["--devices", "local-ort-1", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("scripts/demo: error: unknown device 'local-ort-1': no profile of that name")
    assert not (tmp_path / "demo").exists()


def test_out_naming_a_file_is_refused(tmp_path, capsys):
    """--out lab.db (the store file, not its folder) ended in FileExistsError's traceback; the file is untouched."""
    store = tmp_path / "lab.db"
    store.write_bytes(b"kept")
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(store)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"scripts/demo: error: --out {store} is a file; give a folder for the store, artifacts and exports"
    assert store.read_bytes() == b"kept"


def test_help_gives_each_default(capsys):
    """`scripts/demo --help` gave the default of --archs alone: not the seed, devices, onboarding budget or folder
    a plain `scripts/demo` uses."""
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    said = " ".join(capsys.readouterr().out.split())  # as wrapped to the terminal, read as one line
    for default in ("(default 30;", "(default 0)", "(default local-ort-1t,local-ort-2t;", "(default 10;",
                    f"(default {ROOT / 'out' / 'demo'})"):
        assert default in said, said


def test_the_onboarding_table_shows_a_dash_where_the_loop_made_no_estimate():
    from scripts.demo_onboard import estimate_cells

    assert estimate_cells(None) == ("-", "-")  # a budget of 2: "not enough measurements (need 3)" below the table
    assert estimate_cells({"rho": 0.9614, "low": 0.9, "high": 1.0}) == ("0.961", "0.900-1.000")
