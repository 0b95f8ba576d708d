"""Mistakes a new user makes typing README's commands: one line that names the way out, nothing stored lost."""
import pytest

from harness.cli import main as hwl_main
from tests.campaign_helpers import write_profile


def _refused(args, capsys) -> str:
    assert hwl_main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_a_profile_name_given_as_a_file_says_to_give_the_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _refused(["status", "local-ort-1t.toml"], capsys)
    assert "local-ort-1t.toml does not exist (a profile named 'local-ort-1t' is known: give its name alone)" in err


def test_a_profile_file_given_as_a_name_says_to_give_the_file(tmp_path, monkeypatch, capsys):
    write_profile(tmp_path, "my-board")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "lab.db"
    err = _refused(["onboard", "my-board", "--space", "nb201", "--budget", "2", "--store", store,
                    "--out", tmp_path / "p.pt"], capsys)
    assert "unknown device 'my-board'" in err and "(there is a profile file my-board.toml: give that)" in err
    assert not store.exists()
