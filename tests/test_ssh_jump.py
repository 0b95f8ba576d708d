"""SSH devices behind a jump host, against real sshds: the gateway in a network namespace, the device listening on
that namespace's own loopback, which only the gateway reaches (this test process cannot connect there)."""
import hashlib
import sys
from pathlib import Path

import psutil
import pytest

from agents.protocol import Measure, Ping, Result
from harness.profiles import load_profile
from harness.remote import Host
from harness.remote.connect import host_for, ssh_session_for
from harness.remote.errors import AuthenticationError, HostKeyError, HostUnreachable
from harness.transport.errors import ConnectionLost
from tests.campaign_helpers import hwl
from tests.sshd import SSHServer, TestNetns, make_key, netns_available, sshd_available

pytestmark = pytest.mark.skipif(not (sshd_available() and netns_available()), reason="needs sshd, root, ip netns")
DEVICE_ADDRESS = "127.0.77.9"  # inside the namespace; here it is this machine's own loopback, with no sshd
TINY = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 2, "window_min_runs": 5, "window_min_s": 0.02,
        "cooldown_s": 0.0}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("jump")
    key, device_only = make_key(work / "key"), make_key(work / "device_only_key")
    ns = TestNetns("hwlt-jump", "198.18.61").create()
    servers = {
        "gateway": SSHServer(work / "gateway", address=ns.address, port=2222, netns=ns, authorized_keys=[key]),
        "closed": SSHServer(work / "closed", address=ns.address, port=2223, netns=ns, authorized_keys=[key],
                            config=["AllowTcpForwarding no"]),
        "device": SSHServer(work / "device", address=DEVICE_ADDRESS, port=2224, netns=ns,
                            authorized_keys=[key, device_only]),
    }
    try:
        for srv in servers.values():
            srv.start()
        known = work / "known_hosts"
        known.write_text("".join(srv.public_host_key_line() for srv in servers.values()))
        yield {"work": work, "key": key, "device_only": device_only, "known": known, "ns": ns, **servers}
    finally:
        for srv in servers.values():
            srv.stop()
        ns.delete()


def _profile(lab, folder: Path, *, jump: str = "root@198.18.61.2:2222", key=None, known=None, port: int = 2224,
             name: str = "pi-j", address: str = DEVICE_ADDRESS) -> Path:
    path = folder / f"{name}.toml"
    path.write_text("\n".join([
        f'name = "{name}"', 'device_class = "embedded_cpu"', "[host]", f'name = "{name}"', 'transport = "ssh"',
        f'address = "{address}"', f"port = {port}", 'user = "root"', f'key = "{key or lab["key"]}"',
        f'jump = "{jump}"', f'known_hosts = "{known or lab["known"]}"', f'python = "{sys.executable}"',
        "use_venv = false", f'agent_dir = "{lab["work"] / "hwl"}"', "[runtime]", 'kind = "onnxruntime"',
        "threads = 1", "cores = [0]", "[measurement]", 'profile = "quick"', ""]))
    return path


def _opened(path: Path) -> Host:
    return host_for(load_profile(path)).open()


def _tiny_model(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    path = folder / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_deploy_trusts_both_hops_and_a_measurement_runs_through_the_jump_host(lab, tmp_path):
    direct = Host("pi-j", DEVICE_ADDRESS, "root", lab["key"], port=2224, known_hosts=lab["known"], connect_timeout_s=2)
    with pytest.raises(HostUnreachable):  # the device is there only for the gateway: the hop is real
        direct.open()
    known = tmp_path / "known_hosts"  # neither key recorded yet
    profile = _profile(lab, tmp_path, known=known)
    refused = hwl("deploy", profile, "--no-selftest")
    assert refused.returncode == 1
    assert "host key of pi-j's jump host 198.18.61.2 ([198.18.61.2]:2222) is not in" in refused.stderr, refused.stderr
    deployed = hwl("deploy", profile, "--no-selftest", "--trust-new-host")
    assert deployed.returncode == 0, deployed.stderr
    assert sorted(line.split()[0] for line in known.read_text().splitlines()) == [
        f"[{DEVICE_ADDRESS}]:2224", "[198.18.61.2]:2222"]
    model = _tiny_model(tmp_path)
    measure = Measure(runtime="onnxruntime", model=str(model), sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
                      profile="quick", policy=TINY, threads=1)
    with ssh_session_for(load_profile(profile)) as session:
        reply = session.request(measure)
    assert isinstance(reply, Result) and reply.measurement is not None, reply
    assert reply.measurement["stats"]["median_ms"] > 0


def test_a_gateway_whose_host_key_changed_is_refused_naming_the_gateway(lab, tmp_path):
    other = make_key(tmp_path / "other_host_key")
    key_type, blob = Path(f"{other}.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[198.18.61.2]:2222 {key_type} {blob}\n" + lab["device"].public_host_key_line())
    with pytest.raises(HostKeyError, match=r"^host key of pi-j's jump host 198\.18\.61\.2 \(\[198\.18\.61\.2\]:2222\) "
                                           r"does not match .* line 1: "):
        _opened(_profile(lab, tmp_path, known=known))
    assert known.read_text().count("\n") == 2  # nothing recorded, nothing lost


def test_a_gateway_that_refuses_the_key_is_named(lab, tmp_path):
    with pytest.raises(AuthenticationError, match=r"^root@198\.18\.61\.2:2222 refused key .*device_only_key: add "
                                                  r"its public key .* on pi-j's jump host 198\.18\.61\.2$"):
        _opened(_profile(lab, tmp_path, key=lab["device_only"]))


def test_a_gateway_that_forbids_forwarding_is_one_line(lab, tmp_path):
    out = hwl("deploy", _profile(lab, tmp_path, jump="root@198.18.61.2:2223"), "--no-selftest")
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pi-j's jump host 198.18.61.2 refuses to forward connections to pi-j at " \
                               f"{DEVICE_ADDRESS}:2224" in lines[0] and "AllowTcpForwarding" in lines[0], out.stderr


def test_an_unreachable_gateway_and_a_device_the_gateway_cannot_reach_are_told_apart(lab, tmp_path):
    with pytest.raises(HostUnreachable, match=r"^cannot reach pi-j's jump host 198\.18\.61\.2 at 198\.18\.61\.2:2299 "):
        _opened(_profile(lab, tmp_path, jump="root@198.18.61.2:2299"))
    with pytest.raises(HostUnreachable, match=r"^pi-j's jump host 198\.18\.61\.2 cannot reach pi-j at "
                                              rf"{DEVICE_ADDRESS}:2299 \(SSH channel open failure 2, Connect failed, "
                                              r"the jump host said 'Connection refused'\); "):
        _opened(_profile(lab, tmp_path, port=2299))


def test_a_chain_of_jump_hosts_is_gone_through_in_order(lab, tmp_path):
    # the gateway reached through itself: two hops, the second opened in the first's channel
    with _opened(_profile(lab, tmp_path, jump="root@198.18.61.2:2222, root@198.18.61.2:2222")) as host:
        assert host.run("echo chained").stdout == "chained\n"
        assert host.jump.is_connected and host.jump.jump.is_connected
        assert host.jump.client.get_transport().sock.get_transport() is host.jump.jump.client.get_transport()
    assert not host.jump.jump.is_connected  # closed with the device's connection


def test_a_lost_gateway_link_is_a_lost_link_and_the_next_session_goes_through_a_new_one(lab, tmp_path):
    profile = load_profile(_profile(lab, tmp_path))
    with host_for(profile) as host:  # the agent there, as the first test leaves it whether or not it ran
        from harness.remote.deploy import deploy
        deploy(host, python=sys.executable, agent_dir=profile.host.agent_dir, use_venv=False)
    session = ssh_session_for(profile).open()
    try:
        gateway = psutil.Process(lab["gateway"].proc.pid)
        for child in gateway.children():  # the gateway's sshd for this connection: the link to it goes
            child.kill()
        with pytest.raises(ConnectionLost):
            session.request(Ping(sent_ns=1), timeout_s=5)
        session.close()
        with ssh_session_for(profile) as again:
            assert again.request(Ping(sent_ns=2)).sent_ns == 2
    finally:
        session.close()


def test_a_host_alias_of_the_users_ssh_config_reaches_the_device_and_its_host_key_checks_stay_on(lab, tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        f"Host pi-lab\n  HostName {DEVICE_ADDRESS}\n  Port 2224\n  User root\n  IdentityFile {lab['key']}\n"
        "  ProxyJump gw\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "Host gw\n  HostName 198.18.61.2\n  Port 2222\n  User root\n")
    profile = tmp_path / "pi-c.toml"
    profile.write_text('name = "pi-c"\ndevice_class = "embedded_cpu"\n[host]\nname = "pi-c"\ntransport = "ssh"\n'
                       'address = "pi-lab"\n[runtime]\nkind = "onnxruntime"\n')
    with pytest.raises(HostKeyError, match=rf"^host key of pi-c's jump host gw \(\[198\.18\.61\.2\]:2222\) is not in "
                                           rf"{tmp_path}/\.ssh/known_hosts"):
        _opened(profile)  # StrictHostKeyChecking no and UserKnownHostsFile are not hwl's to read
    (tmp_path / ".ssh" / "known_hosts").write_text(lab["known"].read_text())
    with _opened(profile) as host:
        assert (host.address, host.port, host.jump.address, host.jump.port) == (DEVICE_ADDRESS, 2224, "198.18.61.2",
                                                                                2222)
        assert host.run("echo through").stdout == "through\n"


def test_a_gateway_alias_logs_in_with_its_own_identity_file_through_its_own_proxy_jump(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(  # the gateway reached through itself, the outer hop as `outer`
        f"Host gw\n  HostName 198.18.61.2\n  Port 2222\n  User root\n  IdentityFile {lab['key']}\n  ProxyJump outer\n"
        f"Host outer\n  HostName 198.18.61.2\n  Port 2222\n  User root\n  IdentityFile {lab['key']}\n"
        "  StrictHostKeyChecking no\n")
    # the device's key is one the gateway refuses (test_a_gateway_that_refuses_the_key_is_named)
    known = tmp_path / "known_hosts"
    known.write_text(lab["device"].public_host_key_line())
    with pytest.raises(HostKeyError, match=r"^host key of pi-j's jump host outer \(\[198\.18\.61\.2\]:2222\) is not "):
        _opened(_profile(lab, tmp_path, jump="gw", key=lab["device_only"], known=known))
    assert known.read_text() == lab["device"].public_host_key_line()  # nothing added
    with _opened(_profile(lab, tmp_path, jump="gw", key=lab["device_only"])) as host:
        assert host.run("echo nested").stdout == "nested\n"
        gateway, outer = host.jump, host.jump.jump
        assert (gateway.name, outer.name, outer.jump) == ("pi-j's jump host gw", "pi-j's jump host outer", None)
        assert (host.key_file, gateway.key_file, outer.key_file) == (lab["device_only"], lab["key"], lab["key"])
        assert gateway.client.get_transport().sock.get_transport() is outer.client.get_transport()


def test_a_device_the_gateway_cannot_reach_is_one_line_in_the_gateways_own_words(lab, tmp_path):
    said = {}  # paramiko's exception names the code alone ("Connect failed"); the gateway said which failure
    for address, port in ((DEVICE_ADDRESS, 2299), ("no-such-device.invalid", 22)):
        out = hwl("deploy", _profile(lab, tmp_path, address=address, port=port), "--no-selftest")
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 1 and len(lines) == 1, out.stderr
        assert f"pi-j: error: pi-j's jump host 198.18.61.2 cannot reach it at {address}:{port} (SSH channel open " \
               "failure 2, Connect failed, the jump host said '" in lines[0], lines[0]
        said[address] = lines[0].split("the jump host said ")[1].split(")")[0]
    assert said[DEVICE_ADDRESS] == "'Connection refused'"
    assert "name" in said["no-such-device.invalid"].lower()  # the resolver's words: "Name or service not known"...
