"""``DeviceWorker``: one device under test, as a plain class (wrapped by Ray in the coordinator).

It owns the session to the device's agent, measures one job at a time and reports every
outcome as a plain dict record, never raising for a failed measurement, so the coordinator
(which owns retries) sees a typed outcome for every attempt. A dead agent is restarted on the
next job. Devices on one host that share a core or a thermal domain exclude each other with
file locks (``fcntl.flock``, released by the kernel even when the worker is killed), held
around the whole measurement.

``status()`` reads only in-memory state, so it answers at once while a measurement runs (the
Ray actor gives it its own concurrency group).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from agents.errors import HwlError
from agents.protocol import Measure, Result
from harness.errors import UserError
from harness.paths import private_temp_folder
from harness.profiles import DeviceProfile, profile_from_dict
from harness.transport.errors import ConnectionLost, DeviceSetupError

log = logging.getLogger(__name__)

RECONNECT_FIRST_S = 1.0  # backoff for a lost remote device: 1, 2, 4, ... 30 s
RECONNECT_MAX_S = 30.0
RECOVER_TIMEOUT_S = 300.0  # for the profile's recover command; the reconnect loop then waits for the boot
# Agent error kinds that say the model file is the problem, not the device.
_LOAD_KINDS = ("ModelNotFound", "HashMismatch")
# Agent error kinds that say the device cannot measure any model now: its runtime or provider is not
# installed, the profile pins cores it lacks, or it stayed over its temperature limit for the policy's
# temp_give_up_s (rule 6). No architecture is to blame (the attempt is device_lost), and no retry or
# power cycle helps.
DEVICE_SETUP_KINDS = ("RuntimeUnavailable", "CoresUnavailable")
DEVICE_TOO_HOT = "DeviceTooHot"
DEVICE_UNFIT_KINDS = (*DEVICE_SETUP_KINDS, DEVICE_TOO_HOT)
# What the measuring child may say about the device rather than the model (agents.runtimes.command):
# a runtime it cannot run, or a vendor tool killed by a signal sent to it.
_DEVICE_KINDS_SAID_BY_CHILD = (*DEVICE_SETUP_KINDS, "ToolKilled")
# A timeout the child foresaw in the warmup: the model's inferences are too slow for the profile's policy to end
# within model_timeout_s. Neither the device's fault nor mended by measuring again (harness.coordinator).
TOO_SLOW_FOR_POLICY = "TooSlowForPolicy"


def lock_dir() -> Path:
    """HWL_LOCK_DIR (which users may share on purpose), else this user's private folder in the temp dir."""
    if os.environ.get("HWL_LOCK_DIR"):
        return Path(os.environ["HWL_LOCK_DIR"])
    return private_temp_folder(f"hwl-locks-{os.getuid()}", what="lock folder")


def local_agent_cache() -> Path:
    """The cache folder every agent this user runs on this machine shares (local and command devices, `hwl
    measure`): compiled TVM libraries (rule 24), and the records of jobs in flight that each sweeps."""
    return private_temp_folder(f"hwl-agent-cache-{os.getuid()}", what="agent cache")


# A lock key as its own file name: what every key of a host and thermal domain named plainly gives.
_LOCK_NAME_CHARS = r"\w.,:@+= -"
_PLAIN_LOCK_KEY = re.compile(f"[{_LOCK_NAME_CHARS}]{{1,150}}")


def lock_file_name(key: str) -> str:
    """The file of lock ``key``: ``<key>.lock`` when the key is a plain file name, else a cleaned
    name with a hash of the key (a thermal domain such as 'rack/1' made the name a path that did not
    exist, and the device was quarantined), so that every key still gets a file of its own."""
    if _PLAIN_LOCK_KEY.fullmatch(key):
        return f"{key}.lock"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{re.sub(f'[^{_LOCK_NAME_CHARS}]', '_', key)[:100]}-{digest}.lock"


@contextlib.contextmanager
def device_locks(keys, *, folder: Path | None = None):
    """Hold exclusive locks named ``keys`` (taken in sorted order, so two devices never deadlock; a key given twice
    is taken once, as a second flock of its file would wait for ever on the first)."""
    folder = folder or lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    try:
        for key in sorted(set(keys)):
            f = open(folder / lock_file_name(key), "a+")
            files.append(f)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        for f in reversed(files):
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def service_cores(profile: DeviceProfile) -> tuple[int, ...]:
    """Cores of this machine that the device does not measure on (for agents and Ray)."""
    all_cores = set(range(os.cpu_count() or 1))
    rest = all_cores - set(profile.runtime.cores or ())
    return tuple(sorted(rest))


class DeviceWorker:
    """Measure jobs on one device, one at a time.

    Parameters
    ----------
    profile : DeviceProfile or dict
        The device (a dict as from ``DeviceProfile.to_dict``, which is what Ray ships).
    session_factory : callable, optional
        ``session_factory(profile) -> Session``; default: the session of the host's transport (``local``,
        ``command`` or ``ssh``).

    Attributes
    ----------
    jobs_done : int
    agent_starts : int
        How often an agent session was opened (1 + restarts).
    """

    def __init__(self, profile, *, session_factory=None):
        self.profile = profile if isinstance(profile, DeviceProfile) else profile_from_dict(profile)
        self._session_factory = session_factory or _default_session
        self._session = None
        self._state_lock = threading.Lock()
        self._running: dict | None = None
        self.jobs_done = 0
        self.agent_starts = 0
        self.reconnect_error: str | None = None  # while the device is being reconnected
        self._started = time.time()

    # -- session ---------------------------------------------------------------------------
    def _open(self):
        if self._session is not None and self._session.is_connected:
            return self._session
        if self.profile.host.transport == "local":
            return self._open_once()
        # A remote device that dropped off (link cut, host rebooting): keep trying with backoff
        # for reconnect_timeout_s, so an outage costs the job in flight one attempt, not the
        # device its place in the campaign.
        deadline = time.monotonic() + self.profile.host.reconnect_timeout_s
        delay_s = RECONNECT_FIRST_S
        while True:
            try:
                session = self._open_once()
                self.reconnect_error = None
                return session
            except ConnectionLost as exc:
                self.reconnect_error = str(exc)  # status() tells the coordinator why it is slow
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise
                wait_s = min(delay_s, left_s)  # the last try at the deadline, not one backoff before it
                log.warning("%s: %s; reconnecting in %.0f s", self.profile.name, exc, wait_s)
                time.sleep(wait_s)
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)

    def _open_once(self):
        self._close_session()
        check_host_programs(self.profile)
        session = self._session_factory(self.profile)
        # Ray may run this process on the service cores only; the agent must see every core, so
        # widen this thread's affinity while the subprocess is forked (the agent then pins
        # itself to the service cores and each measurement to the profile's cores).
        old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        try:
            if old is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            session.open()
        finally:
            if old is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, old)
        self._session = session
        self.agent_starts += 1
        return session

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def hello(self) -> dict:
        """The agent's identity: version, pid, fingerprint and its id, runtimes, the cores a measurement
        may use (empty from an older agent), and the deployed bundle it runs from (ssh devices; None where
        the agent is this machine's own code)."""
        session = self._open()
        h = session.hello
        return {"agent_version": h.agent_version, "pid": h.pid, "fingerprint": h.fingerprint,
                "fingerprint_id": h.fingerprint_id, "runtimes": list(h.runtimes), "usable_cores": list(h.usable_cores),
                "agent_bundle": getattr(session, "deployed_bundle", None)}

    def close(self) -> None:
        self._close_session()

    def recover(self) -> dict:
        """Run the profile's ``recover`` command here (a reboot, a power cycle), then reconnect as
        after any lost link; returns :meth:`hello`. Raises RecoverFailed when the command fails."""
        self._close_session()
        command = self.profile.host.recover
        log.warning("%s: running its recover command `%s`", self.profile.name, command)
        try:
            proc = subprocess.run(shlex.split(command), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=RECOVER_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RecoverFailed(f"recover command `{command}` failed: {exc}") from None
        if proc.returncode != 0:
            raise RecoverFailed(f"recover command `{command}` exited {proc.returncode}: "
                                f"{(proc.stderr or proc.stdout).strip()[-400:]}")
        return self.hello()

    # -- status path -----------------------------------------------------------------------
    def status(self) -> dict:
        """Busy or idle, the running job, agent pid: answered without touching the agent.

        The running job's ``since`` is when it reached the worker; its ``measuring_since`` is when it was
        sent to the agent, None while it waits for the device's locks (another device on the same cores or
        thermal domain measuring) or for its agent to start. Its ``lock_wait_s`` is how long it waited for those
        locks (or has waited so far), ``locked_s`` how long it has held them (None before): durations, as the
        coordinator's clock may not be this machine's."""
        with self._state_lock:
            running = dict(self._running) if self._running else None
        if running is not None:
            now, locked = time.time(), running.pop("locked_since")
            running["lock_wait_s"] = (now if locked is None else locked) - running["since"]
            running["locked_s"] = None if locked is None else now - locked
        session = self._session
        return {"device": self.profile.name, "busy": running is not None, "running": running,
                "jobs_done": self.jobs_done, "agent_starts": self.agent_starts,
                "reconnect_error": self.reconnect_error,
                "agent_pid": getattr(session, "pid", None) if session is not None else None,
                "worker_pid": os.getpid(), "node_id": _ray_node_id(), "uptime_s": time.time() - self._started}

    # -- measurement -----------------------------------------------------------------------
    def measure(self, job: dict) -> dict:
        """Measure one job; returns a record dict (see :func:`record_from_result`).

        ``job`` keys: ``job_id``, ``attempt``, ``space``, ``arch``, ``model`` (path or ""),
        ``sha256`` (of the model file), ``artifact_sha256``, ``dataset``, ``labels``.
        """
        with self._state_lock:
            self._running = {"job_id": job.get("job_id"), "attempt": job.get("attempt"),
                             "arch": job.get("arch"), "since": time.time(), "measuring_since": None,
                             "locked_since": None}
        t0 = time.perf_counter()
        try:
            with contextlib.ExitStack() as held:
                refused = self._take_locks(held)
                locked = time.perf_counter()
                with self._state_lock:
                    self._running["locked_since"] = time.time()
                record = refused or self._measure_locked(job)
                record["lock_wait_s"] = locked - t0
        finally:
            with self._state_lock:
                self._running = None
        record["worker_s"] = time.perf_counter() - t0
        record["artifact_sha256"] = job.get("artifact_sha256")
        self.jobs_done += 1
        return record

    def _take_locks(self, held: contextlib.ExitStack) -> dict | None:
        """Take the device's locks into ``held``; None, or the record of an attempt lost with the device when they
        cannot be taken (HWL_LOCK_DIR a file, or a folder this user cannot write). The error escaped the worker:
        each job failed as a Ray task, its actor was killed, and the device's recover command (a power cycle) ran
        for a folder on this machine, its quarantine saying so in a traceback."""
        try:
            held.enter_context(device_locks(self.profile.lock_keys))
        except (OSError, UserError) as exc:
            return {"outcome": "device_lost", "error_kind": DeviceSetupError.__name__,
                    "error_message": f"{self.profile.name}: its device locks cannot be taken ({exc}); HWL_LOCK_DIR, "
                                     "when set, must name a folder this user can write"}
        return None

    def _measure_locked(self, job: dict) -> dict:
        try:
            session = self._open()
            hello = session.hello
            with self._state_lock:
                self._running["measuring_since"] = time.time()
            reply = session.request(self.measure_request(job))
        except (ConnectionLost, DeviceSetupError) as exc:  # the device's fault, not the model's
            self._close_session()  # restarted on the next job
            return {"outcome": "device_lost", "error_kind": type(exc).__name__, "error_message": str(exc)}
        except HwlError as exc:  # the agent refused the request (Error reply)
            kind = type(exc).__name__
            outcome = ("load_error" if kind in _LOAD_KINDS else "device_lost" if kind in DEVICE_UNFIT_KINDS
                       else "runtime_error")
            return {"outcome": outcome, "error_kind": kind, "error_message": str(exc)}
        record = record_from_result(reply)
        said_by_child = (reply.message or "").split(":", 1)[0]  # the child's "ErrorClass: message"
        if reply.outcome in ("load_error", "runtime_error") and said_by_child in _DEVICE_KINDS_SAID_BY_CHILD:
            record.update(outcome="device_lost", error_kind=said_by_child)  # as above: no architecture charged
        elif reply.outcome == "timeout" and said_by_child == TOO_SLOW_FOR_POLICY:
            record["error_kind"] = TOO_SLOW_FOR_POLICY
        record["fingerprint"] = hello.fingerprint
        record.setdefault("fingerprint_id", hello.fingerprint_id)
        return record

    def measure_request(self, job: dict) -> Measure:
        p = self.profile
        common = dict(id=f"j{job['job_id']}a{job['attempt']}", runtime=p.runtime.kind, batch=p.batch_size,
                      threads=p.runtime.threads, cores=tuple(p.runtime.cores or ()), profile=p.measurement,
                      policy=p.agent_policy(), options=p.runtime.options_dict(),
                      labels={"device": p.name, **(job.get("labels") or {})})
        if p.runtime.kind == "torch":
            return Measure(arch={"space": job["space"], "key": job["arch"], "dataset": job.get("dataset")},
                           **common)
        return Measure(model=job.get("model", ""), sha256=job.get("sha256", ""), **common)


def check_host_programs(profile: DeviceProfile) -> None:
    """Refuse a device whose commands start a program this machine lacks (``adb`` on a PC without Android's
    tools) before it measures: each push failed as a lost device, and the device was quarantined only after 3
    attempts, where a person must install the program or fix the profile. A program whose name is filled in
    per model, or a path relative to where the tool runs, is found out when it runs."""
    for key, template in profile.host_commands().items():
        try:
            program = shlex.split(template)[0]
        except (ValueError, IndexError):
            continue  # not a command line: the profile's own checks say so
        if "{" in program or ("/" in program and not os.path.isabs(program)):
            continue
        if shutil.which(program) is None:
            where = "is no executable file" if "/" in program else "is not on PATH"
            raise DeviceSetupError(f"{profile.source or 'profile'}: key {key!r} of device {profile.name} runs "
                                   f"{program!r}, which {where} on {socket.gethostname()}: install it there, or "
                                   "correct the profile", device=profile.name)


class RecoverFailed(RuntimeError):
    """The profile's recover command could not run or exited non-zero."""


def record_from_result(reply: Result) -> dict:
    """The flat record the store keeps, from an agent ``result`` reply."""
    m = reply.measurement or {}
    stats = dict(m.get("stats") or {})
    for key in ("init_ms", "first_ms"):
        stats[key] = m.get(key)
    spec = m.get("spec") or {}
    return {
        "outcome": reply.outcome, "flags": list(stats.pop("flags", []) or []), "stats": stats,
        "samples_ns": m.get("samples_ns"), "block_size": m.get("block_size"),
        "fingerprint_id": m.get("fingerprint_id") or None, "runtime_version": spec.get("runtime_version"),
        "measure_s": reply.elapsed_s, "error_kind": None if reply.outcome == "ok" else reply.outcome,
        "error_message": reply.message or None,
        "measurement": {k: v for k, v in m.items() if k not in ("samples_ns", "stats")},
    }


def _ray_node_id() -> str | None:
    """The Ray node this worker runs on (None outside Ray): shows which host an actor landed on."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def _default_session(profile: DeviceProfile):
    try:  # a folder another user made in the temp dir stops the device here, before it measures anything
        lock_dir()
        transport = profile.host.transport
        # The agent's cache keeps compiled TVM libraries between sessions (rule 24).
        cache = None if transport == "ssh" else local_agent_cache()
    except UserError as exc:
        raise DeviceSetupError(f"{profile.name}: {exc}", device=profile.name) from None
    if transport == "ssh":
        from harness.remote.connect import ssh_session_for
        return ssh_session_for(profile)
    if transport == "command":
        from harness.transport.command import CommandSession
        return CommandSession(push_template=profile.host.push, check_template=profile.host.check,
                              cores=service_cores(profile) or None, cache_dir=cache, name=profile.name)
    from harness.transport.local import LocalSession
    return LocalSession(cores=service_cores(profile) or None, cache_dir=cache, name=profile.name)
