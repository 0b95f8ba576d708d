"""`hwl onboard` of a device reached over SSH that cannot be reached: one line, before any campaign waits on it."""
from __future__ import annotations

import shutil
import sys
import tempfile

import pytest

from tests.campaign_helpers import hwl, kill_leftovers
from tests.sshd import SSHServer, free_port, make_key, sshd_available

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sshd_available(), reason="needs sshd")]


def _ssh_profile(folder, port: int, key) -> str:
    path = folder / "pi-x.toml"
    path.write_text("\n".join([
        'name = "pi-x"', 'device_class = "embedded_cpu"', "", "[host]", 'name = "pi-x"', 'transport = "ssh"',
        'address = "127.0.0.1"', f"port = {port}", 'user = "root"', f'key = "{key}"',
        f'python = "{sys.executable}"', "use_venv = false", f'agent_dir = "{folder / "agent"}"',
        "reconnect_timeout_s = 0", "",
        "[runtime]", 'kind = "onnxruntime"', "threads = 1", "", "[measurement]", 'profile = "quick"', ""]))
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
