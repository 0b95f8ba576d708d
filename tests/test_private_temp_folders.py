"""hwl's folders in the shared temp dir (device locks, the local agents' cache) have predictable names: one
another user made first is refused in one line instead of used; one of ours that others may write is made ours
alone. Another user's folder needs root to make (chown), as CI runs."""
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

from harness.cli import main as hwl_main
from harness.device_worker import DeviceWorker
from harness.export import export_one
from harness.profiles import load_profile
from harness.transport.errors import DeviceSetupError
from tests.campaign_helpers import write_profile


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch):
    """A temp dir as /tmp is: anyone may make a folder in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    folder.chmod(0o1777)
    monkeypatch.delenv("HWL_LOCK_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _made_by_someone_else(folder):
    if os.geteuid() != 0:
        pytest.skip("making a folder of another user needs root")
    folder.mkdir()
    os.chown(folder, 65534, 65534)  # nobody
    return folder


def _job(tmp_path) -> dict:
    model = Path(export_one("nb201", 1835, tmp_path / "artifacts").path)  # all skip_connect: a fast model
    return {"job_id": 1, "attempt": 1, "space": "nb201", "arch": "1835", "model": str(model),
            "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}


def test_measure_refuses_a_lock_folder_of_another_user(shared_tmp, tmp_path, capsys):
    locks = _made_by_someone_else(shared_tmp / f"hwl-locks-{os.getuid()}")
    assert hwl_main(["measure", _job(tmp_path)["model"], "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert f"lock folder {locks} is a folder of uid 65534, not a folder of uid {os.geteuid()}" in err
    assert "Traceback" not in err
    assert list(locks.iterdir()) == []  # no lock taken in it


def test_a_device_is_not_started_on_an_agent_cache_of_another_user(shared_tmp, tmp_path):
    cache = _made_by_someone_else(shared_tmp / f"hwl-agent-cache-{os.getuid()}")
    worker = DeviceWorker(load_profile(str(write_profile(tmp_path, "w-cache"))))
    job = _job(tmp_path)
    with pytest.raises(DeviceSetupError, match=f"w-cache: agent cache {cache} is a folder of uid"):
        worker.hello()
    assert worker.measure(job)["outcome"] == "device_lost"
    worker.close()


def test_the_folders_are_made_private_and_used(shared_tmp, tmp_path):
    worker = DeviceWorker(load_profile(str(write_profile(tmp_path, "w-private"))))
    job = _job(tmp_path)
    try:
        assert worker.measure(job)["outcome"] in ("ok", "unstable")
    finally:
        worker.close()
    for name in (f"hwl-locks-{os.getuid()}", f"hwl-agent-cache-{os.getuid()}"):
        assert (shared_tmp / name).stat().st_mode & 0o777 == 0o700


def test_a_folder_of_ours_that_others_may_write_is_made_ours_alone(shared_tmp, tmp_path):
    """As a umask of 002 (or an older hwl) leaves it: refusing it would stop every device of such a user."""
    locks = shared_tmp / f"hwl-locks-{os.getuid()}"
    locks.mkdir()
    locks.chmod(0o777)
    assert hwl_main(["measure", _job(tmp_path)["model"], "--profile", "quick"]) == 0
    assert locks.stat().st_mode & 0o777 == 0o755
