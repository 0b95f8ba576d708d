"""The coordinator (`hwl campaign run`, a subprocess) killed with SIGKILL, then `hwl campaign resume`."""
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import psutil
import pytest

from tests.campaign_helpers import HWL, hwl, kill_leftovers, leftover_processes, write_profile

pytestmark = pytest.mark.slow
ARCHS = "1835,7165,9545,4988"


def _counts(db):
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return dict(con.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return {}


def test_coordinator_killed_then_resume_completes(tmp_path):
    dev = write_profile(tmp_path, "resume-a")
    db = tmp_path / "lab.db"
    ray_tmp = tempfile.mkdtemp(prefix="hwlr-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    args = ["campaign", "run", "--space", "nb201", "--archs", ARCHS, "--devices", str(dev), "--store", str(db),
            "--artifacts", str(tmp_path / "art"), "--canary-every", "0", "--no-progress"]
    proc = subprocess.Popen([*HWL, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            counts = _counts(db)
            if counts.get("done", 0) >= 1 and counts.get("running", 0) == 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)  # mid-campaign, a job in flight
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            kill_leftovers(ray_tmp)
    killed_at = _counts(db)
    assert killed_at.get("queued", 0) + killed_at.get("running", 0) >= 1
    # Ray's raylet, GCS, workers and the agents share the driver's fate: they notice it is gone
    # and exit by themselves within seconds (polled, not slept: how fast depends on the machine).
    # Ray's two dashboard helper daemons outlive a SIGKILLed driver by about a minute before
    # exiting on their own; the test does not wait for them, it kills them by pid.
    helpers = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")

    def _leftovers():
        found = []
        for p in leftover_processes(ray_tmp):
            try:
                if p.name() not in helpers and not any(h in " ".join(p.cmdline()) for h in helpers):
                    found.append(p)
            except psutil.NoSuchProcess:  # exited while we looked
                pass
        return found

    deadline = time.monotonic() + 30
    while (leftovers := _leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill_leftovers(ray_tmp)
    assert not leftovers, [(p.pid, p.cmdline()[:3]) for p in leftovers]

    done = hwl("campaign", "resume", "--store", db, "--artifacts", tmp_path / "art", "--canary-every", "0",
               "--no-progress", env={"RAY_TMPDIR": ray_tmp}, timeout=300)
    time.sleep(1)
    kill_leftovers(ray_tmp)  # Ray's dashboard agents may outlive a clean shutdown by seconds
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = con.execute("SELECT j.arch, j.state, sum(r.accepted), count(r.id) FROM jobs j LEFT JOIN results r "
                       "ON r.job_id = j.id GROUP BY j.id").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ARCHS.split(","))
    assert all(state == "done" and accepted == 1 for _, state, accepted, _ in rows), rows
    lost = con.execute("SELECT count(*) FROM attempts WHERE state = 'lost'").fetchone()[0]
    assert lost == 1  # the attempt in flight when the coordinator died, renumbered on resume
    dup = con.execute("SELECT count(*) FROM (SELECT job_id, attempt FROM results GROUP BY job_id, attempt "
                      "HAVING count(*) > 1)").fetchone()[0]
    assert dup == 0
    con.close()
    status = hwl("campaign", "status", "--store", db, "--json")
    assert status.returncode == 0 and '"done": 4' in status.stdout
