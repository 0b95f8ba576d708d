"""`hwl onboard` of a device reached over SSH: one that cannot be reached is one line before any campaign waits on
it; one lost mid-batch stops the onboarding there."""
from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import sys
import tempfile

import pytest

from tests.campaign_helpers import FAST_POLICY, exported_models, hwl, kill_leftovers, signal_when
from tests.sshd import SSHServer, free_port, make_key, sshd_available

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sshd_available(), reason="needs sshd")]
FIRST_PICKS = "10983,8177,9860"  # the design's first batch of nb201 random:30 (seed 0)


def _ssh_profile(folder, port: int, key, policy=FAST_POLICY, reconnect_timeout_s: float = 0) -> str:
    """A profile with no [host] name: its device is driven from this machine's Ray node ('local')."""
    path = folder / "pi-x.toml"
    path.write_text("\n".join([
        'name = "pi-x"', 'device_class = "embedded_cpu"', "", "[host]", 'transport = "ssh"',
        'address = "127.0.0.1"', f"port = {port}", 'user = "root"', f'key = "{key}"',
        f'python = "{sys.executable}"', "use_venv = false", f'agent_dir = "{folder / "agent"}"',
        f"reconnect_timeout_s = {reconnect_timeout_s}", "",
        "[runtime]", 'kind = "onnxruntime"', "threads = 1", "",
        "[measurement]", 'profile = "quick"', "cooldown_s = 0.0", "",
        "[measurement.policy]", *(f"{k} = {v}" for k, v in policy.items()), ""]))
    return str(path)


@pytest.mark.parametrize("how", ["nothing listens", "changed host key"])
def test_an_unreachable_ssh_device_is_one_line_and_no_output(tmp_path, how):
    key = make_key(tmp_path / "client_key")
    known = tmp_path / "known_hosts"
    server = None
    if how == "nothing listens":
        port = free_port()
        known.write_text("")
    else:  # known_hosts holds another server's key for this address and port: refused, never recorded
        server = SSHServer(tmp_path / "sshd", authorized_keys=[key]).start()
        port = server.port
        other = make_key(tmp_path / "other_host_key")
        known.write_text(f"[127.0.0.1]:{port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    before = known.read_text()
    ray_tmp = tempfile.mkdtemp(prefix="hwlo-", dir="/tmp")
    try:
        done = hwl("onboard", _ssh_profile(tmp_path, port, key), "--space", "nb201", "--budget", "4",
                   "--candidates", "random:30", "--store", tmp_path / "lab.db", "--out", tmp_path / "out" / "p.pt",
                   "--known-hosts", known, "--canary-every", "0", env={"RAY_TMPDIR": ray_tmp}, timeout=400)
    finally:
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        if server is not None:
            server.stop()
    said = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(said) == 1, done.stderr  # not a quarantine warning and an error saying it again
    assert "pi-x" in said[0] and "127.0.0.1" in said[0] and f":{port}" in said[0]
    assert "run the same `hwl onboard` again" in said[0]
    assert not (tmp_path / "out").exists()  # the folder its checks made goes again
    assert known.read_text() == before


def test_a_device_lost_mid_batch_stops_the_onboarding_there(tmp_path, model_cache):
    """Said at once, as it reconnects (until when, how many attempts; before, nothing was said until it gave up),
    then in one error when it gives up (before, a warning of the quarantine said the same first)."""
    key = make_key(tmp_path / "client_key")
    server = SSHServer(tmp_path / "sshd", authorized_keys=[key]).start()
    known = tmp_path / "known_hosts"
    known.write_text(server.public_host_key_line())
    # the sshd goes within a poll (0.1 s) of the first job done, while the batch's two other jobs still load and time
    # their models. (1 s windows made each attempt seconds long; under load most came out contended, so each job was
    # measured 3 times before the first was done.)
    # 3 s a try: the coordinator asks a reconnecting device's status every 2 s, and the 2 tries left before the
    # quarantine keep it reconnecting for 6 s, a few asks, so the lost link is said while it lasts (4 s a try: 8 s)
    profile = _ssh_profile(tmp_path, server.port, key, FAST_POLICY, reconnect_timeout_s=3)
    db = tmp_path / "lab.db"
    ray_tmp = tempfile.mkdtemp(prefix="hwlo-", dir="/tmp")
    art = exported_models(model_cache, tmp_path / "art", FIRST_PICKS)  # seconds of torch less (else exported)

    def one_done():
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as con:
            return con.execute("SELECT count(*) FROM jobs WHERE state = 'done'").fetchone()[0] >= 1
        return False

    try:
        assert hwl("deploy", profile, "--known-hosts", known, "--no-selftest").returncode == 0
        stderr, code, _ = signal_when(
            ["onboard", profile, "--space", "nb201", "--budget", "5", "--initial", "3", "--candidates", "random:30",
             "--store", str(db), "--out", str(tmp_path / "p.pt"), "--known-hosts", str(known), "--canary-every", "0",
             "--artifacts", str(art)], ray_tmp, one_done, lambda pid: server.stop())
    finally:
        server.stop()
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert code == 1 and "hwl onboard: device pi-x was quarantined during onboarding" in stderr, stderr
    assert "what it measured is in the store" in stderr
    assert "pi-x quarantined" not in stderr  # the error alone says it: no warning before it saying the same
    assert "device_lost: cannot start the agent over SSH: cannot reach pi-x at " in stderr  # not 'device_lost: pi-x:'
    lost = [line for line in stderr.splitlines() if "lost the connection" in line]
    assert len(lost) == 1 and stderr.index(lost[0]) < stderr.index("hwl onboard: device pi-x was"), stderr
    assert "device pi-x: lost the connection; reconnecting for up to 3 s at each of its next " in lost[0]
    assert "then it is quarantined; last try: cannot start the agent over SSH: cannot reach pi-x at " in lost[0]
    with contextlib.closing(sqlite3.connect(db)) as con:  # no second batch planned on the lost device
        assert con.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 1
    assert not re.search(r"^\d+ measured", stderr, re.M)  # no round fitted on a cut batch ("2 measured")
    assert not (tmp_path / "p.pt").exists()


def test_with_address_the_device_is_left_to_its_own_ray_node(tmp_path):
    """On a cluster (--address) an ssh device is driven by the Ray node that offers its host, which may reach it
    where this machine cannot: no login from here comes first (it refused such a device as unreachable), so the
    first batch goes to the cluster (here: none answers)."""
    from harness.coordinator import CoordinatorOptions
    from harness.errors import HwlError
    from harness.onboard import ray_for
    from harness.profiles import load_profile

    profile = load_profile(_ssh_profile(tmp_path, free_port(), make_key(tmp_path / "client_key")))
    with pytest.raises(HwlError) as refused, ray_for(profile, CoordinatorOptions(address=f"127.0.0.1:{free_port()}")) \
            as start:
        start()
    assert "cannot join the Ray cluster" in str(refused.value) and "pi-x" not in str(refused.value)
