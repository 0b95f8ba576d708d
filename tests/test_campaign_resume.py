"""The coordinator (`hwl campaign run`, a subprocess) killed with SIGKILL or stopped with Ctrl-C, then
`hwl campaign resume`."""
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import psutil
import pytest

from harness.device_worker import device_locks
from tests.campaign_helpers import (HWL, exported_models, hwl, kill_leftovers, leftover_names,
                                    leftover_processes, signal_when, write_profile)

pytestmark = pytest.mark.slow
# six jobs: a stop mid-campaign lands with a job done, jobs in flight and at least one never sent
ARCHS = "1835,7165,9545,4988,2581,11034"
N_JOBS = len(ARCHS.split(","))


@pytest.fixture(autouse=True)
def artifacts(model_cache, tmp_path):
    """The campaigns' models, exported already: these tests stop and resume campaigns, not exports."""
    return exported_models(model_cache, tmp_path / "art", ARCHS)


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


def _campaign_args(tmp_path, dev):
    return ["campaign", "run", "--space", "nb201", "--archs", ARCHS, "--devices", str(dev), "--store",
            str(tmp_path / "lab.db"), "--artifacts", str(tmp_path / "art"), "--canary-every", "0", "--no-progress"]


# A vendor tool that says 2.5 ms after 0.2 s, run once per timed window: its jobs take the same time on a busy machine
# and come out clean (onnxruntime's short windows came out contended or unstable under load, each job then measured
# up to 3 times); these tests stop and resume campaigns, not a runtime.
STEADY_TOOL = {"command": "sh -c 'sleep 0.2; echo 2.5 ms'", "regex": "([0-9.]+) ms"}


def _stop_mid_job(tmp_path, sig, *, while_running=None, policy=None, thermal_domain="test-cpu"):
    """Start `hwl campaign run`, send ``sig`` once a job is done and another still queued (first calling
    ``while_running(store, pid)`` while the first job is in flight, if given).

    Returns (store path, Ray temp dir, stderr, exit status)."""
    db = tmp_path / "lab.db"
    ray_tmp = tempfile.mkdtemp(prefix="hwlr-", dir="/tmp")

    def started():  # the campaign holds its store: its first job is in flight
        return _counts(db).get("running", 0) >= 1

    def mid_job():  # with jobs in flight (up to two: the device never idles) and one never sent
        counts = _counts(db)
        return counts.get("done", 0) >= 1 and counts.get("running", 0) >= 1 and counts.get("queued", 0) >= 1

    dev = write_profile(tmp_path, "resume-a", runtime="command", options=STEADY_TOOL, policy=policy,
                        thermal_domain=thermal_domain)
    stderr, rc, _ = signal_when(_campaign_args(tmp_path, dev),
                              ray_tmp, mid_job, sig, between=while_running and (lambda pid: while_running(db, pid)),
                              between_ready=started)
    return db, ray_tmp, stderr, rc


def _ray_leftovers(ray_tmp):
    """Ray's processes of this test still alive, except its two dashboard helper daemons, which
    outlive a SIGKILLed driver by about a minute before exiting on their own."""
    helpers = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    found = []
    for p in leftover_processes(ray_tmp):
        try:
            if p.name() not in helpers and not any(h in " ".join(p.cmdline()) for h in helpers):
                found.append(p)
        except psutil.NoSuchProcess:  # exited while we looked
            pass
    return found


def _resume_completes(db, tmp_path, ray_tmp, *, lost_before=1):
    """`hwl campaign resume` measures what is left: every job done once, nothing duplicated."""
    done = hwl("campaign", "resume", "--store", db, "--artifacts", tmp_path / "art", "--canary-every", "0",
               "--no-progress", env={"RAY_TMPDIR": ray_tmp}, timeout=300)
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
    assert lost == lost_before  # the attempts in flight when the coordinator stopped, renumbered on resume
    dup = con.execute("SELECT count(*) FROM (SELECT job_id, attempt FROM results GROUP BY job_id, attempt "
                      "HAVING count(*) > 1)").fetchone()[0]
    assert dup == 0
    con.close()
    status = hwl("campaign", "status", "--store", db, "--json")
    assert status.returncode == 0 and f'"done": {N_JOBS}' in status.stdout
    assert json.loads(status.stdout)["coordinator"] is None


def test_coordinator_killed_then_resume_completes(tmp_path):
    db, ray_tmp, _, _ = _stop_mid_job(tmp_path, signal.SIGKILL)
    killed_at = _counts(db)
    assert killed_at.get("queued", 0) + killed_at.get("running", 0) >= 1
    # Ray's raylet, GCS, workers and the agents share the driver's fate: they notice it is gone
    # and exit by themselves within seconds (polled, not slept: how fast depends on the machine).
    # The test does not wait for the dashboard helpers; it kills them by pid.
    deadline = time.monotonic() + 30
    while (leftovers := _ray_leftovers(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill_leftovers(ray_tmp)
    assert not leftovers, [(p.pid, p.cmdline()[:3]) for p in leftovers]
    status = hwl("campaign", "status", "--store", db)
    assert "go on with: hwl campaign resume" in status.stdout, status.stdout
    if killed_at.get("running"):  # sent just now, left running: as a lockless older coordinator would leave it
        assert "no process holds its lock, yet a job was sent to a device" in status.stdout, status.stdout
    # its export holds what was measured, and its line said nothing of the jobs left
    left = killed_at.get("queued", 0) + killed_at.get("running", 0)
    export = hwl("campaign", "export", "--store", db, "--out", tmp_path / "so-far.parquet")
    assert export.returncode == 0 and (f"; {left} job{'s' if left > 1 else ''} not measured yet: resume it, then "
                                       "export again) to ") in export.stderr, export.stderr
    _resume_completes(db, tmp_path, ray_tmp, lost_before=killed_at.get("running", 0))  # the resume marks them lost


def _second_coordinator_is_refused(db, pid):
    """A resume while the campaign runs would measure its remaining jobs twice; it is refused."""
    second = hwl("campaign", "resume", "--store", db, "--canary-every", "0", "--no-progress", timeout=120)
    assert second.returncode == 2, second.stderr
    assert "is being measured by another hwl process" in second.stderr and f"pid {pid} " in second.stderr
    status = hwl("campaign", "status", "--store", db, "--json")
    assert json.loads(status.stdout)["coordinator"].startswith(f"pid {pid} on "), status.stdout
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("SELECT count(*) FROM attempts WHERE state = 'lost'").fetchone()[0] == 0  # nothing taken
    con.close()


def test_ctrl_c_requeues_the_job_in_flight_and_says_how_to_resume(tmp_path):
    # The campaign is still running when the second hwl has been refused: the device's first job waits for its
    # thermal domain, which the test holds until then, as another device of the domain would. (Before, jobs of
    # seconds each, 1 s timed windows: under load most came out contended, each measured up to 3 times.)
    domain = f"ctrl-c-{os.getpid()}-{tmp_path.name}"  # a lock of its own: no other test waits on it
    with contextlib.ExitStack() as held:
        held.enter_context(device_locks([f"local.thermal.{domain}"]))

        def refused_then_released(db, pid):
            _second_coordinator_is_refused(db, pid)
            held.close()

        db, ray_tmp, stderr, rc = _stop_mid_job(tmp_path, signal.SIGINT, while_running=refused_then_released,
                                                thermal_domain=domain)
    assert rc == 130, stderr
    assert "Traceback" not in stderr
    assert "hwl campaign: interrupted;" in stderr and "run the same command again to go on" in stderr
    # the store says what happened, before any resume: the jobs in flight (the one measured and the one
    # sent behind it) are queued again and their attempts marked lost; the finished ones stay done
    stopped_at = _counts(db)
    assert stopped_at.get("running", 0) == 0 and stopped_at.get("done", 0) >= 1, stopped_at
    assert stopped_at.get("queued", 0) >= 1, stopped_at
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    lost = con.execute("SELECT count(*) FROM attempts WHERE state = 'lost'").fetchone()[0]
    con.close()
    assert lost in (1, 2), lost
    deadline = time.monotonic() + 30  # the local Ray is shut down on the way out
    while (leftovers := _ray_leftovers(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers, [(p.pid, p.cmdline()[:3]) for p in leftovers]
    _resume_completes(db, tmp_path, ray_tmp, lost_before=lost)


def test_sigterm_stops_like_ctrl_c(tmp_path):
    # what `kill`, systemd or a batch scheduler sends; before, Ray's handler exited 15 with a C++ dump
    db, ray_tmp, stderr, rc = _stop_mid_job(tmp_path, signal.SIGTERM)
    assert rc == 143, stderr
    assert "hwl campaign: terminated;" in stderr and "run the same command again to go on" in stderr, stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr
    stopped_at = _counts(db)
    assert stopped_at.get("running", 0) == 0 and stopped_at.get("queued", 0) >= 1, stopped_at
    # the job measured and the one already sent behind it (the device never idles) are both lost
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    lost = con.execute("SELECT count(*) FROM attempts WHERE state = 'lost'").fetchone()[0]
    con.close()
    assert lost in (1, 2), lost
    _resume_completes(db, tmp_path, ray_tmp, lost_before=lost)


def _left_after(ray_tmp, within_s):
    """Names of this test's Ray processes still there ``within_s`` seconds from now. Polled: two looks
    half a second apart that find none end the wait early, as none can come later (only a process
    of this Ray, which carries its RAY_TMPDIR and so is found, could start one)."""
    deadline = time.monotonic() + within_s
    empty = 0
    while True:
        left = leftover_names(ray_tmp)
        empty = 0 if left else empty + 1
        if empty == 2 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_ray_starts_stops_the_whole_of_ray(tmp_path, sig):
    """Ctrl-C or SIGTERM as Ray's daemons appear, inside ray.init. Before, Ray's helper processes
    were left running (Ctrl-C also crashed the driver once, with SIGSEGV). Ctrl-C now waits for
    ray.init; a SIGTERM meets Ray's own handler there, and its half-started daemons are stopped."""
    ray_tmp = tempfile.mkdtemp(prefix="hwlr-", dir="/tmp")

    def ray_starting():  # the raylet is up; it starts its agents next, then the driver connects
        return "raylet" in leftover_names(ray_tmp)  # one may exit while we look

    try:
        stderr, rc, _ = signal_when(_campaign_args(tmp_path, write_profile(tmp_path, "resume-init")), ray_tmp,
                                    ray_starting, sig)
        left = _left_after(ray_tmp, 5)  # a Ray told to stop is gone by then; leftovers of a half-started one lived on
    finally:
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (rc, sig) in ((130, signal.SIGINT), (143, signal.SIGTERM)), stderr
    assert "hwl campaign: interrupted" in stderr or "hwl campaign: terminated" in stderr, stderr
    assert not left, left


def test_ray_node_dying_under_the_campaign_stops_it_charging_nothing(tmp_path, monkeypatch):
    # Ray's health checks every 0.5 s, so the dead node is seen in about a second, not 15-30 s
    monkeypatch.setenv("RAY_health_check_period_ms", "500")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "2")
    db = tmp_path / "lab.db"
    ray_tmp = tempfile.mkdtemp(prefix="hwlr-", dir="/tmp")
    raylets = []

    def kill_raylet(pid):
        for p in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # a measurement's child process may end meanwhile
                if p.name() == "raylet":
                    raylets.append(p)
        for p in raylets:
            p.kill()
        killed_at.append(time.time())

    def mid_job():
        counts = _counts(db)
        return counts.get("done", 0) >= 1 and counts.get("running", 0) >= 1

    killed_at = []
    # jobs of about a second (2 windows of the tool), so the raylet dies under one measuring (a poll of the store
    # takes ms)
    dev = write_profile(tmp_path, "resume-node", runtime="command",
                        options={**STEADY_TOOL, "command": "sh -c 'sleep 0.5; echo 2.5 ms'"})
    try:
        stderr, rc, stdout = signal_when(_campaign_args(tmp_path, dev), ray_tmp, mid_job, kill_raylet)
    finally:
        kill_leftovers(ray_tmp)
    assert raylets, "no raylet was found under hwl"
    # one line that says what happened; before, the jobs in flight failed as the model's fault
    # (load_error, their export lost) or the device was recreated on a node that was gone
    assert rc == 2 and "Traceback" not in stderr, stderr
    assert "Ray's node on this machine died" in stderr and "nothing measured is lost" in stderr, stderr
    assert stdout == "", stdout  # Ray's own messages about the dead node go to stderr
    stopped_at = _counts(db)
    assert stopped_at.get("failed", 0) == 0 and stopped_at.get("running", 0) == 0, stopped_at
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("SELECT state FROM campaign_devices").fetchone()[0] == "active"
    lost = con.execute("SELECT count(*) FROM attempts WHERE state = 'lost'").fetchone()[0]
    # the device's worker goes on until Ray notices (README): what it measured after the kill is stored, once
    after = con.execute("SELECT a.state, count(r.id), min(length(r.samples_ns)) FROM attempts a LEFT JOIN results r "
                        "ON r.job_id = a.job_id AND r.attempt = a.attempt WHERE a.finished_at > ? "
                        "GROUP BY a.job_id, a.attempt", killed_at).fetchall()
    con.close()
    assert all((state, n) == ("lost", 0) or (n == 1 and samples) for state, n, samples in after), after
    _resume_completes(db, tmp_path, ray_tmp, lost_before=lost)


def test_ctrl_c_while_a_recover_command_runs_leaves_the_device_quarantined_with_why(tmp_path):
    # a device that always fails, with a power cycle that takes a while
    dev = write_profile(tmp_path, "resume-hung", runtime="command", recover="sleep 60",
                        options={"command": "false", "regex": "([0-9.]+) ms"})
    db = tmp_path / "lab.db"
    ray_tmp = tempfile.mkdtemp(prefix="hwlr-", dir="/tmp")

    def device_state():
        with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT state, error FROM campaign_devices").fetchone()

    try:
        stderr, rc, _ = signal_when(_campaign_args(tmp_path, dev), ray_tmp,
                                  lambda: (device_state() or ("",))[0] == "recovering", signal.SIGINT)
    finally:
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert rc == 130 and "Traceback" not in stderr, stderr
    state, error = device_state()
    assert state == "quarantined" and error.endswith("the campaign stopped while its recover command ran"), error
    assert _counts(db) == {"queued": N_JOBS}  # no attempt was charged to a job by the stop


def test_the_resume_lines_of_a_quarantine_carry_the_run_s_flags_and_paste_as_they_are(tmp_path):
    """A device quarantined under `--artifacts A --canary-every 0 --known-hosts F`, its store in a folder with a
    space: the line said `hwl campaign resume --store .../my lab/lab.db --name X`, which a shell splits at the
    space, without the flags (pasted, it checked host keys against ~/.ssh/known_hosts and exported the models
    again beside the store). Now it is quoted and carries them, and pasted it resumes that campaign.

    `hwl campaign status` said `go on with: hwl campaign resume --store S --name X` without them too: pasted, it
    exported every model again beside the store, ran canaries the campaign had not, checked host keys against
    ~/.ssh/known_hosts, and without a run's --address started a local Ray, which measured a cluster node's local
    devices on this machine under their names. Its line now carries the flags the last run had (a relative
    --artifacts made absolute). (One run checks both lines: each run is a local Ray's start.)"""
    dev = write_profile(tmp_path, "resume-nocore")
    dev.write_text(dev.read_text().replace("cores = [", f"cores = [{(os.cpu_count() or 1) + 8}, "))
    db, known = tmp_path / "my lab" / "lab.db", tmp_path / "known_hosts"
    db.parent.mkdir()
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    run = subprocess.run([*HWL, "campaign", "run", "--space", "nb201", "--archs", "1835", "--devices", str(dev),
                          "--store", str(db), "--artifacts", "../art", "--canary-every", "0", "--no-progress",
                          "--known-hosts", str(known)], capture_output=True, text=True, timeout=300, cwd=workdir)
    assert run.returncode == 1, run.stderr
    name = json.loads(run.stdout.splitlines()[-1])["campaign"]
    line = re.search(r"\(or (hwl campaign resume .*), which keeps the settings", run.stderr).group(1)
    assert shlex.split(line) == ["hwl", "campaign", "resume", "--store", str(db), "--name", name, "--artifacts",
                                 str(tmp_path / "art"), "--canary-every", "0", "--known-hosts", str(known)], line
    status = hwl("campaign", "status", "--store", db)
    assert re.search(r"go on with: (hwl campaign resume .*)", status.stdout).group(1) == line, status.stdout
    again = hwl(*shlex.split(line)[1:])
    assert again.returncode == 1 and "hwl campaign: device resume-nocore quarantined: " in again.stderr, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["campaign"] == name
    # `hwl campaign resume --store lab.db`, as README shows it, from another folder: it took none of those flags
    # (exported every model again into lab-artifacts, canaries every 50 jobs) and left none for the next line
    bare = subprocess.run([*HWL, "campaign", "resume", "--store", str(db), "--no-progress"], capture_output=True,
                          text=True, timeout=300, cwd=workdir)
    assert bare.returncode == 1, bare.stderr
    assert (f"campaign {name} last ran with --artifacts {tmp_path / 'art'} --canary-every 0 --known-hosts {known}: "
            "resuming with them") in bare.stderr, bare.stderr
    assert not (db.parent / "lab-artifacts").exists() and not (workdir / "lab-artifacts").exists()
    assert re.search(r"\(or (hwl campaign resume .*), which keeps the settings", bare.stderr).group(1) == line
    again = re.search(r"go on with: (hwl campaign resume .*)", hwl("campaign", "status", "--store", db).stdout)
    assert again.group(1) == line


def test_a_campaign_stopped_in_its_end_canary_runs_that_canary_on_resume(tmp_path, model_cache):
    """Killed (SIGKILL) while its drift canary after the last job measured, a campaign's last results were
    never checked, and resume, finding no job queued, measured nothing: a device that drifted after its
    opening canary kept every result since unflagged. Now the resume runs the canary the session missed."""
    speed, calls, hold = (tmp_path / n for n in ("speed", "calls", "hold"))
    speed.write_text("2.5 ms\n")
    # A vendor tool run once per timed window. The opening canary (2 windows) runs at 2.5 ms; then the device is
    # 20 % slower, and from its 7th run (past the opening canary and the 2 jobs: the end canary) it waits while
    # `hold` exists, so the coordinator is killed with the end canary measuring.
    command = (f"sh -c 'echo >> {calls}; n=$(wc -l < {calls}); test $n -le 2 || echo 3.0 ms > {speed}; "
               f"while test $n -ge 7 && test -e {hold}; do sleep 0.1; done; cat {speed}'")
    dev = write_profile(tmp_path, "resume-end-canary", runtime="command",
                        options={"command": command, "regex": "([0-9.]+) ms"})
    exported_models(model_cache, tmp_path / "art", "1462")  # the canary's model
    db = tmp_path / "lab.db"
    args = ["campaign", "run", "--space", "nb201", "--archs", "1835,7165", "--devices", str(dev), "--store",
            str(db), "--artifacts", str(tmp_path / "art"), "--no-progress"]
    hold.touch()
    ray_tmp = tempfile.mkdtemp(prefix="hwlr-", dir="/tmp")

    def end_canary_measuring():
        return calls.exists() and len(calls.read_text().splitlines()) >= 7

    try:
        _, rc, _ = signal_when(args, ray_tmp, end_canary_measuring, signal.SIGKILL)
        hold.unlink()
        assert rc == -signal.SIGKILL and _counts(db) == {"done": 2}
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        assert con.execute("SELECT median_ms FROM canaries").fetchall() == [(2.5,)]  # the opening one only
        con.close()
        # the table alone read as a finished campaign (2 done, none queued)
        status = hwl("campaign", "status", "--store", db)
        assert ("no coordinator is running it, and its last session stopped before its end canary: the latencies of "
                f"2 jobs of resume-end-canary are not checked for drift yet; go on with: hwl campaign resume --store "
                f"{db} --name ") in " ".join(status.stdout.split()), status.stdout
        resumed = hwl("campaign", "resume", "--store", db, "--artifacts", tmp_path / "art", "--no-progress",
                      env={"RAY_TMPDIR": ray_tmp}, timeout=300)
    finally:
        hold.unlink(missing_ok=True)
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1])["done_now"] == 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    canaries = con.execute("SELECT median_ms, baseline_ms, ok FROM canaries ORDER BY id").fetchall()
    flags = con.execute("SELECT r.flags FROM results r WHERE r.accepted = 1").fetchall()
    con.close()
    assert canaries == [(2.5, 2.5, 1), (3.0, 2.5, 0)], canaries
    assert len(flags) == 2 and all("canary_drift" in f for (f,) in flags), flags


def test_a_resume_without_address_goes_on_on_the_cluster_the_campaign_last_ran_on(tmp_path, capsys):
    """`hwl campaign resume --store lab.db`, as README shows it, of a campaign last run with --address started a
    local Ray, which offers every profile's host resource: a cluster node's local devices were timed on this
    machine under their names. It now goes on on that cluster (here one nothing answers: refused, nothing run)."""
    from harness.campaign import CampaignSpec, plan_campaign
    from harness.campaign_lock import campaign_lock, last_run_flags
    from harness.cli import main as hwl_main
    from harness.store import Store
    from tests.sshd import free_port

    dev = write_profile(tmp_path, "on-node2")
    db, address = tmp_path / "lab.db", f"127.0.0.1:{free_port()}"
    with Store(db) as st:
        cid, plan, _ = plan_campaign(st, CampaignSpec(space="nb201", archs="1835", devices=(str(dev),)))
    with campaign_lock(db, cid, plan.name, resume_flags=["--address", address, "--canary-every", "0"]):
        pass  # as the cluster run left it
    assert hwl_main(["campaign", "resume", "--store", str(db), "--artifacts", str(tmp_path / "art"),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"campaign {plan.name} last ran on the Ray cluster at {address}: resuming it there" in err
    assert f"cannot join the Ray cluster at '{address}': nothing answers there" in err
    assert _counts(db) == {"queued": 1}
    assert last_run_flags(db, cid)[:2] == ["--address", address]
