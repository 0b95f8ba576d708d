"""Real OpenSSH servers for tests: on a loopback port, or in a network namespace of its own.

Everything started here is stopped by process id in ``stop()``; namespaces and veth pairs
are deleted. Needs Debian's openssh-server (``.ci/run`` installs it when missing) and, for
namespaces, root and iproute2.
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

SSHD = "/usr/sbin/sshd"


def sshd_available() -> bool:
    return Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"hwlprobe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def make_key(path: Path) -> Path:
    """An ed25519 key pair at path / path.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


# Every test address lives in 198.18.0.0/15 (set aside for network tests). An `unreachable`
# route for the whole range keeps a packet to a missing or cut test host on this machine:
# without it, it would follow the default route out of the sandbox.
TEST_RANGE = "198.18.0.0/15"


def fence_test_range() -> None:
    subprocess.run(["ip", "route", "replace", "unreachable", TEST_RANGE], check=True, capture_output=True)


def unfence_test_range() -> None:
    """Drop the fence once no test namespace is left."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if "hwlt-" not in names:
        subprocess.run(["ip", "route", "del", "unreachable", TEST_RANGE], capture_output=True)


# How long a test run waits for another run on this machine to finish with a namespace of the same name.
NETNS_WAIT_S = 1800


class TestNetns:
    """A network namespace joined to the root namespace by a veth pair.

    The root side gets ``<prefix>.1``, the namespace ``<prefix>.2`` (a /30-style pair inside
    198.18.0.0/15, the range set aside for network tests). ``cut()``/``restore()`` take the
    link down and up to simulate a lost device host.
    """

    __test__ = False  # not a pytest class

    def __init__(self, name: str, prefix: str):
        self.name = name
        self.host_if = f"vh-{name}"[:15]
        self.ns_if = f"vn-{name}"[:15]
        self.host_address = f"{prefix}.1"
        self.address = f"{prefix}.2"
        self._lock = None

    def create(self) -> "TestNetns":
        run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
        self._hold_name()
        self._remove()  # a crashed run's leftover (its lock went with it)
        fence_test_range()
        run("ip", "netns", "add", self.name)
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        run("ip", "link", "set", self.ns_if, "netns", self.name)
        run("ip", "addr", "add", f"{self.host_address}/24", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        run("ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.address}/24", "dev", self.ns_if)
        run("ip", "netns", "exec", self.name, "ip", "link", "set", self.ns_if, "up")
        run("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        return self

    def cut(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, "down"], check=True)

    def restore(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, "up"], check=True)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def delete(self) -> None:
        self._remove()
        unfence_test_range()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def _hold_name(self, wait_s: float = NETNS_WAIT_S) -> None:
        """Hold this namespace's name (and so its addresses) for this process until :meth:`delete`: another
        test run on the machine (a second checkout, CI beside a developer) made the same namespace, and each
        deleted the other's, its sshd with it. A second run now waits for the first to finish with it."""
        self._lock = open(f"/tmp/{self.name}.netns.lock", "w")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.close()
                    self._lock = None
                    raise RuntimeError(f"test namespace {self.name} is held by another test run on this machine "
                                       f"for over {wait_s:.0f} s") from None
                time.sleep(0.5)


class SSHServer:
    """A key-only sshd with its own config and host key, started in the foreground (-D)."""

    def __init__(self, workdir: Path, *, address: str = "127.0.0.1", port: int | None = None,
                 netns: TestNetns | None = None, authorized_keys: list[Path] = (), sensors: Path | None = None,
                 config: list[str] = (), sftp_server: str = "internal-sftp"):
        """``sensors``: a folder mounted over /sys/class/thermal for sshd and every session it starts
        (a private mount namespace), so an agent on this host reads the temperatures a test writes.
        ``config``: more sshd_config lines (a HostCertificate, say). ``sftp_server``: the program sshd starts for
        SFTP (sshd refuses a second Subsystem line, so ``config`` cannot replace it)."""
        self.sensors = sensors
        self.sftp_server = sftp_server
        self.config = list(config)
        self.workdir = Path(workdir)
        self.address = address
        self.port = port or (free_port(address) if netns is None else 2222)
        self.netns = netns
        self.authorized_keys = list(authorized_keys)
        self.proc: subprocess.Popen | None = None
        self.host_key = self.workdir / "ssh_host_ed25519_key"

    def start(self, timeout_s: float = 10.0) -> "SSHServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            make_key(self.host_key)
        auth = self.workdir / "authorized_keys"
        auth.write_text("".join(Path(f"{k}.pub").read_text() for k in self.authorized_keys))
        config = self.workdir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.address}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {auth}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            f"Subsystem sftp {self.sftp_server}",
            # Debian's bash sources ~/.bashrc for every command sshd starts unless SHLVL says it is nested; root's
            # here runs `pyenv init` (0.17 s a command idle, 0.4 s loaded). The tests' commands name their python by
            # its path and need nothing of it.
            "SetEnv SHLVL=1",
            "LogLevel ERROR",
            *self.config,
            "",
        ]))
        cmd = [SSHD, "-D", "-e", "-f", str(config)]
        if self.sensors is not None:
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount --bind "$0" /sys/class/thermal && exec "$@"', str(self.sensors), *cmd]
        if self.netns is not None:
            cmd = self.netns.exec_prefix() + cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "sshd.log", "ab"))
        self._wait_listening(timeout_s)
        return self

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.workdir / 'sshd.log').read_text()[-2000:]}")
            if self._listening():
                return
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on {self.address}:{self.port} in {timeout_s} s")

    def _listening(self) -> bool:
        if self.netns is not None and ipaddress.ip_address(self.address).is_loopback:  # the namespace's own
            listed = subprocess.run([*self.netns.exec_prefix(), "ss", "-Hltn", f"sport = :{self.port}"],
                                    capture_output=True, text=True).stdout
            return bool(listed.strip())
        try:
            with socket.create_connection((self.address, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def public_host_key_line(self) -> str:
        """A known_hosts line for this server."""
        key_type, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {key_type} {blob}\n"

    def stop(self) -> None:
        if self.proc is None:
            return
        # sshd -D forks a process per connection (which starts the user's commands); they
        # outlive the listener, so kill every descendant by pid, then the listener.
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)
        psutil.wait_procs(children, timeout=5)
        self.proc = None


def trusted_loopback_host(workdir: Path, name: str = "dev1", **server_options):
    """A key-only sshd on loopback, a client key it accepts and a known_hosts file that trusts it.

    Returns ``(server, host)``: ``host`` is a ``harness.remote.Host`` for that server (not yet
    opened). The caller stops the server and closes the host. ``server_options`` go to ``SSHServer``.
    """
    from harness.remote import Host

    key = make_key(Path(workdir) / "client_key")
    srv = SSHServer(Path(workdir) / "server", authorized_keys=[key], **server_options).start()
    known = Path(workdir) / "known_hosts"
    known.write_text(srv.public_host_key_line())
    return srv, Host(name, srv.address, "root", key, port=srv.port, known_hosts=known)
