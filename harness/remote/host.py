"""One ``Host`` per device host: a paramiko SSH connection, opened lazily.

Lifecycle: ``Host(...)`` resolves parameters and opens nothing; the first ``run``/``put``
opens the connection (key authentication only, host key checked against a known_hosts
file with paramiko's ``RejectPolicy``); ``close()`` is safe to call twice; the class is a
context manager. Trusting a new host key is an explicit ``trust_new_host=True``, which
records the key in the known_hosts file (never a silent auto-add).
"""
from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import socket
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm

from harness.paths import why_not_a_file
from harness.remote.channel_open import ChannelRefused, open_channel
from harness.remote.known_hosts import HostTrust, read_known_hosts, trust_for
from harness.remote.errors import (AuthenticationError, HostKeyError, HostUnreachable,
                                   RemoteCommandError)

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
# A link that carries nothing for this long counts as lost: keepalives go out every quarter of it, and
# the kernel gives up on them then (TCP_USER_TIMEOUT), instead of after TCP's own 15 minutes or a
# measurement's whole reply timeout. A false alarm costs one attempt (device_lost) and a reconnect.
DEFAULT_LINK_TIMEOUT_S = 60.0
DISK_MARGIN_BYTES = 64 * 1024  # beyond a file's size, for the filesystem's own blocks


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def _why_unreachable(exc: OSError) -> str:
    """The socket errors behind paramiko's NoValidConnectionsError (refused, no route, ...),
    which its own message leaves out."""
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:  # was 'gaierror: [Errno -2] Name or ...'
        return "no host has that name: a typo in the address?"
    causes = getattr(exc, "errors", None)
    if causes:
        return "; ".join(sorted({c.strerror or str(c) for c in causes.values()}))
    return f"{exc.__class__.__name__}: {exc}"


def _host_key_id(hostname: str, port: int) -> str:
    """known_hosts spells a non-default port as [host]:port."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _mode_ssh_refuses(path: Path) -> int | None:
    """The mode of a private key file that ssh refuses to use ("UNPROTECTED PRIVATE KEY FILE"): one of this user's
    that any other user may read or write; None for a key ssh takes (0600, 0400; another user's key is not checked)."""
    st = path.stat()
    return stat.S_IMODE(st.st_mode) if st.st_uid == os.getuid() and st.st_mode & 0o077 else None


def _is_public_key(path: Path) -> bool:
    """Whether ``path`` holds an OpenSSH public key line (``ssh-ed25519 AAAA... comment``): a .pub given as the key."""
    try:
        words = path.read_text(errors="replace").split()
    except OSError:
        return False
    return len(words) >= 2 and not words[0].startswith("-") and words[1].startswith("AAAA")


class _RefuseNewHostPolicy(paramiko.RejectPolicy):
    """Refuse an unknown key, keeping it so that the refusal can show its fingerprint: the user is told to
    check it before trusting it, and ssh-keyscan alone shows no fingerprint."""

    offered: paramiko.PKey | None = None

    def __init__(self, check_key):
        self.check_key = check_key

    def missing_host_key(self, client, hostname, key):
        if self.check_key(key):
            return  # listed for the host's name without its port, which ssh takes too
        self.offered = key
        super().missing_host_key(client, hostname, key)


def _fingerprint(key: paramiko.PKey) -> str:
    """As ``ssh-keygen -lf`` and ssh's first-connection prompt show it: type and SHA256."""
    return f"{key.get_name()} {key.fingerprint}"


def _ends_without_newline(path: Path) -> bool:
    """Whether the file ``path`` has text whose last line lacks its newline."""
    text = path.read_bytes() if path.exists() else b""  # a known_hosts file, read whole by trust_for already
    return bool(text) and not text.endswith(b"\n")


def _hashes_names(path: Path) -> bool:
    """Whether the known_hosts file ``path`` keeps its host names hashed (ssh's HashKnownHosts, on by default on
    Debian and Ubuntu): one plain name among them would tell anyone who reads the file a host this user reaches."""
    return any(line.names.startswith("|1|") for line in read_known_hosts(path))


class _RecordNewHostPolicy(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key only because the user asked to, and write it down."""

    def __init__(self, known_hosts: Path, check_key):
        self.known_hosts = known_hosts
        self.check_key = check_key

    def missing_host_key(self, client, hostname, key):
        if self.check_key(key):  # raises for a revoked key, never recorded (as ssh's accept-new)
            return
        try:
            self._record(hostname, key)
        except OSError as exc:  # was "cannot reach pi-1 ... check the address, the port and that sshd runs there"
            where = f": {exc.filename}" if exc.filename and exc.filename != str(self.known_hosts) else ""
            raise HostKeyError(f"cannot record the host key of {hostname} in {self.known_hosts} ({exc.strerror}"
                               f"{where}): give a known_hosts file you may write (--known-hosts, or the profile's "
                               "known_hosts)") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("recorded new host key %s for %s in %s", _fingerprint(key), hostname, self.known_hosts)

    def _record(self, hostname: str, key: paramiko.PKey) -> None:
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as ssh makes ~/.ssh: yours alone
        # after a last line without its newline (a hand edit), as ssh does: glued to it, the new line made both
        # unreadable, so the other host's key was lost and this one unknown again
        start = "\n" if _ends_without_newline(self.known_hosts) else ""
        name = paramiko.HostKeys.hash_host(hostname) if _hashes_names(self.known_hosts) else hostname
        with open(self.known_hosts, "a") as f:
            f.write(f"{start}{name} {key.get_name()} {key.get_base64()}\n")


class Host:
    """An SSH connection to one device host.

    Parameters
    ----------
    name : str
        The device host's name (used in messages).
    address : str
        Host name or IP address.
    user : str
        Login user.
    key_file : str or Path
        Private key; password authentication is never tried.
    port : int, default 22
    known_hosts : str or Path, optional
        known_hosts file to verify against (default ``~/.ssh/known_hosts``).
    trust_new_host : bool, default False
        Record an unknown host key instead of refusing it.
    connect_timeout_s : float, default 10
    link_timeout_s : float, default 60
        An open connection whose link carries nothing for this long is closed as lost.
    deploy_command : str, default "hwl deploy DEVICE"
        The line its messages say to run (``connect.host_for`` gives the profile's, flags and all).
    profile : str, optional
        The device profile whose ``key`` ``key_file`` is, named in messages about the key.
    profile_file : str, optional
        The profile's file, named in messages about a key of it the host contradicts (``host.python``).
    key_named_by : str, optional
        Where ``key_file`` is written (the profile file's ``host.key``, an ssh config's IdentityFile), named when
        the file is missing: the device's name alone sent the user looking through every profile.
    jump : Host, optional
        The gateway this host is reached through: the connection runs in a ``direct-tcpip`` channel of the
        gateway's, which is opened first (and checked as any host is) and closed with this one.
    """

    def __init__(self, name: str, address: str, user: str, key_file, *, port: int = 22,
                 known_hosts=None, trust_new_host: bool = False, connect_timeout_s: float = 10.0,
                 link_timeout_s: float = DEFAULT_LINK_TIMEOUT_S, deploy_command: str = "hwl deploy DEVICE",
                 profile: str | None = None, profile_file: str | None = None, key_named_by: str | None = None,
                 jump: "Host | None" = None):
        self.name = name
        self.jump = jump
        self.profile = profile
        self.profile_file = profile_file
        self.key_named_by = key_named_by
        self.deploy_command = deploy_command  # what the messages say to run, with --known-hosts where given
        self.address = address
        self.user = user
        self.key_file = Path(key_file).expanduser()
        self.port = int(port)
        self.known_hosts = Path(known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
        self.trust_new_host = trust_new_host
        self.connect_timeout_s = connect_timeout_s
        self.link_timeout_s = link_timeout_s
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._agent: paramiko.Agent | None = None

    # -- identity --------------------------------------------------------------------
    def _identity(self):
        return (self.name, self.address, self.port, self.user, self.jump)

    def __eq__(self, other):
        return isinstance(other, Host) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    def __repr__(self):
        port = "" if self.port == 22 else f":{self.port}"
        via = f" via {self.jump!r}" if self.jump else ""
        return f"<Host {self.name} {self.user}@{self.address}{port}{via}>"

    # -- lifecycle -------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active()) and (self.jump is None or self.jump.is_connected)

    def open(self) -> "Host":
        if self.is_connected:
            return self
        self.close()
        try:
            client = self._login()
        except BaseException:
            self.close()  # the jump host's connection, opened for nothing
            raise
        self._watch_link(client.get_transport())
        self._client = client
        return self

    def _login(self) -> paramiko.SSHClient:
        """A client logged in to the host, its key checked; each failure as one line saying what to do."""
        host_id = _host_key_id(self.address, self.port)
        trust = trust_for(self.known_hosts, self.address, self.port, host=self.name)
        check_key = self._key_check(trust, host_id)
        policy = (_RecordNewHostPolicy(self.known_hosts, check_key) if self.trust_new_host
                  else _RefuseNewHostPolicy(check_key))
        pkey = self._load_key()
        try:
            try:
                client = self._connect(host_id, trust.usable_keys(), policy, pkey)
            except paramiko.BadHostKeyException as exc:
                if not check_key(exc.key):
                    raise
                # another line trusts the key the host shows: ssh takes any line, paramiko the first of a key type
                client = self._connect(host_id, {**trust.usable_keys(), exc.key.get_name(): exc.key}, policy, pkey)
        except paramiko.BadHostKeyException as exc:
            # the lines of the key paramiko expected, which may be of another type than the host's (as ssh's
            # "Offending RSA key in FILE:LINE" for a host that now shows an ed25519 key)
            lines = ", ".join(str(line.lineno) for line in trust.lines_of_type(exc.expected_key.get_name()))
            raise HostKeyError(
                f"host key of {self.name} ({host_id}) does not match {self.known_hosts}"
                f"{f' line {lines}' if lines else ''}: "
                f"got {_fingerprint(exc.key)}, expected {exc.expected_key.get_name()} with another value. "
                "If the host was reinstalled, remove that line from known_hosts and record the new key "
                f"with `{self.deploy_command} --trust-new-host`; otherwise someone may be intercepting the connection.",
                host=self.name) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                offered = getattr(policy, "offered", None)
                fingerprint = f" ({_fingerprint(offered)})" if offered is not None else ""
                raise HostKeyError(
                    f"host key of {self.name} ({host_id}) is not in "
                    f"{self.known_hosts}; check its fingerprint{fingerprint} on the host (ssh-keygen -lf "
                    f"/etc/ssh/ssh_host_*_key.pub){trust.authority_note()}, then record it with "
                    f"`{self.deploy_command} --trust-new-host` (or add it with ssh-keyscan)", host=self.name) from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise AuthenticationError(
                    f"{self.user}@{self.address}:{self.port} refused key {self.key_file}: add its public "
                    f"key to ~{self.user}/.ssh/authorized_keys on {self.name}", host=self.name) from None
            raise HostUnreachable(f"SSH to {self.name} ({self.address}:{self.port}) failed: {exc}",
                                  host=self.name) from None
        except (OSError, socket.timeout) as exc:
            raise HostUnreachable(
                f"cannot reach {self.name} at {self.address}:{self.port} ({_why_unreachable(exc)}); "
                "check the address, the port and that sshd runs there", host=self.name) from None
        return client

    def _connect(self, host_id: str, known: dict, policy, pkey: paramiko.PKey) -> paramiko.SSHClient:
        """A client logged in to the host, whose key paramiko checks against ``known`` (one key a key type, which
        also tells it which type to ask the host for) and gives ``policy`` when it has none of its type."""
        client = paramiko.SSHClient()
        for key in known.values():
            client.get_host_keys().add(host_id, key.get_name(), key)
        client.set_missing_host_key_policy(policy)
        try:
            client.connect(self.address, port=self.port, username=self.user, pkey=pkey, sock=self._through_jump(),
                           allow_agent=False, look_for_keys=False,
                           timeout=self.connect_timeout_s, banner_timeout=self.connect_timeout_s,
                           auth_timeout=self.connect_timeout_s)
        except BaseException:
            client.close()
            raise
        return client

    def _through_jump(self) -> paramiko.Channel | None:
        """The channel through the jump host to this host's SSH port (None without one): the gateway is opened
        first, and its own errors name it; here the gateway's refusal to forward and the device it cannot reach."""
        if self.jump is None:
            return None
        where = f"{self.name} at {self.address}:{self.port}"
        try:
            return open_channel(self.jump.client.get_transport(), "direct-tcpip", (self.address, self.port),
                                ("127.0.0.1", 0), timeout_s=self.connect_timeout_s)
        except ChannelRefused as exc:
            # the code's name and the gateway's own words, which tell a closed port from a missing route or name
            why = f"SSH channel open failure {exc.code}, {exc.text}" + (
                f", the jump host said {exc.description!r}" if exc.description else "")
            if exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                raise HostUnreachable(f"{self.jump.name} refuses to forward connections to {where} "
                                      f"({why}): its sshd_config needs AllowTcpForwarding yes (and a PermitOpen "
                                      "that lets this address through)", host=self.name) from None
            raise HostUnreachable(f"{self.jump.name} cannot reach {where} ({why}); check the address and the "
                                  "port as the jump host sees them, and that sshd runs there", host=self.name) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:  # "Timeout opening channel.", the link lost
            raise HostUnreachable(f"{self.jump.name} did not connect to {where} ({str(exc) or 'its link closed'}, "
                                  f"waited up to {self.connect_timeout_s:g} s); check the address and the port as the "
                                  "jump host sees them, and that the jump host is up", host=self.name) from None

    def _key_check(self, trust: HostTrust, host_id: str):
        """Whether ssh would trust a host key paramiko did not match, as a function; a HostKeyError for a key that
        known_hosts revokes for this host."""
        def check_key(key: paramiko.PKey) -> bool:
            if trust.revoked_by(key) is not None:
                raise HostKeyError(trust.revoked_message(self.name, host_id, key, self.deploy_command), host=self.name)
            return trust.accepts(key)
        return check_key

    def _watch_link(self, transport: paramiko.Transport) -> None:
        """Notice a dead link within ``link_timeout_s``, even while no reply is due (a long measurement)."""
        transport.set_keepalive(max(1, int(self.link_timeout_s / 4)))
        # Linux: unacknowledged keepalives end the connection (one through a jump host rides the gateway's socket,
        # which the gateway's own Host watches)
        if hasattr(socket, "TCP_USER_TIMEOUT") and isinstance(transport.sock, socket.socket):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.link_timeout_s * 1000))

    def _load_key(self) -> paramiko.PKey:
        named_by = f" (named by {self.key_named_by})" if self.key_named_by else ""
        if why := why_not_a_file(self.key_file):
            raise AuthenticationError(f"key file {self.key_file} for {self.name} {why}{named_by}", host=self.name)
        try:
            with warnings.catch_warnings():  # cryptography's DSA deprecation, a traceback-like line before ours
                warnings.simplefilter("ignore")
                key = paramiko.PKey.from_path(str(self.key_file))
        except (paramiko.pkey.UnknownKeyType, UnsupportedAlgorithm) as exc:  # was a traceback (a DSA key, id_dsa)
            kind = exc.key_type.__name__.removesuffix("PrivateKey") if hasattr(exc, "key_type") else str(exc)
            raise AuthenticationError(f"key {self.key_file} of {self._key_owner} is of a type hwl cannot use ({kind}); "
                                      "it takes ed25519, ecdsa and rsa keys: make one with `ssh-keygen -t ed25519` "
                                      "and add its .pub to the device's authorized_keys", host=self.name) from None
        except paramiko.PasswordRequiredException:  # an old PEM key with a passphrase
            return self._agent_key()
        except TypeError as exc:  # cryptography's word for an OpenSSH key with a passphrase
            if "password" not in str(exc):
                raise
            return self._agent_key()
        except (paramiko.SSHException, ValueError, OSError) as exc:
            if _is_public_key(self.key_file):  # cryptography said 'Unable to load PEM file ... MalformedFraming'
                private = self.key_file.with_suffix("") if self.key_file.suffix == ".pub" else "the file without .pub"
                raise AuthenticationError(f"key {self.key_file} for {self.name} is a public key: the profile's `key` "
                                          f"must be its private key ({private})", host=self.name) from None
            raise AuthenticationError(f"cannot read private key {self.key_file}{named_by}: {exc}",
                                      host=self.name) from None
        self._refuse_if_others_may_read()
        return key

    @property
    def _key_owner(self) -> str:
        return f"profile {self.profile}" if self.profile else self.name

    def _refuse_if_others_may_read(self) -> None:
        """ssh's rule for a key it reads from its file (as hwl does here; ssh-agent's copy both use as it is)."""
        mode = _mode_ssh_refuses(self.key_file)
        if mode is None:
            return
        raise AuthenticationError(f"key {self.key_file} of {self._key_owner} has mode {mode:04o}: other users may read "
                                  f"it, and ssh refuses such a key; make it yours alone with "
                                  f"`chmod 600 {shlex.quote(str(self.key_file))}`", host=self.name)

    def _agent_key(self) -> paramiko.AgentKey:
        """The profile's key, protected by a passphrase, as ssh-agent holds it (matched by its
        public key ``<key>.pub``); hwl never asks for a passphrase."""
        public = self.key_file.with_name(self.key_file.name + ".pub")
        hint = (f"key {self.key_file} has a passphrase, and hwl never asks for one: load it into ssh-agent "
                f"(ssh-add {self.key_file}) where hwl runs")
        try:
            blob = base64.b64decode(public.read_text().split()[1], validate=True)
        except (OSError, IndexError, ValueError):
            raise AuthenticationError(f"{hint}, and keep its public key {public} beside it", host=self.name) from None
        agent = paramiko.Agent()
        for key in agent.get_keys():
            if key.asbytes() == blob:
                self._agent = agent  # open until the connection is closed: the agent signs the login
                return key
        agent.close()
        where = os.environ.get("SSH_AUTH_SOCK")
        raise AuthenticationError(f"{hint}; " + (f"the agent at {where} does not hold it" if where else
                                                 "no agent is running (SSH_AUTH_SOCK is not set)"), host=self.name)

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.jump is not None:
            self.jump.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- work ------------------------------------------------------------------------
    @property
    def client(self) -> paramiko.SSHClient:
        return self.open()._client

    def run(self, command: str, *, check: bool = True, timeout_s: float = 120.0) -> CommandResult:
        """Run a command (through the login user's shell) and wait for it."""
        start = time.perf_counter()
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout_s)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
        if status == -1 and self._link_lost():  # no exit status because the link went, not the command
            shown = command if len(command) <= 80 else command[:77] + "..."
            raise self._lost(f"while it ran `{shown}`")
        result = CommandResult(command, status, out, err, time.perf_counter() - start)
        if check and status != 0:
            raise RemoteCommandError(
                f"on {self.name}: `{command}` exited {status}: {err.strip()[-500:]}",
                host=self.name, exit_status=status, stderr=err)
        return result

    @contextlib.contextmanager
    def said_if_lost(self, doing: str):
        """A link lost in the block (an SFTP transfer's "Server connection dropped", a closed socket) as one
        HostUnreachable naming the device, so a lab-wide command goes on to the next device; other errors as
        they are."""
        try:
            yield
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not self._link_lost():
                raise
            raise self._lost(f"during {doing} ({exc.__class__.__name__}: {exc})") from None

    def _lost(self, when: str) -> HostUnreachable:
        return HostUnreachable(f"lost the connection to {self.name} ({self.address}:{self.port}) {when}; check the "
                               "device is up and its network, then run the command again", host=self.name)

    def _link_lost(self, wait_s: float = 1.0) -> bool:
        """Whether the connection is gone, given its transport up to ``wait_s`` to notice: a command with no exit
        status was killed by a signal, or its link went (the channel may close before the transport sees it)."""
        deadline = time.monotonic() + wait_s
        while self.is_connected:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def open_channel(self, command: str) -> paramiko.Channel:
        """Start a long-running command and return its channel (stdio transport)."""
        channel = self.client.get_transport().open_session()
        channel.exec_command(command)
        return channel

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def put(self, local_path, remote_path: str) -> None:
        self.sftp.put(str(local_path), remote_path)

    def free_bytes(self, remote_path: str) -> int | None:
        """Free bytes on the disk under ``remote_path`` (``df``; None when it cannot tell)."""
        out = self.run(f"df -Pk {shlex.quote(remote_path)}", check=False, timeout_s=10).stdout.splitlines()
        try:
            return int(out[1].split()[3]) * 1024
        except (IndexError, ValueError):
            return None

    def exists(self, remote_path: str) -> bool:
        try:
            self.sftp.stat(remote_path)
            return True
        except FileNotFoundError:
            return False
