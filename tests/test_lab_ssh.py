"""The lab over SSH, end to end: two device hosts in network namespaces with real sshd,
`hwl deploy` onto both, a campaign on both, one host's sshd killed mid-campaign and restarted."""
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time

import pytest

from harness.campaign import CampaignSpec, plan_campaign
from harness.coordinator import CoordinatorOptions, run_campaign
from harness.remote.selftest import SELFTEST_ARCH
from harness.store import Store
from tests.campaign_helpers import FAST_POLICY, exported_models, hwl, kill_leftovers
from tests.lab_hosts import start_lab_host, stop_lab_host, write_ssh_profile
from tests.sshd import make_key, netns_available, sshd_available

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (sshd_available() and netns_available()), reason="needs sshd, root, ip netns")]
ARCHS = "1835,7165,9545,4123,11000,333"
ARCHS_GOING_AWAY = "1835,7165,9545,4123"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, model_cache):
    work = tmp_path_factory.mktemp("lab")
    # the self-test model where deploy looks (--artifacts): deploy exported it itself, seconds of importing torch in
    # its process, which the tests of deploying and self-testing do not test (test_export does)
    exported_models(model_cache, work / "artifacts", str(SELFTEST_ARCH[1]))
    key = make_key(work / "lab_key")
    known = work / "known_hosts"
    hosts = []
    try:
        for name, prefix in (("pi-a", "198.18.51"), ("pi-b", "198.18.52")):
            hosts.append(start_lab_host(name, prefix, work, key))
        profiles = [write_ssh_profile(work, h, key, known) for h in hosts]
        # The hosts' keys read from their sshd's key files, for tests that do not test trusting a new
        # host: strictly checked, without an earlier test's `deploy --trust-new-host` recording them.
        trusted = work / "trusted_known_hosts"
        trusted.write_text("".join(h.sshd.public_host_key_line() for h in hosts))
        yield {"work": work, "key": key, "known": known, "trusted": trusted, "hosts": hosts, "profiles": profiles}
    finally:
        for h in hosts:
            stop_lab_host(h)


@pytest.fixture
def artifacts(model_cache, tmp_path):
    """The campaigns' models, exported already: these tests reach devices over ssh, not exports."""
    return exported_models(model_cache, tmp_path / "artifacts", ARCHS)


@pytest.fixture(scope="module")
def deployed(lab):
    """The lab with this code's agent on both hosts (as the deploy test leaves it, whether or not that
    test ran first), reached with the hosts' known keys."""
    from harness.profiles import load_profile
    from harness.remote.connect import host_for
    from harness.remote.deploy import deploy

    folder = lab["work"] / "deployed"
    folder.mkdir(exist_ok=True)
    for h in lab["hosts"]:
        profile = load_profile(write_ssh_profile(folder, h, lab["key"], lab["trusted"]))
        with host_for(profile) as host:  # unchanged when already deployed
            deploy(host, python=profile.host.python, agent_dir=profile.host.agent_dir, use_venv=False)
    return lab


def test_deploy_refuses_unknown_hosts_then_trusts_deploys_and_is_idempotent(lab):
    profiles, known = lab["profiles"], lab["known"]
    refused = hwl("deploy", *profiles, "--no-selftest")
    assert refused.returncode == 1
    assert "not in" in refused.stderr and "--trust-new-host" in refused.stderr
    assert not known.exists()

    first = hwl("deploy", *profiles, "--trust-new-host", "--artifacts", lab["work"] / "artifacts")
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert {line["device"] for line in lines} == {"pi-a", "pi-b"}
    for line in lines:
        assert line["changed"] and line["selftest"] in ("ok", "unstable") and line["selftest_ms"] > 0
        assert line["fingerprint_id"]
    assert len(known.read_text().splitlines()) == 2

    again = hwl("deploy", *profiles, "--artifacts", lab["work"] / "artifacts")
    assert again.returncode == 0, again.stderr
    assert all(not json.loads(line)["changed"] for line in again.stdout.splitlines())

    status = hwl("status", *profiles, "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["device"]: r for r in json.loads(status.stdout)}
    assert all(r["reachable"] and r["agent"] and r["selftest"] for r in rows.values())
    logs = hwl("logs", profiles[0])
    assert logs.returncode == 0


def test_a_failed_selftest_fails_deploy_is_shown_by_status_and_is_run_again(deployed, tmp_path):
    """A profile asking for CUDA on a device whose onnxruntime has none: the self-test measures nothing
    (load_error). deploy printed it and exited 0, so a lab script went on to a campaign; the redeploy
    after the fix (or any redeploy) showed the stale failure untested. Cores the device lacks, set after an
    ok self-test: deploy reused that 'ok' (exit 0), and `hwl status` kept showing it. `deploy --no-selftest`
    and `hwl status` showed the fixed profile's 'ok' for the CUDA profile as if it were that setup's. A self-test
    the agent refused (cores it lacks) was only 'pi-a: error: ...' in deploy's output, with no line for the device."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the profile's provider would work")
    lab, artifacts = deployed, deployed["work"] / "artifacts"  # the lab's self-test model
    fixed = write_ssh_profile(tmp_path, lab["hosts"][0], lab["key"], lab["trusted"])
    cuda = tmp_path / "cuda" / "pi-a.toml"
    cuda.parent.mkdir()
    cuda.write_text(fixed.read_text().replace("[measurement]", '[runtime.options]\nprovider = "cuda"\n\n[measurement]'))
    failed = hwl("deploy", cuda, "--artifacts", artifacts)
    assert failed.returncode == 1, failed.stderr
    line = json.loads(failed.stdout)
    assert line["selftest"] == "load_error" and line["selftest_ms"] is None
    assert "onnxruntime here has no CUDAExecutionProvider" in line["selftest_message"]
    assert f"pi-a: self-test failed (load_error): {line['selftest_message']}\n" in failed.stderr
    shown = hwl("status", cuda, "--json")
    assert shown.returncode == 1 and json.loads(shown.stdout)[0]["selftest"] == "load_error"  # as deploy failed
    record = lab["hosts"][0].agent_dir / "selftest.json"  # the device's own copy (the host is this machine)
    first_try = json.loads(record.read_text())["time"]
    again = hwl("deploy", cuda, "--artifacts", artifacts)  # nothing changed, but a failure is tested again
    assert again.returncode == 1 and json.loads(record.read_text())["time"] > first_try, again.stderr

    fixed_out = hwl("deploy", fixed, "--artifacts", artifacts)  # the agent is unchanged: only the self-test runs
    assert fixed_out.returncode == 0, fixed_out.stderr
    line = json.loads(fixed_out.stdout)
    assert not line["changed"] and line["selftest"] in ("ok", "unstable") and line["selftest_ms"] > 0
    fixed_test = line["selftest"]

    # --no-selftest showed that record as the CUDA profile's too: a stale 'ok' a user read as this setup's
    skipped = hwl("deploy", cuda, "--no-selftest")
    assert skipped.returncode == 0, skipped.stderr
    line = json.loads(skipped.stdout)
    assert line["selftest"] is None and line["selftest_ms"] is None
    assert line["selftest_other_setup"] == f"{fixed_test}, of other runtime settings"
    assert (f"pi-a: not self-tested (--no-selftest); its last self-test ({fixed_test}) was of other runtime "
            "settings, so it says nothing of this setup\n") in skipped.stderr
    same = json.loads(hwl("deploy", fixed, "--no-selftest").stdout)  # this setup's own record stays shown
    assert same["selftest"] == fixed_test and same["selftest_other_setup"] is None
    # and `hwl status` showed it as the CUDA profile's current self-test (its outcome and ms): named as stale
    row = json.loads(hwl("status", cuda, "--json").stdout)[0]
    assert (row["selftest"], row["selftest_ms"]) == (None, None)
    assert row["selftest_other_setup"] == f"{fixed_test}, of other runtime settings"
    table = hwl("status", cuda).stdout  # at 80 columns (a pipe) the label fits its column
    cells = [c.strip() for c in next(r for r in table.splitlines() if r.startswith("│ pi-a ")).split("│")]
    assert cells[4] == "stale", table  # the self-test column, and no ms of another setup
    headers = [c.strip() for c in next(r for r in table.splitlines() if r.startswith("┃")).split("┃")[1:-1]]
    assert headers == ["device", "runtime", "reachable", "self-test", "state"], table  # none cut to 'selft…'
    assert "(transport and agent left out to fit 80 columns; --json gives them)" in table
    wide = hwl("status", cuda, env={"COLUMNS": "200"}).stdout  # a wide terminal shows the device's agent too
    assert json.loads(hwl("status", cuda, "--json").stdout)[0]["agent"] in wide and "left out" not in wide
    assert (f"\npi-a: last self-test was {fixed_test}, of other runtime settings, so it says nothing of this "
            f"setup; `hwl deploy {cuda}` self-tests it\n") in table  # it said `hwl deploy`: no device
    assert json.loads(hwl("status", fixed, "--json").stdout)[0]["selftest"] == fixed_test  # its own setup's

    # cores the device lacks: a self-test is due (this setup never had one), and refused before anything
    # runs (an error reply): the 'ok' above must not stay the last word for `hwl status`, and the refusal,
    # once only in deploy's output (status showed an empty self-test), is kept and shown
    nowhere = tmp_path / "nowhere.toml"
    nowhere.write_text(fixed.read_text().replace("cores = [1]", "cores = [999]"))
    refused = hwl("deploy", nowhere, "--artifacts", artifacts)
    # it printed only 'pi-a: error: ...' and no line for the device: now as the load_error above
    assert refused.returncode == 1 and "pi-a: error: " not in refused.stderr, refused.stderr
    line = json.loads(refused.stdout)
    assert (line["selftest"], line["selftest_error"], line["selftest_ms"]) == ("refused", "CoresUnavailable", None)
    assert "999" in line["selftest_message"] and not line["changed"]
    assert f"pi-a: self-test failed (refused: CoresUnavailable): {line['selftest_message']}\n" in refused.stderr
    row = json.loads(hwl("status", nowhere, "--json").stdout)[0]
    assert (row["selftest"], row["selftest_error"], row["selftest_ms"]) == ("refused", "CoresUnavailable", None)
    table = hwl("status", nowhere, env={"COLUMNS": "200"}).stdout
    assert "refused: CoresUnavailable" in table and "\npi-a: last self-test refused (CoresUnavailable): " in table
    assert "999" in table.split("last self-test refused")[1].splitlines()[0]  # the agent's reason, in full
    first_try = json.loads(record.read_text())["time"]
    again = hwl("deploy", nowhere, "--artifacts", artifacts)  # a refused record is failed: never reused
    assert again.returncode == 1 and json.loads(record.read_text())["time"] > first_try, again.stderr

    # a record from an older hwl's agent (as after an upgrade, before a redeploy) is not this code's self-test
    record.write_text(json.dumps({**json.loads(record.read_text()), "bundle": "0.0.9-0123456789ab"}))
    row = json.loads(hwl("status", nowhere, "--json").stdout)[0]
    assert row["selftest"] is None and row["selftest_other_setup"] == "refused, of another agent (0.0.9-0123456789ab)"


def test_wrong_key_and_unreachable_host_are_clear_errors(lab, tmp_path):
    wrong = make_key(tmp_path / "wrong_key")
    text = lab["profiles"][0].read_text().replace(str(lab["key"]), str(wrong)).replace(str(lab["known"]),
                                                                                      str(lab["trusted"]))
    bad_key = tmp_path / "pi-a-wrong.toml"
    bad_key.write_text(text)
    out = hwl("deploy", bad_key, "--no-selftest")
    assert out.returncode == 1 and "refused key" in out.stderr
    # An address in the fenced test range with no host behind it: refused on this machine.
    gone = tmp_path / "pi-gone.toml"
    gone.write_text(lab["profiles"][0].read_text().replace(lab["hosts"][0].netns.address, "198.18.59.2")
                    .replace('name = "pi-a"', 'name = "pi-gone"'))
    route = subprocess.run(["ip", "route", "get", "198.18.59.2"], capture_output=True, text=True)
    assert route.returncode != 0 and "No route to host" in route.stderr  # the fence, not the default route
    out = hwl("deploy", gone, "--no-selftest", timeout=120)
    assert out.returncode == 1 and "pi-gone: error: cannot reach it at 198.18.59.2" in out.stderr, out.stderr


def _results(db):
    con = sqlite3.connect(db)
    rows = con.execute("SELECT j.id, j.device, j.state, sum(r.accepted), sum(r.outcome = 'ok') FROM jobs j "
                       "LEFT JOIN results r ON r.job_id = j.id GROUP BY j.id").fetchall()
    lost = con.execute("SELECT count(*) FROM results r JOIN jobs j ON j.id = r.job_id "
                       "WHERE j.device = 'pi-b' AND r.outcome = 'device_lost'").fetchone()[0]
    con.close()
    return rows, lost


@pytest.fixture(scope="module")
def lab_ray():
    """One local Ray for the module's in-process campaigns, a node with the hosts' resources (pi-hot: the too-hot
    test's own host): a start and a shutdown took 6-9 s under load, and these tests take a host's sshd away, never
    Ray's node."""
    temp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = temp  # Ray's daemons inherit it, so kill_leftovers finds them
    try:
        ray.init(num_cpus=2, include_dashboard=False, namespace="hwl", log_to_driver=False, _temp_dir=temp,
                 resources={"host:pi-a": 1000, "host:pi-b": 1000, "host:pi-hot": 1000})
        os.environ.pop("RAY_TMPDIR")  # the other tests' `hwl` subprocesses start Rays of their own
        yield
    finally:
        ray.shutdown()
        os.environ.pop("RAY_TMPDIR", None)
        kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _run_with_chaos(db, cid, chaos, artifacts):
    """Run a planned campaign on the module's Ray while ``chaos()`` runs in a thread; returns the coordinator's
    summary."""
    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    with Store(db) as s:
        summary = run_campaign(s, cid, CoordinatorOptions(artifact_dir=artifacts, canary_every=0))
    thread.join(timeout=60)
    return summary


def test_campaign_over_ssh_survives_a_host_going_away(deployed, lab_ray, artifacts, tmp_path):
    lab = deployed
    slow = {"warmup_min_runs": 2, "warmup_min_s": 0.05, "repeats": 3, "window_min_runs": 5,
            "window_min_s": 0.25, "cooldown_s": 0.0}
    profiles = [write_ssh_profile(tmp_path, h, lab["key"], lab["trusted"], policy=slow) for h in lab["hosts"]]
    db = tmp_path / "lab.db"
    with Store(db) as s:
        # 4 jobs a device: 2 before the outage, one in flight at it, one after; under load each job was 3
        # attempts (its records flagged contended, rule 18), and 6 a device took 36 s
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs=ARCHS_GOING_AWAY,
                                                  devices=tuple(map(str, profiles))))
    pi_b = lab["hosts"][1]
    outage = {}

    def take_pi_b_away():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as con:
                n = con.execute("SELECT count(*) FROM results r JOIN jobs j ON j.id = r.job_id "
                                "WHERE j.device = 'pi-b'").fetchone()[0]
            if n >= 2:
                break
            time.sleep(0.1)
        time.sleep(0.3)  # into the next measurement
        pi_b.sshd.stop()  # kills sshd, the session and the agent mid-measurement
        outage["at"] = time.monotonic()
        # away for its first reconnect tries (at once and 1 s on; the backoff's next is 3 s on, which finds it back):
        # 4 s here made that next try the one 7 s on
        time.sleep(2)
        pi_b.sshd.start()
        outage["back"] = time.monotonic()

    summary = _run_with_chaos(db, cid, take_pi_b_away, artifacts)
    assert "back" in outage, "the outage never happened"
    assert {d["state"] for d in summary["devices"].values()} == {"active"}, summary["devices"]
    rows, lost = _results(db)
    assert len(rows) == 2 * len(ARCHS_GOING_AWAY.split(","))
    for job_id, device, state, accepted, n_ok in rows:
        assert state == "done" and accepted == 1 and n_ok <= 1, (job_id, device, state, accepted, n_ok)
    assert lost >= 1, "no measurement was in flight when pi-b went away"
    with Store(db) as s:
        assert s.integrity_check() == "ok"


def test_a_lost_link_is_said_as_it_reconnects_and_when_it_is_back(deployed, lab_ray, artifacts, tmp_path,
                                                                   caplog):
    """A host away for a while, then back: said once as the device reconnects (before, nothing was said for as long
    as it took, up to 3 x its reconnect_timeout_s), and once when it is back."""
    lab = deployed
    pi_a = lab["hosts"][0]
    slow = {**FAST_POLICY, "window_min_s": 0.5}  # a job in flight when its sshd goes
    profile = write_ssh_profile(tmp_path, pi_a, lab["key"], lab["trusted"], policy=slow, reconnect_timeout_s=300)
    db = tmp_path / "lab.db"
    with Store(db) as s:
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs="1835,7165,9545", devices=(str(profile),)))

    def said(what):
        return [r.getMessage() for r in list(caplog.records) if what in r.getMessage()]

    def away_until_said():
        deadline = time.monotonic() + 240  # a guard against a hung campaign, not a measure of speed
        try:
            while time.monotonic() < deadline:
                with sqlite3.connect(db) as con:
                    if con.execute("SELECT count(*) FROM results").fetchone()[0] >= 1:
                        break
                time.sleep(0.1)
            pi_a.sshd.stop()
            while time.monotonic() < deadline and not said("lost the connection"):
                time.sleep(0.1)
        finally:
            pi_a.sshd.start()

    with caplog.at_level(logging.WARNING, logger="harness.coordinator"):
        summary = _run_with_chaos(db, cid, away_until_said, artifacts)
    lost, back = said("lost the connection"), said("reconnected after")
    assert len(lost) == 1 and len(back) == 1, caplog.text
    assert lost[0].startswith("device pi-a: lost the connection; reconnecting for up to 300 s at each of its next ")
    assert "then it is quarantined; last try: " in lost[0] and back[0].startswith("device pi-a: reconnected after ")
    assert caplog.text.index(lost[0]) < caplog.text.index(back[0])
    assert summary["devices"]["pi-a"]["state"] == "active" and summary["devices"]["pi-a"]["done"] == 3


def test_a_device_back_at_another_address_goes_on_with_its_campaign(deployed, artifacts, tmp_path):
    """A Pi that came back from a reboot at another address (DHCP): the user edits its profile's
    address and the campaign goes on, neither stranded on the old address nor planned anew."""
    lab = deployed
    host = lab["hosts"][0]
    profile = write_ssh_profile(tmp_path, host, lab["key"], lab["trusted"], reconnect_timeout_s=1)
    now_at = profile.read_text()
    profile.write_text(now_at.replace(host.netns.address, "198.18.59.2"))  # where it was: nothing there now
    db = tmp_path / "lab.db"
    ray_tmp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")
    env = {"RAY_TMPDIR": ray_tmp}
    run = ("campaign", "run", "--space", "nb201", "--archs", "1835,7165", "--devices", profile, "--store", db,
           "--artifacts", artifacts, "--canary-every", "0", "--no-progress")
    try:
        lost = hwl(*run, env=env)
        assert lost.returncode == 1 and json.loads(lost.stdout.splitlines()[-1])["quarantined"] == ["pi-a"]
        assert "hwl campaign: device pi-a quarantined: " in lost.stderr
        assert (f"once it works again, run the same command to finish its jobs (or hwl campaign resume --store {db} "
                "--name") in lost.stderr and "which keeps the settings the campaign was planned with" in lost.stderr
        profile.write_text(now_at)
        resumed = hwl("campaign", "resume", "--store", db, "--artifacts", artifacts, "--canary-every", "0",
                      "--no-progress", env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert f"pi-a: host.address 198.18.59.2 -> {host.netns.address}" in resumed.stderr
        again = hwl(*run, env=env)  # the same command as at first: the same campaign, nothing left to measure
        assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["created"] is False
        profile.write_text(now_at.replace("threads = 1", "threads = 2").replace("cores = [1]", "cores = [0, 1]"))
        other = hwl("campaign", "resume", "--store", db, "--no-progress", env=env)  # a new setup is no resume
        assert other.returncode == 0 and "sets runtime.cores, runtime.threads otherwise" in other.stderr
    finally:
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    rows = sqlite3.connect(db).execute("SELECT j.state, count(r.id) FROM jobs j LEFT JOIN results r "
                                       "ON r.job_id = j.id AND r.accepted GROUP BY j.id").fetchall()
    assert rows == [("done", 1), ("done", 1)]


def test_a_crashed_device_is_power_cycled_by_its_recover_command(deployed, lab_ray, artifacts, tmp_path):
    """A Pi that crashed mid-campaign and stays down until someone power-cycles it. Its profile's
    recover command asks the lab's relay for a power cycle (here the relay is a thread that
    restarts the host's sshd when the command asks, and answers when it is done); the campaign
    finishes on that device without anyone resuming it."""
    lab = deployed
    pi_b = lab["hosts"][1]
    asked = tmp_path / "cycle-requested"
    relay = f"sh -c 'touch {asked}; while [ -e {asked} ]; do sleep 0.1; done'"
    profile = write_ssh_profile(tmp_path, pi_b, lab["key"], lab["trusted"], reconnect_timeout_s=1)
    profile.write_text(profile.read_text().replace("reconnect_timeout_s = 1",
                                                  f"reconnect_timeout_s = 1\nrecover = {json.dumps(relay)}")
                       .replace("cooldown_s = 0.0", "cooldown_s = 0.0\nmax_temp_c = 85.0"))  # a Pi's limit
    db = tmp_path / "lab.db"
    with Store(db) as s:
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs=ARCHS, devices=(str(profile),)))
    cycles = []

    def crash_then_relay():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as con:
                if con.execute("SELECT count(*) FROM results").fetchone()[0] >= 1:
                    break
            time.sleep(0.1)
        pi_b.sshd.stop()  # the crash: sshd, the session and the agent die; nothing answers
        while time.monotonic() < deadline and not asked.exists():
            time.sleep(0.1)
        pi_b.sshd.start()  # the power cycle
        cycles.append(time.monotonic())
        asked.unlink()

    try:
        summary = _run_with_chaos(db, cid, crash_then_relay, artifacts)
    finally:
        if pi_b.sshd.proc.poll() is not None:  # left down by a failure: the next tests need pi-b
            pi_b.sshd.start()
    assert len(cycles) == 1 and summary["devices"]["pi-b"]["state"] == "active", summary["devices"]
    with sqlite3.connect(db) as con:
        jobs = con.execute("SELECT j.state, sum(r.accepted), sum(r.outcome = 'device_lost') FROM jobs j "
                           "JOIN results r ON r.job_id = j.id GROUP BY j.id").fetchall()
    assert len(jobs) == 6 and all(state == "done" and accepted == 1 for state, accepted, _ in jobs), jobs
    assert sum(lost for _, _, lost in jobs) >= 3  # the failures that set the recover command off
    with sqlite3.connect(db) as con:  # the agent on the device waited on its own sensors (rule 6)
        policies = [json.loads(r)["measurement"]["metadata"]["policy"] for (r,) in
                    con.execute("SELECT record_json FROM results WHERE accepted = 1")]  # ok, or unstable at last
    assert len(policies) == 6 and {p["max_temp_c"] for p in policies} == {85.0}


def test_a_device_that_stays_too_hot_is_quarantined_and_charges_no_architecture(lab, lab_ray, artifacts, tmp_path,
                                                                               caplog):
    """Rule 6: a Pi whose sensor stays over its limit past the policy's give-up time is quarantined
    at its first measurement (its drift canary, then a job), without a power cycle, and no
    architecture is charged; once it has cooled, a run again (a resume) measures everything. The campaign runs in
    this process on the module's Ray (each `hwl campaign run` started a Ray of its own: seconds, under load tens)."""
    from harness.profiles import load_profile
    from harness.remote.connect import host_for
    from harness.remote.deploy import deploy

    sensors = tmp_path / "thermal"
    (sensors / "thermal_zone0").mkdir(parents=True)
    (sensors / "thermal_zone0" / "type").write_text("cpu-thermal\n")
    temp = sensors / "thermal_zone0" / "temp"
    temp.write_text("95000\n")  # millidegrees, as the kernel writes them
    host = start_lab_host("pi-hot", "198.18.53", tmp_path, lab["key"], sensors=sensors)
    try:
        policy = {**FAST_POLICY, "max_temp_c": 85, "temp_poll_s": 0.2, "temp_give_up_s": 1}
        known = tmp_path / "known_hosts"
        known.write_text(host.sshd.public_host_key_line())  # trusting a new host is not what this test is about
        profile = write_ssh_profile(tmp_path, host, lab["key"], known, policy=policy)
        relay = tmp_path / "power-cycled"  # a power cycle cools nothing: it must not run
        profile.write_text(profile.read_text().replace("[runtime]", f"recover = \"touch {relay}\"\n\n[runtime]"))
        loaded = load_profile(profile)
        with host_for(loaded) as device:
            deploy(device, python=loaded.host.python, agent_dir=loaded.host.agent_dir, use_venv=False)
        db = tmp_path / "lab.db"
        with Store(db) as s:
            cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs="1835,7165", devices=(str(profile),)))

        def run(canary_every):
            caplog.clear()
            with Store(db) as s, caplog.at_level(logging.WARNING, logger="harness.coordinator"):
                return run_campaign(s, cid, CoordinatorOptions(artifact_dir=artifacts, canary_every=canary_every))

        for canary_every in (50, 0):  # the session's first canary, then a job, meets the heat
            hot = run(canary_every)
            assert hot["devices"]["pi-hot"]["state"] == "quarantined", hot  # `hwl campaign run` exits 1
            assert ("device pi-hot quarantined: it stayed too hot to measure: device at 95.0 C, over the 85 C "
                    "limit") in caplog.text, caplog.text
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall() == [("queued", 2)]
            assert {o for (o,) in con.execute("SELECT outcome FROM results")} <= {"device_lost"}
        assert not relay.exists()
        temp.write_text("45000\n")  # cooled down
        cool = run(0)
        assert cool["devices"]["pi-hot"]["state"] == "active", cool
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall() == [("done", 2)]
    finally:
        stop_lab_host(host)


def test_known_hosts_flag_is_the_file_host_keys_are_checked_against(lab, tmp_path):
    """A profile that names no known_hosts file: `--known-hosts FILE` is checked on every command
    that names devices, ~/.ssh/known_hosts without it, and an unknown key is refused by both."""
    lines = lab["profiles"][0].read_text().splitlines(keepends=True)
    profile = tmp_path / "pi-a.toml"
    profile.write_text("".join(line for line in lines if not line.startswith("known_hosts")))
    mine, home = tmp_path / "mine", {"HOME": str(tmp_path / "home")}

    def status(*flags):
        out = hwl("status", profile, "--json", *flags, env=home)
        row = json.loads(out.stdout)[0]
        assert out.returncode == (0 if row["usable"] else 1), out.stderr  # as the table form
        return row

    # the line it says to run checks the key against the same file: `hwl deploy DEVICE --trust-new-host` recorded
    # it in ~/.ssh/known_hosts, and this command went on refusing it
    error = status("--known-hosts", mine)["error"]
    assert f"is not in {mine}; check its fingerprint (ssh-ed25519 SHA256:" in error
    assert f"then record it with `hwl deploy {profile} --known-hosts {mine} --trust-new-host`" in error
    trusted = hwl("deploy", profile, "--known-hosts", mine, "--trust-new-host", "--no-selftest", env=home)
    assert trusted.returncode == 0 and len(mine.read_text().splitlines()) == 1, trusted.stderr
    assert status("--known-hosts", mine)["reachable"]
    # with no agent there, the line to deploy one carries the file too (it said "run `hwl deploy` for this device")
    assert hwl("undeploy", profile, "--known-hosts", mine, env=home).returncode == 0
    assert status("--known-hosts", mine)["error"].endswith(f": run `hwl deploy {profile} --known-hosts {mine}` first")
    assert hwl("deploy", profile, "--known-hosts", mine, "--no-selftest", env=home).returncode == 0
    assert f"is not in {tmp_path}/home/.ssh/known_hosts" in status()["error"]
    # onboarding: refused before its first batch, in one line with exit 2 (it logs in to the device first)
    empty = tmp_path / "empty"
    onboard = hwl("onboard", profile, "--space", "nb201", "--budget", "5", "--store", tmp_path / "lab.db",
                  "--out", tmp_path / "p.pt", "--known-hosts", empty, env=home, timeout=300)
    assert onboard.returncode == 2 and "Traceback" not in onboard.stderr, onboard.stderr
    assert f"hwl onboard: error: host key of pi-a ([{lab['hosts'][0].netns.address}]:{lab['hosts'][0].sshd.port}) " \
           f"is not in {empty}" in onboard.stderr
    assert f"`hwl deploy {profile} --known-hosts {empty} --trust-new-host`" in onboard.stderr, onboard.stderr
    assert not (tmp_path / "p.pt").exists()


@pytest.fixture
def pi_a_trusted(lab, tmp_path):
    """pi-a's profile with the lab's trusted known_hosts file (the hosts' keys read from their sshd's
    key files): strict host-key checking, without relying on an earlier test's deploy having
    recorded the key in the lab's file."""
    return write_ssh_profile(tmp_path, lab["hosts"][0], lab["key"], lab["trusted"])


def test_a_campaign_says_when_a_device_runs_an_agent_older_than_this_code(pi_a_trusted, lab_ray, artifacts, tmp_path,
                                                                          monkeypatch, caplog):
    """After a code change the device keeps the agent last deployed there: the campaign measured
    with it under this code's version and said nothing. Now it names the device and the `hwl deploy`
    line that reaches it (here by its file, as the campaign was given it). The campaigns run in this process on the
    module's Ray (the coordinator's warning is the same as `hwl campaign run` prints, without a Ray start each)."""
    from harness.profiles import load_profile
    from harness.remote.bundle import AgentBundle, build_bundle
    from harness.remote.connect import KNOWN_HOSTS_ENV, deploy_command, host_for
    from harness.remote.deploy import deploy

    profile = load_profile(pi_a_trusted)
    now = build_bundle()
    older = AgentBundle(data=now.data, sha256=now.sha256, agent_version="0.0.1")  # a bundle of other code
    with host_for(profile) as host:
        deploy(host, python=profile.host.python, agent_dir=profile.host.agent_dir, use_venv=False, bundle=older)
    try:  # no drift canaries (an export and 2 measurements a run): the agent's version is said when it answers
        out = _run_one(tmp_path / "lab.db", pi_a_trusted, artifacts, caplog)
        assert out["devices"]["pi-a"]["done"] == 1, out
        assert f"pi-a: its agent {older.name} is not this hwl's ({now.name})" in caplog.text
        # by its file: `hwl deploy pi-a` said "unknown device 'pi-a'", the profile being no known name
        assert f"run `hwl deploy {pi_a_trusted}` to update it" in caplog.text
        # a profile with no known_hosts of its own is reached through the campaign's --known-hosts (set as
        # HWL_KNOWN_HOSTS for the coordinator): so is deploy
        trusted = next(line for line in pi_a_trusted.read_text().splitlines() if line.startswith("known_hosts"))
        bare = tmp_path / "bare" / "pi-a.toml"
        bare.parent.mkdir()
        bare.write_text(pi_a_trusted.read_text().replace(trusted + "\n", ""))
        known_hosts = trusted.split('"')[1]
        monkeypatch.setenv(KNOWN_HOSTS_ENV, known_hosts)
        assert deploy_command(load_profile(bare)) == f"hwl deploy {bare} --known-hosts {known_hosts}"
    finally:
        with host_for(profile) as host:
            deploy(host, python=profile.host.python, agent_dir=profile.host.agent_dir, use_venv=False)
    caplog.clear()
    again = _run_one(tmp_path / "lab2.db", pi_a_trusted, artifacts, caplog)
    assert again["devices"]["pi-a"]["done"] == 1 and "is not this hwl's" not in caplog.text, caplog.text


def _run_one(db, profile, artifacts, caplog) -> dict:
    """A campaign of one architecture on ``profile``'s device, on the module's Ray, its warnings in ``caplog``."""
    with Store(db) as s:
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs="1835", devices=(str(profile),)))
    with Store(db) as s, caplog.at_level(logging.WARNING, logger="harness.coordinator"):
        return run_campaign(s, cid, CoordinatorOptions(artifact_dir=artifacts, canary_every=0))
