"""Each model is measured in a child process, killed with its children past its time limits.

Parent side: :func:`run_measurement` starts ``python -m agents.child`` in a new session (its
own process group), pinned to the request's cores, sends it the job on stdin and reads progress
lines from its stdout. The child reports each phase ("load", "first", "warmup", "window i", "record");
a timed phase (every one but "load" and "record") that lasts over ``window_timeout_s``, or a whole job
over ``model_timeout_s``, gets the child and every process below it killed (rule 21): on Linux the child is
the subreaper of what it starts, so that includes a daemon that left its process group (agents.process_tree;
elsewhere only the group is killed). What is still running when a measurement ends is killed too, and named
in its record (``metadata["left_running"]``), as it may have disturbed the timing. A child that dies on its own
(a crash, the OOM killer) cannot do that, and what it started is no longer below it: the parent finds those by the
job's mark in their environment (``HWL_JOB_MARK``, Linux), kills them and names them in the failure's message, so
they do not run on beside every later measurement. An agent killed itself takes the child along
(PR_SET_PDEATHSIG) and can kill nothing: the job's mark, recorded in the agent's folder while the job runs, lets
the next agent there do it (agents.in_flight). However the child ends, the
parent returns a :class:`~agents.protocol.Result` with a typed outcome: a segfault in a runtime
is a ``runtime_error`` record, not a dead agent.

Child side (:func:`main`): pins itself to the core set *before* importing numpy or a runtime
(so their thread pools start inside it), moves the original stdout aside for progress lines
(whatever a runtime prints goes to stderr), loads the model, times it and writes the result.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agents import in_flight
from agents.errors import error_class
from agents.process_tree import JOB_MARK_ENV, become_subreaper, kill_descendants, kill_job, new_job_mark
from agents.protocol import Measure, Result

log = logging.getLogger(__name__)
STDERR_TAIL_CHARS = 2000
TIMED_PHASES_PREFIX = ("first", "warmup", "window")


# ---------------------------------------------------------------------------------------------
# parent side
def _kill_group(proc: subprocess.Popen, mark: str) -> list[str]:
    """SIGKILL the child, every process of its job (below it, those that left its group by setsid too, as the child
    is their subreaper; and those carrying its mark, which a child that died on its own left to init: see
    agents.process_tree) and its process group, then reap it. What was killed besides the child, described."""
    child = proc.pid if proc.returncode is None else None  # not reaped yet, so its pid is still its own
    if child is not None:
        try:
            os.kill(child, signal.SIGSTOP)  # it neither starts nor reaps a process while its tree is killed
        except ProcessLookupError:
            pass
    left = kill_job(mark, child=child)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()
    return left


def _reap(proc: subprocess.Popen, mark: str, grace_s: float = 10.0) -> list[str]:
    """Wait for a child that has sent its result (or closed its output); a child that hangs on
    exit (a runtime thread that never joins) is killed, and so is anything of its job left running."""
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("measuring process %d hung after its result; killing it", proc.pid)
    return _kill_group(proc, mark)


def _tail(f) -> str:
    f.seek(0)
    text = f.read().decode(errors="replace")
    return text[-STDERR_TAIL_CHARS:].strip()


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (``/proc/vmstat``), or
    None where that is not readable."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_measurement(request: Measure, model_path: str | Path | None, *, fingerprint_id: str = "",
                    cache_dir: str | Path | None = None, python: str = sys.executable,
                    cancel=None, in_flight_dir: Path | None = None) -> Result:
    """Measure one model in a pinned child process and return its typed result.

    Parameters
    ----------
    request : Measure
    model_path : path or None
        Model file (None for an architecture key or a command without a file). The child reads it once, checks
        its bytes against ``request.sha256`` and runs those bytes, whatever the file holds later.
    fingerprint_id : str
        Linked from the record.
    cache_dir : path, optional
        Where runtimes may cache compiled artifacts (TVM libraries).
    python : str
        Interpreter for the child.
    cancel : threading.Event, optional
        Set it to kill the child early (agent shutdown); the outcome is then ``timeout``.
    in_flight_dir : path, optional
        Where the job's mark is recorded while it runs, for the agent started after this one was killed
        (agents.in_flight).

    Raises
    ------
    HashMismatch, ModelNotFound
        The file the child read is not the one asked for (swapped since it was found), or is gone.
    """
    from agents.timing import TimingPolicy  # numpy-free, cheap

    policy = TimingPolicy.from_profile(request.profile, request.policy)
    thermal_wait_s = wait_until_cool(policy, cancel)
    if policy.cooldown_s:
        time.sleep(policy.cooldown_s)  # rule 8, outside every timed window
    start = time.monotonic()
    # The child learns the per-model limit's deadline (one monotonic clock per machine) to stop a model whose
    # policy cannot end by then as soon as its warmup shows it, rather than be killed at the limit.
    job = {"request": json.loads(_encode_request(request)), "model_path": str(model_path) if model_path else "",
           "fingerprint_id": fingerprint_id, "cache_dir": str(cache_dir) if cache_dir else "",
           "thermal_wait_s": thermal_wait_s, "model_deadline": start + policy.model_timeout_s}
    mark = new_job_mark()  # how what the child starts is found after the child is gone
    env = dict(os.environ, **{JOB_MARK_ENV: mark})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS"):
        env[var] = str(request.threads)
    # The child must import this very package, wherever the agent was started from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH", "")]))
    kills_before = oom_kills()
    with tempfile.TemporaryFile() as err, in_flight.recorded(in_flight_dir, mark, request.id):
        proc = subprocess.Popen([python, "-m", "agents.child"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        try:
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass
        outcome, left = _supervise(proc, policy, start, cancel, mark)
        elapsed = time.monotonic() - start
        if left:
            log.warning("%s: killed what measuring process %d left running: %s", request.id, proc.pid, "; ".join(left))
        if outcome is not None and outcome.get("refused"):  # the model it was given is not the one asked for
            raise error_class(outcome["refused"])(outcome["message"])
        if outcome is not None and outcome.get("event") == "result":
            return _timed_result(request, outcome, left, elapsed)
        tail = _tail(err)
        if outcome is not None:  # killed by us
            msg = outcome["message"] + (f": {'; '.join(left)}" if left else "")
            return Result(id=request.id, outcome="timeout", message=f"{msg}; stderr tail: {tail}" if tail else msg,
                          elapsed_s=elapsed)
        rc = proc.returncode
        if rc == -signal.SIGKILL and kills_before is not None and oom_kills() == kills_before:
            kind, why = "runtime_error", ("the measuring process was killed by SIGKILL from outside (not by the "
                                          "OOM killer: the kernel counted no OOM kill meanwhile)")
        elif rc == -signal.SIGKILL:
            kind, why = "oom", "the measuring process was killed by SIGKILL (most likely the kernel's OOM killer)"
        elif rc is not None and rc < 0:
            kind, why = "runtime_error", f"the measuring process died from {_signal_name(rc)}"
        else:
            kind, why = "runtime_error", f"the measuring process exited with status {rc} without a result"
        why = _with_leftovers(why, left, "which would have run on beside every later measurement")
        return Result(id=request.id, outcome=kind, message=f"{why}; stderr tail: {tail}" if tail else why,
                      elapsed_s=elapsed)


def _timed_result(request: Measure, outcome: dict, left: list[str], elapsed_s: float) -> Result:
    """The child's result; a process of its job that its own sweep missed (``left``: found by the job's mark after
    it ended) is added to its record's ``left_running``, as it ran beside the timing."""
    measurement, message = outcome.get("measurement"), outcome.get("message", "")
    recorded = ((measurement or {}).get("metadata") or {}).get("left_running") or []
    if recorded:
        log.warning("%s: killed what the measurement left running: %s", request.id, "; ".join(recorded))
    late = [p for p in left if p not in recorded]  # one the child killed may still be dying as it ends
    if late and measurement is not None:
        measurement["metadata"]["left_running"] = recorded + late
    if late:
        message = _with_leftovers(message, late, "which its own sweep missed")
    return Result(id=request.id, outcome=outcome["outcome"], message=message, measurement=measurement,
                  elapsed_s=elapsed_s)


def wait_until_cool(policy, cancel=None, *, read_temp_c=None, sleep=time.sleep, clock=time.monotonic) -> float:
    """Block until the hottest sensor is under ``policy.max_temp_c`` (rule 6); seconds waited.

    Raises
    ------
    DeviceTooHot
        Still too hot after ``policy.temp_give_up_s``.
    """
    from agents.errors import DeviceTooHot
    from agents.fingerprint import hottest_c

    if policy.max_temp_c <= 0:
        return 0.0
    read_temp_c = read_temp_c or hottest_c
    start = clock()
    while True:
        temp = read_temp_c()
        if temp is None or temp < policy.max_temp_c:
            return clock() - start
        waited = clock() - start
        if waited >= policy.temp_give_up_s or (cancel is not None and cancel.is_set()):
            raise DeviceTooHot(f"device at {temp:.1f} C, over the {policy.max_temp_c:g} C limit, for "
                               f"{waited:.0f} s; let it cool (or quarantine it) before measuring")
        log.info("device at %.1f C (limit %g C); waiting", temp, policy.max_temp_c)
        sleep(policy.temp_poll_s)


def _encode_request(request: Measure) -> str:
    from agents.protocol import encode
    return encode(request).decode()


def _supervise(proc: subprocess.Popen, policy, start: float, cancel, mark: str) -> tuple[dict | None, list[str]]:
    """Read progress lines until the result; enforce the limits. Returns the result line, a
    ``{"event": "killed", "message": ...}`` dict, or None when the child ended without a result; with what of its
    job was killed once it ended (described)."""
    model_deadline = start + policy.model_timeout_s
    window_deadline = None
    phase = "start"
    buf = b""
    fd = proc.stdout.fileno()
    while True:
        now = time.monotonic()
        deadlines = [model_deadline] + ([window_deadline] if window_deadline else [])
        if cancel is not None and cancel.is_set():
            left = _kill_group(proc, mark)
            why = f"cancelled during {phase} (agent shutting down)"
            return {"event": "killed", "message": why + "; it and the processes of its job were killed"}, left
        if now >= min(deadlines):
            left = _kill_group(proc, mark)
            if window_deadline and now >= window_deadline:
                why = f"phase '{phase}' ran past the per-window limit of {policy.window_timeout_s:g} s"
            else:
                why = f"the model ran past the per-model limit of {policy.model_timeout_s:g} s (in phase '{phase}')"
            return {"event": "killed", "message": why + "; it and the processes of its job were killed"}, left
        ready, _, _ = select.select([fd], [], [], min(0.2, max(0.0, min(deadlines) - now)))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return None, _reap(proc, mark)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("child wrote a non-JSON line: %r", line[:200])
                continue
            if event.get("event") == "result":
                proc.stdout.close()
                return event, _reap(proc, mark)
            phase = event.get("phase", phase)
            timed = phase.startswith(TIMED_PHASES_PREFIX)
            window_deadline = time.monotonic() + policy.window_timeout_s if timed else None


# ---------------------------------------------------------------------------------------------
# child side
def _measure(job: dict, report) -> dict:
    from agents import runtimes
    from agents.core_load import CoreLoadWatch
    from agents.errors import HashMismatch, HwlError, ModelNotFound, TooSlowForPolicy
    from agents.measurement import Measurement, MeasurementSpec
    from agents.protocol import decode
    from agents.runtimes.base import RunFailure, looks_like_oom
    from agents.timing import TimingPolicy, time_blocks
    from agents.verified import read_verified

    request = decode(json.dumps(job["request"]))
    policy = TimingPolicy.from_profile(request.profile, request.policy)
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report("load")
    try:
        # Read and hash the file here, once, and run those bytes: the agent's own check is on a file that can be
        # swapped before this process starts, and a runtime opening the path again could run another file.
        model = read_verified(job["model_path"], request.sha256) if job["model_path"] else None
        _keep_torch_out_of_tvm(request.runtime_name)
        adapter = runtimes.load(request.runtime_name)
        t0 = time.perf_counter_ns()
        prepared = adapter.prepare(request, model, job["cache_dir"] or None)
        init_ms = (time.perf_counter_ns() - t0) / 1e6
    except (HashMismatch, ModelNotFound) as exc:  # not the file asked for (a model, a TVM library): refused
        return {"refused": type(exc).__name__, "message": str(exc)}
    except RunFailure as exc:
        return {"outcome": exc.outcome, "message": str(exc)}
    except HwlError as exc:
        return {"outcome": "load_error", "message": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # a runtime's own error class: keep its name in the message
        outcome = "oom" if looks_like_oom(exc) else "load_error"
        return {"outcome": outcome, "message": f"{type(exc).__name__}: {exc}"}
    left_running = []  # what the runtime (a command's tool) started and left running, killed since
    try:
        if prepared.timing is not None:
            timing = prepared.timing(policy, report, seconds_left=_seconds_left(job),
                                     on_leftovers=left_running.extend)
        else:
            report("first")
            own = prepared.on_window
            on_window = report if own is None else (lambda phase: (own(phase), report(phase)))
            timing = time_blocks(prepared.block, policy, on_gpu=prepared.on_gpu, on_window=on_window,
                                 first=prepared.first, seconds_left=_seconds_left(job), watch=CoreLoadWatch())
        # Out of the last window before the clean-up below (closing the runtime, the sweep of /proc for what it
        # left running) and the statistics (a bootstrap): none of them is part of its time limit.
        report("record")
    except RunFailure as exc:
        return {"outcome": exc.outcome, "message": str(exc)}
    except TooSlowForPolicy as exc:  # the harness reads the class name: no retry, nothing charged to the device
        return {"outcome": "timeout", "message": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        outcome = "oom" if looks_like_oom(exc) else "runtime_error"
        return {"outcome": outcome, "message": f"{type(exc).__name__}: {exc}"}
    finally:
        if prepared.close is not None:
            prepared.close()
        left_running += kill_descendants(os.getpid())  # a runtime's server, say: off the device's cores
    arch = request.labels.get("arch") or _arch_label(request)
    spec = MeasurementSpec(arch=str(arch), model_sha256=request.sha256, input_shape=tuple(prepared.input_shape),
                           batch=request.batch, dtype=prepared.dtype or request.dtype, runtime=request.runtime_name,
                           runtime_version=prepared.runtime_version, provider=prepared.provider,
                           build_hash=prepared.build_hash, threads=request.threads,
                           cores=tuple(request.cores), profile=policy.name)
    meta = {"policy": policy.to_dict(), "warmup_runs": timing.warmup_runs, "warmup_ms": timing.warmup_ns / 1e6,
            "labels": dict(request.labels), "started_at": started_at,
            "scope": prepared.metadata.get("scope", "compute"),
            "seed": request.seed, "runtime": prepared.metadata,
            "thermal_wait_s": job.get("thermal_wait_s", 0.0),
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    if left_running:
        meta["left_running"] = left_running
    m = Measurement(spec=spec, block_size=timing.block_size, samples_ns=timing.samples_ns, init_ms=init_ms,
                    first_ms=timing.first_ns / 1e6 if timing.first_ns is not None else None,
                    fingerprint_id=job.get("fingerprint_id", ""), metadata=meta,
                    core_load=timing.core_load or {"unknown": "this runtime times its windows itself"})
    outcome = "unstable" if m.is_unstable else "ok"  # unstable, drifting or contended: measured again
    message = f"flags {', '.join(m.flags)}" if m.is_unstable else ""
    if left_running:
        message = _with_leftovers(message, left_running, "which may have disturbed its timing")
    return {"outcome": outcome, "message": message, "measurement": m.to_dict()}


def _keep_torch_out_of_tvm(runtime: str) -> None:
    """tvm_ffi imports torch, where it is installed, before itself (a workaround for a symbol clash on Windows):
    4-6 s and hundreds of MB (and torch's own thread pool) in each TVM measuring process, which never uses torch.
    This process measures one model with one runtime, so for TVM torch's import fails here and tvm_ffi goes on
    without it."""
    if runtime == "tvm" and "torch" not in sys.modules:
        sys.modules["torch"] = None


def _with_leftovers(message: str, left: list[str], why: str) -> str:
    """``message``, then the processes in ``left`` (none: ``message`` as it is)."""
    named = f"killed what it left running, {why}: {'; '.join(left)}" if left else ""
    return "; ".join(filter(None, [message, named]))


def _seconds_left(job: dict):
    """Seconds left before the parent kills this process for the per-model limit (None: a job without one)."""
    deadline = job.get("model_deadline")
    return None if deadline is None else (lambda: deadline - time.monotonic())


def _arch_label(request: Measure) -> str:
    if request.arch:
        if "factory" in request.arch:
            return request.arch["factory"]
        label = f"{request.arch.get('space', '?')}:{request.arch.get('key', '?')}"
        # the dataset sizes the network (its classes, its input): nb201:1462 on cifar100 is another model
        return f"{label}:{request.arch['dataset']}" if request.arch.get("dataset") else label
    if request.model:
        return Path(request.model).name
    return request.sha256[:12] or request.runtime_name


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the agent dies, so no measurement outlives a killed agent."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def main() -> int:
    _die_with_parent()
    become_subreaper()  # an orphan of the runtime's processes stays in this tree, where it is found and killed
    job = json.loads(sys.stdin.readline())
    cores = job["request"].get("cores") or []
    if cores:
        os.sched_setaffinity(0, cores)  # before numpy / runtime imports start thread pools
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a runtime prints goes to stderr, never into the progress stream
    sys.stdout = sys.stderr

    def report(phase: str) -> None:
        proto.write(json.dumps({"event": "phase", "phase": phase}) + "\n")

    result = _measure(job, report)
    # one line, as every error the agent says: a runtime's message may hold several (TVM prints IR into its errors)
    result["message"] = " ".join(result.get("message", "").split())
    left = kill_descendants(os.getpid())  # what a load that failed left (a timed model's are in its record)
    if left:
        result["message"] = _with_leftovers(result.get("message", ""), left, "started while loading")
    result["event"] = "result"
    proto.write(json.dumps(result, allow_nan=False) + "\n")
    proto.flush()
    return 0


def exit_at_once(code: int) -> None:
    """End this process as soon as its result is out, skipping the interpreter's teardown: torch's took 1-3 s a
    model on this machine, while the agent, holding the device, waited to reap the process (a runtime's own files
    are removed by its ``close``, before the result)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    exit_at_once(main())
