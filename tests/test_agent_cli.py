"""`hwl measure`: one measurement through the agent's child-process path, printed as JSON or a table."""
import json
import sys
from pathlib import Path

import pytest

from harness.cli import main

TINY = ["--policy", "warmup_min_s=0.01", "--policy", "repeats=2", "--policy", "window_min_s=0.02",
        "--policy", "window_min_runs=5", "--policy", "cooldown_s=0"]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    from harness.export import export_one
    return Path(export_one("nb201", 4321, tmp_path_factory.mktemp("models")).path)


def test_measure_json(onnx_path, capsys):
    rc = main(["measure", str(onnx_path), "--runtime", "ort", "--threads", "1", "--cores", "0",
               "--profile", "quick", "--json", *TINY])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["outcome"] in ("ok", "unstable")
    m = out["measurement"]
    assert m["spec"]["runtime"] == "onnxruntime" and m["spec"]["cores"] == [0] and m["spec"]["profile"] == "quick"
    assert m["stats"]["median_ms"] > 0 and len(m["samples_ns"]) == 2


def test_measure_table_for_a_command(capsys):
    rc = main(["measure", "--runtime", "command", "--command", f"{sys.executable} -c \"print('t=2.5')\"",
               "--regex", r"t=([0-9.]+)", "--profile", "quick", *TINY])
    out = capsys.readouterr().out
    assert rc == 0 and "2.5000 ms" in out and "label" in out


def test_measure_failure_exit_status_and_user_errors(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert main(["measure", str(bad), "--profile", "quick", "--json", *TINY]) == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "load_error"
    assert main(["measure", str(tmp_path / "absent.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["measure", str(bad), "--policy", "repeat=2"]) == 2
    assert "unknown timing policy field" in capsys.readouterr().err
    assert main(["measure", "--runtime", "command", "--regex", "x"]) == 2
    assert "options.command" in capsys.readouterr().err


def test_measure_waits_while_a_local_device_of_a_campaign_measures(onnx_path, tmp_path, monkeypatch, capsys):
    """Rule 7: `hwl measure` never times alongside a campaign's local device (its thermal domain lock)."""
    import threading
    import time

    from harness.device_worker import device_locks

    monkeypatch.setenv("HWL_LOCK_DIR", str(tmp_path))
    held, release = threading.Event(), threading.Event()

    def campaign_measures():
        with device_locks(["local.thermal.local-cpu"]):
            held.set()
            release.wait(10)

    threading.Thread(target=campaign_measures).start()
    held.wait(10)
    threading.Timer(2.0, release.set).start()
    start = time.monotonic()
    assert main(["measure", str(onnx_path), "--cores", "0", "--profile", "quick", "--json", *TINY]) == 0
    assert time.monotonic() - start >= 2.0
