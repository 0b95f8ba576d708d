"""``SSHSession``: the agent started over an SSH channel on a device host.

The agent deployed by ``hwl deploy`` (``harness.remote.deploy``) runs as
``<python> -m agents serve --stdio --cache-dir <agent_dir>/cache`` inside its versioned
directory; its stdin/stdout are the channel's, so no port is ever opened on the device.

Model files travel by SFTP into the agent's hash-keyed cache (``<sha256>.onnx``), only when
missing, and always before the ``measure`` request is sent: the device worker is serial and
holds the device's lock, so no upload overlaps a timed window. The cache keeps under its size
quota by removing the least recently used files first.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import posixpath
import shlex
from collections import deque
from pathlib import Path

from agents.errors import HashMismatch
from agents.protocol import Measure, Message
from agents.server import DEVICE_LOCK_ENV
from harness.remote.deploy import DeployError, locate_agent
from harness.remote.errors import AuthenticationError, HostKeyError, RemoteError
from harness.remote.host import DISK_MARGIN_BYTES, Host
from harness.transport.base import RECENT_PUSHES, LineSession
from harness.transport.errors import AgentLost, DeviceSetupError

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 8  # of the agent's log, in the message of a lost agent
EXIT_WAIT_S = 3.0
# The agent logs a line per job, so over months its log would grow without end: a session that starts
# with a log past this size moves it to agent.log.1 (dropping the one before), keeping at most two.
AGENT_LOG_KEEP_BYTES = 16 * 1024 * 1024


# Prints the first folder that a file cannot be made in, and the shell's words why, then exits 3.
_WRITE_CHECK = """mkdir -p {cache} 2>/dev/null
for d in {folders}; do
    if ! said=$( {{ : > "$d/.hwl-write-check.$$"; }} 2>&1 ); then printf '%s\\n%s\\n' "$d" "$said"; exit 3; fi
    rm -f "$d/.hwl-write-check.$$"
done"""


class SSHSession(LineSession):
    """Talk to a deployed agent over SSH.

    Parameters
    ----------
    host : Host
        The device host (opened lazily; host keys verified).
    agent_dir : str
        Where ``hwl deploy`` put the agent; the deployed bundle, its interpreter and the model
        cache are found there when the session opens (``harness.remote.deploy.locate_agent``).
    python, use_venv : str, bool
        As in the device profile (which interpreter runs the agent).
    agent_path, cache_dir : str, optional
        Explicit locations instead of looking them up under ``agent_dir`` (``python`` is then
        the interpreter itself).
    cache_quota_bytes : int
        Upper bound on the cache's size; older files are removed to stay under it.
    cores : sequence of int, optional
        Pin the agent process itself to these cores on the host.
    name : str
        Used in messages (the device name).
    """

    def __init__(self, host: Host, *, agent_dir: str = "~/.hwl", python: str = "python3", use_venv: bool = True,
                 agent_path: str | None = None, cache_dir: str | None = None,
                 cache_quota_bytes: int = 2 * 1024 ** 3, cores=None, name: str | None = None):
        super().__init__()
        self.host = host
        self.agent_dir = agent_dir
        self.use_venv = use_venv
        self.agent_path = agent_path
        self.python = python
        self.cache_dir = cache_dir
        self.cache_quota_bytes = int(cache_quota_bytes)
        self.cores = tuple(cores) if cores else ()
        self.name = name or host.name
        self._channel = None
        self._start_stderr = b""  # what the channel's shell said (the agent's own stderr goes to its log)
        self.pushed: deque[str] = deque(maxlen=RECENT_PUSHES)  # sha256 of the latest uploads (tests, logs)
        self._staged: set[str] = set()  # sha256 known to be in the device's cache
        self.deployed_bundle: str | None = None  # the bundle `hwl deploy` made current, once looked up

    def __repr__(self) -> str:
        return f"SSHSession({self.host!r}, agent_path={self.agent_path!r})"

    # -- LineSession hooks --------------------------------------------------------------
    def _connect(self):
        try:
            if self.agent_path is None:
                self.agent_path, self.python, found_cache = locate_agent(
                    self.host, agent_dir=self.agent_dir, python=self.python, use_venv=self.use_venv)
                self.cache_dir = self.cache_dir or found_cache
                self.deployed_bundle = posixpath.basename(self.agent_path.rstrip("/"))
            self._check_writable()
            # every agent of this host measures under one lock: see agents.server on dropped links
            command = (f"cd {shlex.quote(self.agent_path)} && {DEVICE_LOCK_ENV}={shlex.quote(self.lock_path)} "
                       f"PYTHONPATH=. exec {shlex.quote(self.python)} -m agents serve --stdio "
                       f"--cache-dir {shlex.quote(self.cache_dir)}")
            if self.cores:
                command += f" --cores {','.join(map(str, self.cores))}"
            # The agent's log stays on the device (`hwl logs`), beside its deployed bundles.
            agent_log = shlex.quote(self.log_path)
            # (wc prints 0 and fails where the log is a folder: "$(wc ... || echo 0)" gave "0 0", and the shell's
            # complaint about it led what a start that could not open its log said)
            command = (f"log_bytes=$(wc -c 2>/dev/null < {agent_log}) || log_bytes=0; "
                       f'[ "$log_bytes" -gt {AGENT_LOG_KEEP_BYTES} ] '
                       f"&& mv -f {agent_log} {agent_log}.1; {command} 2>> {agent_log}")
            self._start_stderr = b""
            self._channel = self.host.open_channel(command)
        except DeviceSetupError:  # said already
            raise
        except (AuthenticationError, HostKeyError, DeployError) as exc:
            raise DeviceSetupError(f"{self.name}: {exc}", device=self.name) from None
        except (RemoteError, OSError, EOFError) as exc:
            raise AgentLost(f"{self.name}: cannot start the agent over SSH: {exc}", device=self.name) from None
        except Exception as exc:  # paramiko.SSHException and friends: the link broke
            self.host.close()
            raise AgentLost(f"{self.name}: SSH failed while starting the agent: {exc}", device=self.name) from None
        return self._channel.makefile("rb"), self._channel.makefile_stdin("wb")

    def _check_writable(self) -> None:
        """Make the model cache, and raise DeviceSetupError naming the folder when it or the agent's own folder (its
        log) cannot be written: the start failed as a lost link, retried for reconnect_timeout_s, though no retry
        mends a disk gone read-only."""
        folders = {self._agent_home: "agent_dir", self.cache_dir: "the model cache"}
        out = self.host.run(_WRITE_CHECK.format(cache=shlex.quote(self.cache_dir),
                                                folders=" ".join(map(shlex.quote, folders))), check=False)
        if out.exit_status != 3:  # writable, or the check itself failed: the agent's start says what is wrong
            return
        folder, _, said = out.stdout.partition("\n")
        why = said.strip().rpartition(": ")[2] or "no reason given"
        raise DeviceSetupError(f"{self.name}: {folder} ({folders.get(folder, 'agent_dir')}) on {self.host.name} "
                               f"cannot be written ({why}): the agent writes its log and model cache there; make it "
                               "writable (a disk remounted read-only after errors needs checking), or give the profile "
                               "an agent_dir on another disk", device=self.name)

    def _disconnect(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None:
            return
        try:
            channel.shutdown_write()  # end of input: the agent cancels any job and exits
            # A healthy agent exits at once; a cut link never answers, so don't wait long.
            if not channel.status_event.wait(EXIT_WAIT_S):
                log.warning("%s: agent did not exit within %g s of end of input", self.name, EXIT_WAIT_S)
        except Exception:  # the link may be gone already
            pass
        channel.close()

    @property
    def log_path(self) -> str:
        """The agent's log file on the device (next to the ``agents/`` folder of bundles)."""
        return posixpath.join(self._agent_home, "agent.log")

    @property
    def lock_path(self) -> str:
        """The file every agent on the device locks while measuring (beside the log)."""
        return posixpath.join(self._agent_home, "measure.lock")

    @property
    def _agent_home(self) -> str:
        return posixpath.dirname(posixpath.dirname(self.agent_path.rstrip("/")))

    def _why_lost(self) -> str:
        channel = self._channel
        if channel is None:
            return "the session is closed"
        # sshd sends the exit status just after the end of the agent's output, which may be what was seen first;
        # the wait ends as soon as it comes or the channel closes (a kill, sent as exit-signal, sets no status)
        if self.host.is_connected:
            channel.status_event.wait(EXIT_WAIT_S)
        if channel.exit_status_ready() and channel.exit_status != -1:  # -1: closed with no status
            status = channel.exit_status
        elif self.host.is_connected:  # sshd reports a kill as exit-signal, which paramiko drops
            status = "unknown (the link is up: killed by a signal?)"
        else:
            status = "unknown (link lost?)"
        try:  # the link may still be up when only the agent died
            tail = self.host.run(f"tail -n {LOG_TAIL_LINES} {shlex.quote(self.log_path)}", check=False,
                                 timeout_s=5).stdout.strip()
        except Exception:
            tail = "(unreadable: the link is down)"
        said = self._shell_errors(channel)
        said = f"; its start said: {said}" if said else ""
        return f"agent on {self.host.address} exit status {status}{said}; its log ends with: {tail or '(nothing)'}"

    def _shell_errors(self, channel) -> str:
        """What the shell that starts the agent wrote on the channel's stderr, on one line: why the agent never ran (a
        log it could not open on a disk gone read-only, a folder gone), which the agent's own log cannot say. Kept, as
        a lost agent is explained more than once."""
        while channel.recv_stderr_ready():
            self._start_stderr += channel.recv_stderr(65536)
        return " ".join(self._start_stderr.decode(errors="replace").split())[-500:]

    def close(self) -> None:
        super().close()
        # Drop the TCP connection too: after a lost link the transport is dead, and a
        # fresh connection is what the next open needs.
        self.host.close()

    # -- model files --------------------------------------------------------------------
    def request(self, msg: Message, *, timeout_s: float | None = None) -> Message:
        if not (isinstance(msg, Measure) and msg.model and Path(msg.model).is_file()):
            return super().request(msg, timeout_s=timeout_s)
        self.open()
        local = Path(msg.model)
        self.stage_model(local, msg.sha256)
        msg = dataclasses.replace(msg, model="")  # the agent finds it in its cache by hash
        try:
            return super().request(msg, timeout_s=timeout_s)
        except HashMismatch as exc:
            # The device's copy went bad (a failing SD card, a copy edited by hand): the agent
            # refuses to run it, so it is pushed again, once; the model itself is not to blame.
            log.warning("%s: %s; pushing it again", self.name, exc)
            self.restage_model(local, msg.sha256)
            return super().request(msg, timeout_s=timeout_s)

    def restage_model(self, local_path: Path, sha256: str) -> str:
        """Replace the host's cached ``<sha256>.onnx`` with a fresh upload."""
        remote = posixpath.join(self.cache_dir, f"{sha256}.onnx")
        self._staged.discard(sha256)
        try:
            self.host.sftp.remove(remote)
        except FileNotFoundError:  # removed meanwhile (an eviction, the user)
            pass
        except (OSError, EOFError) as exc:
            raise AgentLost(f"{self.name}: removing the bad copy of {local_path.name} failed: {exc}",
                            device=self.name) from None
        return self.stage_model(local_path, sha256)

    def stage_model(self, local_path: Path, sha256: str) -> str:
        """Make sure the host's cache holds ``<sha256>.onnx``; upload it only when missing."""
        remote = posixpath.join(self.cache_dir, f"{sha256}.onnx")
        if sha256 in self._staged:  # checked (or pushed) earlier in this session: no round trip
            return remote
        try:
            if self.host.exists(remote):
                self.host.sftp.utime(remote, None)  # LRU order, without a remote shell
                self._staged.add(sha256)
                return remote
            size = local_path.stat().st_size
            self._make_room(size)
            part = remote + ".part"
            try:
                self.host.put(local_path, part)
            except OSError:  # a device disk smaller than the quota, or filled by something else
                if not self.host.is_connected or not self._room_on_disk(size, part):
                    raise
                self.host.put(local_path, part)
            self.host.sftp.posix_rename(part, remote)
            self._staged.add(sha256)
        except AgentLost:  # a full device disk, said as such
            raise
        except (RemoteError, OSError, EOFError) as exc:
            raise AgentLost(f"{self.name}: uploading {local_path.name} failed: {exc}", device=self.name) from None
        except Exception as exc:  # paramiko.SSHException: the link broke mid-upload
            raise AgentLost(f"{self.name}: uploading {local_path.name} failed: {exc}", device=self.name) from None
        self.pushed.append(sha256)
        log.info("%s: pushed %s (%d bytes)", self.name, local_path.name, local_path.stat().st_size)
        return remote

    def _room_on_disk(self, incoming_bytes: int, part: str) -> bool:
        """After a failed upload: if the device's disk is what is full, remove the partial file
        and least recently used models until ``incoming_bytes`` fit. False when the disk had room
        (another failure); raises AgentLost naming a full disk when nothing is left to remove."""
        needed = incoming_bytes + DISK_MARGIN_BYTES
        free = self._free_bytes()
        if free is None or free >= needed:
            return False
        with contextlib.suppress(OSError):
            self.host.sftp.remove(part)
        free = self._free_bytes() or 0
        log.warning("%s: the device's disk is full (%d kB free); making room in the model cache", self.name,
                    free // 1024)
        self._evict(self._cached(), lambda removed: free + removed >= needed, "the device's disk is full")
        free = self._free_bytes() or 0
        if free < needed:
            raise AgentLost(f"{self.name}: the disk under {self.cache_dir} on {self.host.address} is full "
                            f"({free // 1024} kB free, the model needs {incoming_bytes // 1024} kB) and no cached "
                            "model is left to remove: free space on the device", device=self.name)
        return True

    def _free_bytes(self) -> int | None:
        """Free bytes on the device's disk under the cache (None when it cannot tell)."""
        return self.host.free_bytes(self.cache_dir)

    def _make_room(self, incoming_bytes: int) -> None:
        """Remove least recently used cache files until ``incoming_bytes`` fits the quota."""
        entries = self._cached()
        total = sum(e.st_size for e in entries)
        self._evict(entries, lambda removed: total - removed + incoming_bytes <= self.cache_quota_bytes,
                    f"quota {self.cache_quota_bytes} bytes")

    def _cached(self) -> list:
        """The cached model files (SFTP attributes), least recently used first."""
        entries = [e for e in self.host.sftp.listdir_attr(self.cache_dir) if e.filename.endswith(".onnx")]
        return sorted(entries, key=lambda e: e.st_mtime)

    def _evict(self, entries, enough, why: str) -> None:
        """Remove ``entries`` (least recently used first) until ``enough(bytes removed)``."""
        removed = 0
        for entry in entries:
            if enough(removed):
                return
            self.host.sftp.remove(posixpath.join(self.cache_dir, entry.filename))
            self._staged.discard(entry.filename.removesuffix(".onnx"))
            removed += entry.st_size
            log.info("%s: evicted %s from the model cache (%s)", self.name, entry.filename, why)
