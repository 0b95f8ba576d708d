"""Host (paramiko) against real sshd servers started by the test."""
import os
import re
import shutil
import subprocess
import time

import pytest

from harness.remote import AuthenticationError, Host, HostKeyError, HostUnreachable, RemoteCommandError
from tests.sshd import SSHServer, TestNetns, free_port, make_key, netns_available, sshd_available

pytestmark = pytest.mark.skipif(not sshd_available(), reason="openssh-server not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("sshd")
    key = make_key(work / "client_key")
    srv = SSHServer(work / "server", authorized_keys=[key]).start()
    srv.client_key = key
    yield srv
    srv.stop()


def _known_hosts(tmp_path, server):
    path = tmp_path / "known_hosts"
    path.write_text(server.public_host_key_line())
    return path


def test_run_and_put(server, tmp_path):
    with Host("h1", server.address, "root", server.client_key, port=server.port,
              known_hosts=_known_hosts(tmp_path, server)) as host:
        assert host.is_connected
        assert host.run("echo hello").stdout == "hello\n"
        src = tmp_path / "payload.bin"
        src.write_bytes(b"x" * 1000)
        host.put(src, str(tmp_path / "copied.bin"))
        assert host.exists(str(tmp_path / "copied.bin"))
        assert not host.exists(str(tmp_path / "missing.bin"))
        with pytest.raises(RemoteCommandError, match="exited 3"):
            host.run("exit 3")
    assert not host.is_connected
    host.close()  # twice is fine


def test_unknown_host_key_refused_then_trusted(server, tmp_path):
    known = tmp_path / "known_hosts"
    host = Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known)
    with pytest.raises(HostKeyError, match="--trust-new-host"):
        host.open()
    assert not known.exists()
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known,
              trust_new_host=True) as trusted:
        trusted.run("true")
    assert f"[{server.address}]:{server.port}" in known.read_text()
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known) as again:
        assert again.run("echo ok").stdout.strip() == "ok"


def test_trusting_a_host_makes_a_missing_ssh_folder_private_as_ssh_does(server, tmp_path):
    known = tmp_path / "home" / ".ssh" / "known_hosts"  # a first ssh host of a new account: no ~/.ssh yet
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known,
              trust_new_host=True) as trusted:
        trusted.run("true")
    assert known.parent.stat().st_mode & 0o777 == 0o700


def test_an_unknown_host_key_is_refused_with_the_fingerprint_to_check(server, tmp_path, caplog):
    listed = subprocess.run(["ssh-keygen", "-lf", f"{server.host_key}.pub"], capture_output=True, text=True,
                            check=True).stdout.split()[1]  # "256 SHA256:... comment (ED25519)"
    known = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError, match=f"ssh-ed25519 {re.escape(listed)}"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known).open()
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known,
              trust_new_host=True):
        pass
    assert f"recorded new host key ssh-ed25519 {listed}" in caplog.text


def test_changed_host_key_refused(server, tmp_path):
    other = make_key(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    blob = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    known.write_text(f"[{server.address}]:{server.port} {blob[0]} {blob[1]}\n")
    with pytest.raises(HostKeyError, match="does not match"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known).open()
    assert other.exists()


def test_wrong_key_refused(server, tmp_path):
    wrong = make_key(tmp_path / "wrong_key")
    with pytest.raises(AuthenticationError, match="refused key"):
        Host("h1", server.address, "root", wrong, port=server.port,
             known_hosts=_known_hosts(tmp_path, server)).open()
    with pytest.raises(AuthenticationError, match="does not exist"):
        Host("h1", server.address, "root", tmp_path / "nope", port=server.port,
             known_hosts=_known_hosts(tmp_path, server)).open()


@pytest.mark.skipif(not (shutil.which("ssh-agent") and shutil.which("ssh-add")), reason="needs ssh-agent")
def test_a_key_with_a_passphrase_is_used_through_ssh_agent(tmp_path, monkeypatch):
    key = tmp_path / "lab_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "lab secret", "-f", str(key)], check=True)
    srv = SSHServer(tmp_path / "server", authorized_keys=[key]).start()
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        known = _known_hosts(tmp_path, srv)

        def host():
            return Host("pi", srv.address, "root", key, port=srv.port, known_hosts=known)

        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        with pytest.raises(AuthenticationError, match=r"has a passphrase, and hwl never asks for one: load it into "
                                                      r"ssh-agent \(ssh-add .*lab_key\) .*no agent is running"):
            host().open()
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with pytest.raises(AuthenticationError, match=f"the agent at {sock} does not hold it"):
            host().open()
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho 'lab secret'\n")
        askpass.chmod(0o700)
        subprocess.run(["ssh-add", str(key)], env={**os.environ, "SSH_ASKPASS": str(askpass), "DISPLAY": ":0",
                                                   "SSH_ASKPASS_REQUIRE": "force"},
                       stdin=subprocess.DEVNULL, capture_output=True, check=True)
        with host() as h:  # the user typed the passphrase once, into the agent
            assert h.run("echo hi").stdout == "hi\n"
    finally:
        agent.kill()
        srv.stop()


def test_unreachable_port(tmp_path, server):
    port = free_port()
    with pytest.raises(HostUnreachable, match=f"127.0.0.1:{port}"):
        Host("gone", "127.0.0.1", "root", server.client_key, port=port, known_hosts=tmp_path / "kh",
             connect_timeout_s=2).open()


@pytest.mark.skipif(not netns_available(), reason="needs root and ip netns")
def test_host_in_network_namespace(tmp_path):
    ns = TestNetns("hwlt-host", "198.18.41").create()
    key = make_key(tmp_path / "client_key")
    srv = SSHServer(tmp_path / "srv", address=ns.address, netns=ns, authorized_keys=[key])
    try:
        srv.start()
        with Host("pi", ns.address, "root", key, port=srv.port,
                  known_hosts=_known_hosts(tmp_path, srv)) as host:
            assert host.run("echo $((6*7))").stdout.strip() == "42"
        ns.cut()
        with pytest.raises(HostUnreachable):
            Host("pi", ns.address, "root", key, port=srv.port, known_hosts=_known_hosts(tmp_path, srv),
                 connect_timeout_s=1).open()
        ns.restore()
        with Host("pi", ns.address, "root", key, port=srv.port,
                  known_hosts=_known_hosts(tmp_path, srv)) as host:
            assert host.run("true").ok
    finally:
        srv.stop()
        ns.delete()
