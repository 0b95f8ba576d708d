"""Host (paramiko) against real sshd servers started by the test."""
import os
import re
import shutil
import subprocess
import time

import paramiko
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


def test_the_test_servers_commands_skip_the_login_users_bashrc(server, tmp_path):
    """Debian's bash sources ~/.bashrc for a command sshd starts at shell level 1 (root's here runs `pyenv init`:
    0.41 s a command on a loaded machine against 0.05 s without it); the test servers start theirs at level 2."""
    with Host("h1", server.address, "root", server.client_key, port=server.port,
              known_hosts=_known_hosts(tmp_path, server)) as host:
        assert host.run("echo $SHLVL").stdout == "2\n"


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


def test_trusting_a_host_keeps_a_last_line_that_lacks_its_newline(server, tmp_path):
    # the new line was glued to it: both unreadable, the other host's key lost and this host unknown again
    other = make_key(tmp_path / "other_host_key")
    other_line = "otherhost " + " ".join(other.with_name("other_host_key.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(other_line)  # saved by an editor that adds no final newline
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known,
              trust_new_host=True) as trusted:
        trusted.run("true")
    assert known.read_text().splitlines() == [other_line, server.public_host_key_line().strip()]
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known) as again:
        assert again.run("echo ok").stdout == "ok\n"


def test_trusting_a_host_hashes_its_name_where_known_hosts_hashes_names(server, tmp_path):
    # ssh's HashKnownHosts (Debian's and Ubuntu's default): a plain name among hashed ones told who reads the
    # file a host this user reaches
    other = make_key(tmp_path / "other_host_key")
    hashed_other = paramiko.HostKeys.hash_host("otherhost")
    known = tmp_path / "known_hosts"
    known.write_text(f"{hashed_other} " + " ".join(other.with_name("other_host_key.pub").read_text().split()[:2])
                     + "\n")
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known,
              trust_new_host=True) as trusted:
        trusted.run("true")
    lines = known.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("|1|") for line in lines)
    assert server.address not in known.read_text()
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known) as again:
        assert again.run("echo ok").stdout == "ok\n"
    found = subprocess.run(["ssh-keygen", "-F", f"[{server.address}]:{server.port}", "-f", str(known)],
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stderr  # ssh finds it as its own hashed line


def test_a_host_key_that_cannot_be_recorded_is_said_so_not_an_unreachable_host(server, tmp_path):
    # was "cannot reach h1 at 127.0.0.1:PORT (FileExistsError: ...); check the address, the port and that sshd runs"
    (tmp_path / "ssh").write_text("a file where the folder should be")
    known = tmp_path / "ssh" / "known_hosts"
    with pytest.raises(HostKeyError, match=f"cannot record the host key of .* in {re.escape(str(known))} "
                                           r"\(File exists: .*\): give a known_hosts file you may write"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known,
             trust_new_host=True).open()


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


def test_a_changed_host_key_names_the_line_to_remove(server, tmp_path):
    # 'remove its old line from known_hosts' named no line, and a hashed name (ssh-keyscan -H) cannot be searched
    make_key(tmp_path / "old_host_key")
    old_type, old_blob = (tmp_path / "old_host_key.pub").read_text().split()[:2]
    hashed = paramiko.HostKeys.hash_host(f"[{server.address}]:{server.port}")
    known = tmp_path / "known_hosts"
    known.write_text(f"# lab hosts\nother.lab {old_type} {old_blob}\n{hashed} {old_type} {old_blob}\n")
    with pytest.raises(HostKeyError, match=f"does not match {re.escape(str(known))} line 3: got ssh-ed25519"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known).open()
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(tmp_path / "rsa_key")],
                   check=True)
    rsa_type, rsa_blob = (tmp_path / "rsa_key.pub").read_text().split()[:2]
    known.write_text(f"[{server.address}]:{server.port} {rsa_type} {rsa_blob}\n")  # ssh: 'Offending RSA key'
    with pytest.raises(HostKeyError, match=f"does not match {re.escape(str(known))} line 1: got ssh-ed25519"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known).open()


def test_wrong_key_refused(server, tmp_path):
    wrong = make_key(tmp_path / "wrong_key")
    with pytest.raises(AuthenticationError, match="refused key"):
        Host("h1", server.address, "root", wrong, port=server.port,
             known_hosts=_known_hosts(tmp_path, server)).open()
    with pytest.raises(AuthenticationError, match="does not exist"):
        Host("h1", server.address, "root", tmp_path / "nope", port=server.port,
             known_hosts=_known_hosts(tmp_path, server)).open()


def test_a_key_of_a_type_paramiko_cannot_use_is_named_before_any_connection(server, tmp_path):
    # a DSA key (an old lab's id_dsa, which ssh-keygen still makes) ended every command in paramiko's UnknownKeyType
    # traceback, and a campaign's session retried it as a lost link for reconnect_timeout_s
    import warnings

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pem = dsa.generate_private_key(key_size=1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    key = tmp_path / "id_dsa"
    key.write_bytes(pem)
    key.chmod(0o600)
    with pytest.raises(AuthenticationError, match=rf"key {re.escape(str(key))} of h1 is of a type hwl cannot use "
                                                  r"\(DSA\); it takes ed25519, ecdsa and rsa keys"):
        Host("h1", server.address, "root", key, port=server.port, known_hosts=_known_hosts(tmp_path, server)).open()


def test_a_public_key_given_for_the_key_is_named_as_such(server, tmp_path):
    # README's `--key ~/.ssh/hwl_lab` given as hwl_lab.pub (the file one pastes into authorized_keys) read
    # "cannot read private key ...: Unable to load PEM file. See https://cryptography.io/... MalformedFraming"
    public = server.client_key.with_name(server.client_key.name + ".pub")
    with pytest.raises(AuthenticationError) as refused:
        Host("h1", server.address, "root", public, port=server.port, known_hosts=_known_hosts(tmp_path, server)).open()
    assert str(refused.value) == (f"key {public} for h1 is a public key: the profile's `key` must be its private key "
                                  f"({server.client_key})")


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o610], ids=lambda mode: f"{mode:04o}")
def test_a_private_key_other_users_may_read_is_refused_before_any_connection_as_ssh_refuses_it(tmp_path, mode):
    # hwl logged in with a key that `ssh -i` refuses ('UNPROTECTED PRIVATE KEY FILE! Permissions 0644 ... are too
    # open'); nothing listens on the port, so only a refusal made before connecting names the key
    key = make_key(tmp_path / "lab key")
    key.chmod(mode)
    with pytest.raises(AuthenticationError) as refused:
        Host("pi", "127.0.0.1", "root", key, port=free_port(), known_hosts=tmp_path / "known_hosts").open()
    assert str(refused.value) == (f"key {key} of pi has mode {mode:04o}: other users may read it, and ssh refuses "
                                  f"such a key; make it yours alone with `chmod 600 '{key}'`")


@pytest.mark.parametrize("mode, owner", [(0o600, None), (0o400, None), (0o700, None), (0o644, "nobody")],
                         ids=["0600", "0400", "0700", "0644-of-nobody"])
def test_a_private_key_ssh_takes_is_taken(server, tmp_path, mode, owner):
    # as ssh (OpenSSH 9.2, tested against this sshd): a key of this user that only it may read, or another user's
    # key, whose mode ssh does not check; a group-writable folder above the key ssh does not check either
    if owner and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o775)
    key = folder / "lab_key"
    shutil.copy(server.client_key, key)
    key.chmod(mode)
    if owner:
        shutil.chown(key, owner)
    with Host("pi", server.address, "root", key, port=server.port, known_hosts=_known_hosts(tmp_path, server)) as h:
        assert h.run("echo in").stdout == "in\n"


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
        key.chmod(0o644)  # ssh takes the agent's copy without reading the file, whatever its mode: hwl too
        with host() as h:
            assert h.run("echo hi").stdout == "hi\n"
    finally:
        agent.kill()
        srv.stop()


def test_a_typo_in_the_address_says_no_host_has_that_name(tmp_path, server):
    # it said '(gaierror: [Errno -2] Name or service not known)'; '.invalid' never resolves (RFC 2606)
    with pytest.raises(HostUnreachable) as refused:
        Host("pi-1", "192.168.1.42.invalid", "root", server.client_key, port=server.port,
             known_hosts=_known_hosts(tmp_path, server)).open()
    assert str(refused.value) == ("cannot reach pi-1 at 192.168.1.42.invalid:%d (no host has that name: a typo in the "
                                  "address?); check the address, the port and that sshd runs there" % server.port)


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


def _ssh_accepts(server, known, address=None) -> bool:
    """The oracle: whether OpenSSH's own client, given only ``known``, trusts the server."""
    done = subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
                           "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                           "-o", "CheckHostIP=no", "-i", str(server.client_key), "-p", str(server.port),
                           f"root@{address or server.address}", "true"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0


def _host_line(server, names: str, marker: str = "") -> str:
    key_type, blob = server.public_host_key_line().split()[1:3]
    return f"{marker} {names} {key_type} {blob}\n".lstrip()


@pytest.mark.parametrize("pattern", ["*", "{id}", "127.0.0.*,dev1"])
def test_a_revoked_host_key_is_refused_as_ssh_refuses_it(server, tmp_path, pattern):
    # paramiko's HostKeys.load stopped at the @revoked line with InvalidHostKey: a traceback, for every host
    host_id = f"[{server.address}]:{server.port}"
    known = tmp_path / "known_hosts"
    known.write_text(_host_line(server, host_id) + _host_line(server, pattern.format(id=host_id), "@revoked"))
    if pattern == "127.0.0.*,dev1":  # names another host: the key stays trusted here
        assert _ssh_accepts(server, known)
        with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known) as host:
            assert host.run("echo ok").stdout == "ok\n"
        return
    assert not _ssh_accepts(server, known)
    with pytest.raises(HostKeyError, match=rf"is revoked by {re.escape(str(known))} line 2 \(@revoked\)"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known).open()
    known.write_text(_host_line(server, pattern.format(id=host_id), "@revoked"))  # revoked and nowhere trusted
    with pytest.raises(HostKeyError, match="is revoked by"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known,
             trust_new_host=True).open()
    assert known.read_text().count("\n") == 1, "a revoked key was recorded as trusted"


def test_a_host_only_a_cert_authority_line_names_gets_a_message_saying_so(tmp_path):
    # a lab whose hosts present certificates signed by its CA: ssh trusts them through the @cert-authority line,
    # paramiko has no host certificates, and hwl said a plain 'unknown host key' (on 66b02cf: InvalidHostKey)
    ca = make_key(tmp_path / "lab_ca")
    work = tmp_path / "server"
    work.mkdir()
    host_key = make_key(work / "ssh_host_ed25519_key")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "test host", "-n", "127.0.0.1", f"{host_key}.pub"],
                   check=True)
    srv = SSHServer(work, authorized_keys=[make_key(tmp_path / "client_key")],
                    config=[f"HostCertificate {host_key}-cert.pub"]).start()
    srv.client_key = tmp_path / "client_key"
    try:
        known = tmp_path / "known_hosts"
        ca_type, ca_blob = (tmp_path / "lab_ca.pub").read_text().split()[:2]
        known.write_text(f"# the lab's CA\n@cert-authority * {ca_type} {ca_blob}\n")
        assert _ssh_accepts(srv, known)
        with pytest.raises(HostKeyError, match=r"is not in .*; only @cert-authority \(line 2\) could trust it, and "
                                               r"hwl does not check host certificates, so record the host's own key"):
            Host("h1", srv.address, "root", srv.client_key, port=srv.port, known_hosts=known).open()
    finally:
        srv.stop()


@pytest.mark.parametrize("names, trusted", [("hashed", True), ("dev1,{id},10.0.0.9", True), ("*", True),
                                           ("[127.0.0.?]:{port}", True), ("{id},!{id}", False),
                                           ("[LOCALHOST]:{port}", True), ("{address}", True),
                                           ("|1|bad|bad", False)])
def test_host_names_in_known_hosts_match_as_ssh_matches_them(server, tmp_path, names, trusted):
    # paramiko compared names literally: it refused '*', '[127.0.0.?]:port' and capitals that ssh trusts, and
    # trusted a name that a '!' pattern on the same line rules out, which ssh refuses; and it looked for
    # [host]:port only, where ssh takes the bare host's line when no line of the key's type names [host]:port
    host_id = f"[{server.address}]:{server.port}"
    address = "localhost" if "LOCALHOST" in names else server.address
    known = tmp_path / "known_hosts"
    if names == "hashed":  # as ssh-keyscan -H writes it
        known.write_text(_host_line(server, host_id))
        subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
        assert known.read_text().startswith("|1|")
    else:
        known.write_text(_host_line(server, names.format(id=host_id, port=server.port, address=server.address)))
    assert _ssh_accepts(server, known, address) == trusted
    host = Host("h1", address, "root", server.client_key, port=server.port, known_hosts=known)
    if trusted:
        with host:
            assert host.run("echo ok").stdout == "ok\n"
    else:
        with pytest.raises(HostKeyError, match="is not in"):
            host.open()


def test_a_host_key_listed_after_an_older_key_of_its_type_is_trusted_as_ssh_trusts_it(server, tmp_path):
    # paramiko compared the host's key with the first key of its type only: 'does not match', where ssh, which
    # takes any line, connects (a reinstalled host's new key added with ssh-keyscan before its old line was removed)
    make_key(tmp_path / "old_host_key")
    old_type, old_blob = (tmp_path / "old_host_key.pub").read_text().split()[:2]
    host_id = f"[{server.address}]:{server.port}"
    known = tmp_path / "known_hosts"
    known.write_text(f"{host_id} {old_type} {old_blob}\n" + _host_line(server, host_id))
    assert _ssh_accepts(server, known)
    with Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known) as host:
        assert host.run("echo ok").stdout == "ok\n"
    known.write_text(f"{host_id} {old_type} {old_blob}\n" + _host_line(server, server.address))
    assert not _ssh_accepts(server, known)  # the bare host's line counts only where [host]:port has no key of its type
    with pytest.raises(HostKeyError, match="does not match"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known).open()
    known.write_text(f"{host_id} {old_type} {old_blob}\n" + _host_line(server, host_id, "@revoked"))
    assert not _ssh_accepts(server, known)
    with pytest.raises(HostKeyError, match="is revoked by"):
        Host("h1", server.address, "root", server.client_key, port=server.port, known_hosts=known).open()


def test_status_of_a_quarantined_device_that_cannot_be_reached_says_both(tmp_path, server):
    # the store's quarantine reason replaced the error of this status: a device now unreachable read as it did
    # when it was quarantined, with nothing saying it could not be reached
    from harness.profiles import parse_profile
    from harness.remote.lab import device_status

    port = free_port()
    (tmp_path / "kh").write_text("")
    profile = parse_profile({"name": "pi-gone", "device_class": "embedded_cpu",
                             "host": {"name": "pi-gone", "transport": "ssh", "address": "127.0.0.1", "port": port,
                                      "user": "root", "key": str(server.client_key),
                                      "known_hosts": str(tmp_path / "kh")},
                             "runtime": {"kind": "onnxruntime"}})
    states = {"pi-gone": {"state": "quarantined", "error": "3 failed attempts in a row"}}
    row = device_status(profile, device_states=states)
    assert row["reachable"] is False and row["state"] == "quarantined"
    assert row["error"].startswith(f"cannot reach pi-gone at 127.0.0.1:{port}"), row["error"]
    assert row["error"].endswith("; in the store it was quarantined: 3 failed attempts in a row"), row["error"]


def test_status_of_a_device_that_cannot_be_reached_names_it_once_in_its_line(tmp_path, capsys):
    """The line under `hwl status`'s table read 'pi-gone: cannot reach pi-gone at ...': the host's error, which names
    the device for commands that say nothing else (`hwl logs`), after the line's own name."""
    from harness.cli import main as hwl_main

    port = free_port()
    key = make_key(tmp_path / "key")
    (tmp_path / "kh").write_text("")
    profile = tmp_path / "pi-gone.toml"
    profile.write_text("\n".join(['name = "pi-gone"', 'device_class = "embedded_cpu"', "[host]", 'transport = "ssh"',
                                  'address = "127.0.0.1"', f"port = {port}", 'user = "root"', f'key = "{key}"',
                                  f'known_hosts = "{tmp_path / "kh"}"', "[runtime]", 'kind = "onnxruntime"', ""]))
    assert hwl_main(["status", str(profile)]) == 1
    out = capsys.readouterr().out
    assert f"\npi-gone: cannot reach it at 127.0.0.1:{port} (" in out, out
