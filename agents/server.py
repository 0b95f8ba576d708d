"""The agent's stdio server: JSON lines in on stdin, JSON lines out on stdout, logs on stderr.

One measurement runs at a time, in a worker thread that supervises the measuring child process
(``agents.child``); the reader thread keeps answering ``ping``, ``status`` and ``hello`` while it
runs, so a health check never waits behind a long job. A line that cannot be read, or a request
that is refused, gets an ``error`` reply and the server keeps serving. See ``agents.protocol``
for every message.

Model files are found by explicit path or, by hash, in ``cache_dir`` (``<sha256>.onnx`` or
``<sha256>``), so a coordinator can push a file once and refer to it by hash afterwards. The
file's sha256 is checked against the request before anything runs, and again by the measuring
child on the bytes it reads once and runs (``agents.verified``): a file swapped in between is
refused with ``HashMismatch``, never run.

With a device lock (``HWL_DEVICE_LOCK``, a file; the ssh transport sets it) each measurement
holds an exclusive ``flock`` on that file, so two agents on one device never time at once. When
an SSH link drops, the device's sshd may not notice for minutes and the old agent finishes its
measurement; the agent the coordinator starts on reconnecting waits for it instead of timing
alongside it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from agents import __version__, fingerprint, in_flight, runtimes
from agents.child import run_measurement
from agents.errors import (AgentBusy, BadRequest, CoresUnavailable, HashMismatch, HwlError, ModelNotFound,
                           ProtocolError)
from agents.protocol import (MAX_LINE_BYTES, Error, Hello, Measure, Ping, Shutdown, Status, agent_runs_threads, decode,
                             encode)
from agents.timing import TimingPolicy

log = logging.getLogger(__name__)

DEVICE_LOCK_ENV = "HWL_DEVICE_LOCK"
IN_FLIGHT_FOLDER = "jobs-in-flight"  # under the cache folder, the one folder every agent has (agents.in_flight)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(request: Measure, cache_dir: Path | None) -> Path | None:
    """The verified model file of a request (None when the request needs no file).

    Raises
    ------
    ModelNotFound
        Neither the path nor the cache holds it (the message lists where it looked).
    HashMismatch
        The file's sha256 differs from ``request.sha256``.
    """
    if not request.model and not request.sha256:
        return None  # torch from an architecture key, or a command that needs no file
    tried = []
    if request.model:
        candidates = [Path(request.model)]
        if cache_dir is not None and not Path(request.model).is_absolute():
            candidates.append(cache_dir / request.model)
    else:
        candidates = [] if cache_dir is None else [cache_dir / f"{request.sha256}.onnx", cache_dir / request.sha256]
    for path in candidates:
        tried.append(str(path))
        if path.is_file():
            actual = sha256_of(path)
            if actual != request.sha256:
                raise HashMismatch(f"model {path} has sha256 {actual}, but the request says {request.sha256}; "
                                   f"refusing to measure it (push the file again or fix the request)")
            return path
    where = ", ".join(tried) if tried else "nowhere (no model path given and the agent has no --cache-dir)"
    raise ModelNotFound(f"model {request.model or request.sha256} not found; looked in {where}")


class AgentServer:
    """Serve the protocol on binary streams until ``shutdown`` or end of input.

    Parameters
    ----------
    instream, outstream : binary file objects
        Usually ``sys.stdin.buffer`` and ``sys.stdout.buffer``.
    cache_dir : path, optional
        Hash-keyed model cache (and TVM library cache under ``tvm/``); the marks of the jobs in flight are kept
        under ``jobs-in-flight/``, so that an agent started after one that was killed kills what its job left
        running (agents.in_flight). Without it they are not kept.
    usable_cores : iterable of int, optional
        CPUs requests may name (default: this process's affinity).
    device_lock : path, optional
        File locked while measuring (see the module doc).
    """

    def __init__(self, instream, outstream, *, cache_dir: str | Path | None = None, usable_cores=None,
                 device_lock: str | Path | None = None):
        self.instream = instream
        self.outstream = outstream
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.in_flight_dir = self.cache_dir / IN_FLIGHT_FOLDER if self.cache_dir else None
        self._swept: list[str] = []  # what killed agents' jobs left running, said in the next result
        self.device_lock = Path(device_lock).expanduser() if device_lock else None
        # Cores a measurement may be pinned to: the agent's affinity before it pinned itself.
        self.usable_cores = frozenset(usable_cores) if usable_cores else (
            frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset())
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._job_id = ""
        self._jobs_done = 0
        self._cancel = threading.Event()
        self._started = time.monotonic()
        self._fingerprint = fingerprint.collect()
        self._fingerprint_id = fingerprint.fingerprint_id(self._fingerprint)

    # ---- output --------------------------------------------------------------------------
    def send(self, msg) -> None:
        line = encode(msg)
        with self._write_lock:
            self.outstream.write(line)
            self.outstream.flush()

    def hello(self, id: str = "") -> Hello:
        return Hello(id=id, agent_version=__version__, pid=os.getpid(), fingerprint=self._fingerprint,
                     fingerprint_id=self._fingerprint_id, runtimes=runtimes.available(),
                     cache_dir=str(self.cache_dir) if self.cache_dir else "",
                     usable_cores=tuple(sorted(self.usable_cores)))

    def status(self, id: str = "") -> Status:
        with self._state_lock:
            busy = bool(self._job_id)
            return Status(id=id, state="busy" if busy else "idle", job_id=self._job_id,
                          jobs_done=self._jobs_done, uptime_s=time.monotonic() - self._started,
                          load_avg=tuple(os.getloadavg()), pid=os.getpid())

    # ---- main loop -------------------------------------------------------------------------
    def serve(self) -> int:
        """Write the hello line, then answer requests; returns the exit code."""
        self.send(self.hello())
        log.info("agent %s serving (pid %d, fingerprint %s)", __version__, os.getpid(), self._fingerprint_id)
        self._swept += in_flight.sweep(self.in_flight_dir)  # off the device's cores before the first job comes
        while True:
            raw = self.instream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            if len(raw) > MAX_LINE_BYTES:
                self._skip_rest_of_line(raw)
                self.send(Error(kind="ProtocolError", message=f"line over the {MAX_LINE_BYTES}-byte limit; ignored"))
                continue
            if not raw.strip():
                continue
            try:
                msg = decode(raw)
            except ProtocolError as exc:
                self.send(Error.from_exception(exc, id=_id_of(raw)))
                continue
            try:
                if self.handle(msg):
                    return 0
            except HwlError as exc:
                self.send(Error.from_exception(exc, id=msg.id))
            except Exception as exc:  # a bug must not kill the agent: report it, keep serving
                log.exception("request %s failed", msg.type)
                self.send(Error(id=msg.id, kind="HwlError", message=f"agent bug: {type(exc).__name__}: {exc}"))
        log.info("input closed; stopping")
        self._stop_worker()
        return 0

    def _skip_rest_of_line(self, head: bytes) -> None:
        """Drop the rest of an over-long line without holding it in memory."""
        chunk = head
        while chunk and not chunk.endswith(b"\n"):
            chunk = self.instream.readline(MAX_LINE_BYTES)

    def handle(self, msg) -> bool:
        """Answer one message; True when the server should stop."""
        if isinstance(msg, Hello):
            self.send(self.hello(msg.id))
        elif isinstance(msg, Ping):
            self.send(Ping(id=msg.id, sent_ns=msg.sent_ns, agent_ns=time.monotonic_ns()))
        elif isinstance(msg, Status):
            self.send(self.status(msg.id))
        elif isinstance(msg, Measure):
            self.start_measure(msg)
        elif isinstance(msg, Shutdown):
            log.info("shutdown requested: %s", msg.reason or "(no reason)")
            self._stop_worker()
            self.send(Shutdown(id=msg.id, reason=msg.reason))
            return True
        else:
            raise BadRequest(f"{msg.type!r} is a reply, not a request; send hello, ping, status, measure or shutdown")
        return False

    def start_measure(self, msg: Measure) -> None:
        if not msg.id:
            raise BadRequest("measure needs a non-empty 'id' (its result carries the same id)")
        with self._state_lock:
            if self._job_id:
                raise AgentBusy(f"measurement {self._job_id!r} is still running; wait for its result")
        check_cores(msg.cores, self.usable_cores)
        check_threads(msg.threads, msg.cores, self.usable_cores, msg.runtime_name)
        if msg.cores and msg.threads > len(msg.cores) and agent_runs_threads(msg.runtime_name):
            # Rule 5 wants threads == cores; more threads than cores is measured, but oversubscribed.
            log.warning("measure %s: %d threads on %d core(s) oversubscribes them", msg.id, msg.threads,
                        len(msg.cores))
        TimingPolicy.from_profile(msg.profile, msg.policy)  # refuse bad policy fields now, not in the worker
        _check_runtime(msg.runtime_name)
        model_path = resolve_model(msg, self.cache_dir)
        with self._state_lock:
            if self._job_id:
                raise AgentBusy(f"measurement {self._job_id!r} is still running; wait for its result")
            self._job_id = msg.id
            self._cancel.clear()
            self._worker = threading.Thread(target=self._run, args=(msg, model_path), name=f"measure-{msg.id}",
                                            daemon=True)
            self._worker.start()

    def _run(self, msg: Measure, model_path: Path | None) -> None:
        try:
            with hold_device_lock(self.device_lock, self._cancel):
                self._swept += in_flight.sweep(self.in_flight_dir)  # an agent killed since this one started
                reply = run_measurement(msg, model_path, fingerprint_id=self._fingerprint_id,
                                        cache_dir=self.cache_dir, cancel=self._cancel,
                                        in_flight_dir=self.in_flight_dir)
                reply = self._with_swept(reply)
            log.info("measure %s: %s %s", msg.id, reply.outcome, reply.message[:200])
        except HwlError as exc:  # e.g. DeviceTooHot
            reply = Error.from_exception(exc, id=msg.id)
        except Exception as exc:
            log.exception("measurement %s failed", msg.id)
            reply = Error(id=msg.id, kind="HwlError", message=f"agent bug: {type(exc).__name__}: {exc}")
        # Free the agent before replying, so the host's next measure is never refused as busy.
        self._finish()
        self.send(reply)

    def _with_swept(self, reply):
        """``reply`` whose message also names what killed agents' jobs left running, found since the last result."""
        reply, self._swept = in_flight.said_in(reply, self._swept), []
        return reply

    def _finish(self) -> None:
        with self._state_lock:
            if self._job_id:
                self._job_id = ""
                self._jobs_done += 1

    def _stop_worker(self) -> None:
        self._cancel.set()
        if self._worker is not None:
            self._worker.join(timeout=30)


@contextlib.contextmanager
def hold_device_lock(path: Path | None, cancel: threading.Event):
    """Hold an exclusive lock on ``path`` (nothing when None); waiting for it stops when ``cancel``
    is set (the measurement then sees ``cancel`` too and does not time anything)."""
    if path is None:
        yield
        return
    import fcntl  # POSIX only: the ssh transport's devices; other agents run without a lock

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        waited = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.warning("another agent on this device is measuring (%s is locked): waiting", path)
                    waited = True
                if cancel.wait(0.05):
                    yield
                    return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_runtime(name: str) -> None:
    """Refuse early a runtime that is not installed (without importing it here)."""
    if name not in runtimes.available():
        runtimes.load(name)  # raises RuntimeUnavailable with the installed choices


def check_cores(cores, allowed) -> None:
    """CoresUnavailable for cores outside ``allowed`` (this process's affinity, unless the agent was given a set)."""
    if cores and allowed:
        bad = sorted(set(cores) - allowed)
        if bad:
            raise CoresUnavailable(f"cores {bad} are not available to the agent; usable cores: {sorted(allowed)}")


def check_threads(threads: int, cores, usable, runtime: str = "") -> None:
    """CoresUnavailable for more threads than the cores they would run on: a request that pins no
    cores runs on all of ``usable``, so more threads than that would oversubscribe them unseen
    (a request that pins cores is checked against them by the profile, and warned about above).
    A command tool's threads are not counted (:func:`agents.protocol.agent_runs_threads`)."""
    if not agent_runs_threads(runtime):
        return
    if not cores and usable and threads > len(usable):
        raise CoresUnavailable(f"'threads' = {threads} asks more threads than the {len(usable)} core(s) usable "
                               f"here {sorted(usable)}; ask for at most {len(usable)}, or pin cores")


def _id_of(raw: bytes) -> str:
    """Best-effort request id of an unreadable message, so the error reply can be matched."""
    try:
        body = json.loads(raw)
        return str(body.get("id", "")) if isinstance(body, dict) else ""
    except ValueError:
        return ""


def serve_stdio(cache_dir: str | Path | None = None, usable_cores=None) -> int:
    """Serve on this process's stdin/stdout (protocol lines only on stdout); the device lock comes
    from ``HWL_DEVICE_LOCK`` (an environment variable: an older agent on a device just ignores it)."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the protocol
    sys.stdout = sys.stderr
    return AgentServer(sys.stdin.buffer, out, cache_dir=cache_dir, usable_cores=usable_cores,
                       device_lock=os.environ.get(DEVICE_LOCK_ENV)).serve()


__all__ = ["AgentServer", "hold_device_lock", "resolve_model", "serve_stdio", "sha256_of"]
