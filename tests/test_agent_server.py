"""The stdio agent end to end: one session survives every kind of bad request and failure;
LocalSession drives it from the host side."""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.errors import BadRequest, HashMismatch, ModelNotFound
from agents.protocol import MAX_LINE_BYTES, PROTOCOL_VERSION, Hello, Measure, Ping, Result, Status
from agents.server import hold_device_lock, sha256_of
from harness.transport import AgentLost, AgentTimeout, LocalSession

ROOT = Path(__file__).resolve().parents[1]
TINY = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 2, "window_min_runs": 5, "window_min_s": 0.02,
        "cooldown_s": 0.0}
PY = sys.executable


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from harness.export import export_one
    rec = export_one("nb201", 77, tmp_path_factory.mktemp("models"))
    return Path(rec.path), sha256_of(Path(rec.path))


class RawAgent:
    """`python -m agents serve --stdio` spoken to line by line, with no client library."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([PY, "-m", "agents", "serve", "--stdio", *args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def send(self, body):
        line = body if isinstance(body, bytes) else json.dumps({"v": "1.0", **body}).encode()
        self.proc.stdin.write(line.rstrip(b"\n") + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "no reply from the agent"
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                assert chunk, f"agent closed its output: {self.proc.stderr.read().decode()[-2000:]}"
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, body, timeout_s=60.0):
        self.send(body)
        return self.recv(timeout_s)


def test_one_stdio_session_survives_every_failure(model, tmp_path):
    path, sha = model
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(path, cache / f"{sha}.onnx")  # as a coordinator pushing by hash would
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model at all")
    agent = RawAgent("--cache-dir", str(cache))
    try:
        hello = agent.recv()
        assert hello["type"] == "hello" and hello["agent_version"] and len(hello["fingerprint_id"]) == 16
        assert {"onnxruntime", "command"} <= set(hello["runtimes"]) and hello["cache_dir"] == str(cache)
        assert hello["fingerprint"]["cpu_model"] and hello["fingerprint"]["runtime_versions"]["onnxruntime"]
        usable = sorted(os.sched_getaffinity(0))
        assert hello["usable_cores"] == usable

        assert agent.ask({"type": "ping", "id": "p1", "sent_ns": 42}) | {"agent_ns": 0} == \
            {"type": "ping", "v": PROTOCOL_VERSION, "id": "p1", "sent_ns": 42, "agent_ns": 0}
        base = {"type": "measure", "runtime": "ort", "profile": "quick", "policy": TINY}

        r = agent.ask({**base, "id": "ok", "model": str(path), "sha256": sha, "cores": [0]})
        assert r["type"] == "result" and r["id"] == "ok" and r["outcome"] in ("ok", "unstable"), r
        assert r["measurement"]["fingerprint_id"] == hello["fingerprint_id"]
        r = agent.ask({**base, "id": "by-hash", "sha256": sha})
        assert r["type"] == "result" and r["outcome"] in ("ok", "unstable"), r

        r = agent.ask({**base, "id": "corrupt", "model": str(corrupt), "sha256": sha256_of(corrupt)})
        assert (r["type"], r["outcome"], r["measurement"]) == ("result", "load_error", None)
        r = agent.ask({**base, "id": "wrong-hash", "model": str(path), "sha256": "0" * 64})
        assert (r["type"], r["id"], r["kind"]) == ("error", "wrong-hash", "HashMismatch")
        assert sha in r["message"] and "refusing" in r["message"]
        r = agent.ask({**base, "id": "missing", "sha256": "1" * 64})
        assert (r["type"], r["kind"]) == ("error", "ModelNotFound") and str(cache) in r["message"]
        r = agent.ask({"type": "measure", "id": "no-fields"})
        assert (r["type"], r["id"], r["kind"]) == ("error", "no-fields", "BadRequest")
        assert "'runtime' must be one of" in r["message"]
        r = agent.ask(b"{this is not json")
        assert (r["type"], r["id"], r["kind"]) == ("error", "", "ProtocolError")
        r = agent.ask(b'{"type": "ping", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}')
        assert r["kind"] == "ProtocolError" and "byte limit" in r["message"]
        r = agent.ask({"type": "reboot", "id": "u"})
        assert (r["type"], r["id"], r["kind"]) == ("error", "u", "ProtocolError")
        assert "unknown message type" in r["message"]
        r = agent.ask({"type": "ping", "id": "v2", "v": "2.0"})
        assert r["kind"] == "ProtocolError" and "2.0" in r["message"] and PROTOCOL_VERSION in r["message"]
        r = agent.ask({**base, "id": "cores", "model": str(path), "sha256": sha, "cores": [4096]})
        assert (r["type"], r["kind"]) == ("error", "CoresUnavailable") and "4096" in r["message"]
        # no cores pinned: more threads than the cores usable here is refused, not oversubscribed silently
        r = agent.ask({**base, "id": "threads", "model": str(path), "sha256": sha, "threads": len(usable) + 1})
        assert (r["type"], r["id"], r["kind"]) == ("error", "threads", "CoresUnavailable")
        assert r["message"] == (f"'threads' = {len(usable) + 1} asks more threads than the {len(usable)} core(s) "
                                f"usable here {usable}; ask for at most {len(usable)}, or pin cores")

        # A measurement past its window limit; ping, status and a second measure are answered meanwhile.
        agent.send({"type": "measure", "id": "sleepy", "runtime": "command", "profile": "quick",
                    "policy": {**TINY, "window_timeout_s": 1.5},
                    "options": {"command": "sleep 30", "regex": "([0-9.]+)"}})
        st = agent.ask({"type": "status", "id": "st"})
        assert (st["state"], st["job_id"]) == ("busy", "sleepy")
        r = agent.ask({**base, "id": "second", "model": str(path), "sha256": sha})
        assert (r["type"], r["kind"]) == ("error", "AgentBusy")
        assert agent.ask({"type": "ping", "id": "p2"})["type"] == "ping"
        r = agent.recv()
        assert (r["id"], r["outcome"]) == ("sleepy", "timeout") and "per-window limit" in r["message"]

        r = agent.ask({"type": "measure", "id": "segv", "runtime": "command", "profile": "quick", "policy": TINY,
                       "options": {"command": [PY, "-c", "import ctypes; ctypes.string_at(0)"], "regex": "(1)"}})
        assert (r["outcome"], r["id"]) == ("runtime_error", "segv") and "SIGSEGV" in r["message"]

        st = agent.ask({"type": "status", "id": "st2"})
        assert (st["state"], st["jobs_done"]) == ("idle", 5)
        assert agent.ask({"type": "shutdown", "id": "bye", "reason": "test over"})["type"] == "shutdown"
        assert agent.proc.wait(timeout=10) == 0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
        agent.proc.stdout.close()
        agent.proc.stderr.close()
        agent.proc.stdin.close()


def test_local_session_measures_and_re_raises_agent_errors(model):
    path, sha = model
    with LocalSession(cores=[1]) as s:
        assert isinstance(s.hello, Hello) and s.is_connected
        assert os.sched_getaffinity(s.pid) == {1}
        assert s.request(Ping(sent_ns=7)).sent_ns == 7
        res = s.request(Measure(runtime="ort", model=str(path), sha256=sha, cores=(0,), profile="quick",
                                policy=TINY))
        assert isinstance(res, Result) and res.outcome in ("ok", "unstable"), res.message
        assert res.record().spec.cores == (0,) and res.record().metadata["affinity"] == [0]
        with pytest.raises(HashMismatch, match="refusing"):
            s.request(Measure(runtime="ort", model=str(path), sha256="0" * 64))
        with pytest.raises(ModelNotFound):
            s.request(Measure(runtime="ort", model=str(path) + ".missing", sha256=sha))
        with pytest.raises(BadRequest, match="unknown timing policy field"):
            s.request(Measure(runtime="ort", model=str(path), sha256=sha, policy={"repeat": 1}))
        assert isinstance(s.request(Status()), Status)
    assert not s.is_connected
    s.close()  # idempotent


def test_a_session_keeps_only_the_latest_replies_to_lines_the_agent_could_not_read():
    """A session lives for a whole campaign: the agent's error replies to garbled lines (they carry no id) were all
    kept, so a link that garbles lines grew the coordinator's memory for as long as it ran."""
    from harness.transport.base import UNMATCHED_KEPT

    with LocalSession() as s:
        with s._write_lock:  # what a garbling link delivers: lines the agent cannot read
            s._writer.write(b"{this is not json\n" * (UNMATCHED_KEPT + 50))
            s._writer.flush()
        assert s.request(Ping(sent_ns=3)).sent_ns == 3  # the agent answers in order: every error reply is read
        assert len(s.unmatched) == UNMATCHED_KEPT and s.unmatched[-1].kind == "ProtocolError"


def test_local_session_reports_a_dead_agent_and_a_silent_one():
    s = LocalSession().open()
    pid = s.pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(AgentLost, match=f"agent pid {pid}"):
        s.request(Ping())
    s.close()
    with LocalSession() as s:
        slow = Measure(runtime="command", profile="quick", policy=TINY,
                       options={"command": "sleep 20", "regex": "([0-9.]+)"})
        start = time.monotonic()
        with pytest.raises(AgentTimeout, match="no reply to measure within 0.5 s"):
            s.request(slow, timeout_s=0.5)
        assert not s.is_connected and time.monotonic() - start < 15


def test_local_session_reports_an_agent_that_cannot_start(tmp_path):
    s = LocalSession(python=PY, cores=[4096])  # the agent refuses a core set it cannot have
    with pytest.raises(AgentLost, match="(?s)did not start.*--cores .4096.*usable cores"):
        s.open()
    assert not s.is_connected


def test_a_lost_agents_long_log_is_read_from_its_end_only(tmp_path):
    """An agent that ran for weeks leaves a large stderr log: the error names its last words without
    loading the whole log into the coordinator (64 MiB of it here)."""
    import tracemalloc

    agent = tmp_path / "noisy-agent"
    agent.write_text("#!/bin/sh\nhead -c 67108864 /dev/zero | tr '\\0' x >&2\necho 'last words: out of luck' >&2\n"
                     "exit 3\n")
    agent.chmod(0o755)
    s = LocalSession(python=str(agent))
    tracemalloc.start()
    try:
        with pytest.raises(AgentLost, match="exit status 3; its log ends with: x+last words: out of luck$"):
            s.open()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak / 2 ** 20:.0f} MiB allocated to read the log's tail"


def test_device_lock_waits_for_the_holder_and_gives_up_on_cancel(tmp_path):
    import fcntl

    lock = tmp_path / "measure.lock"
    entered, cancel = threading.Event(), threading.Event()

    def measure():
        with hold_device_lock(lock, cancel):
            entered.set()

    with open(lock, "a") as other:  # another agent of the device is measuring
        fcntl.flock(other, fcntl.LOCK_EX)
        waiter = threading.Thread(target=measure)
        waiter.start()
        assert not entered.wait(0.3)  # waits while the other holds the lock
        fcntl.flock(other, fcntl.LOCK_UN)
        assert entered.wait(5)  # and goes on once it is free
        waiter.join(5)
        fcntl.flock(other, fcntl.LOCK_EX)
        entered.clear()
        waiter = threading.Thread(target=measure)
        waiter.start()
        cancel.set()  # the agent shuts down while waiting: it stops waiting
        waiter.join(5)
        assert not waiter.is_alive() and entered.is_set()  # (its measurement sees the cancel and times nothing)


@pytest.mark.skipif(not Path("/proc/vmstat").is_file(), reason="needs Linux's OOM-kill counter")
def test_a_measuring_process_killed_from_outside_is_not_called_out_of_memory(model):
    import psutil

    from agents.child import oom_kills, run_measurement

    path, sha = model
    slow = {**TINY, "window_min_s": 5.0}
    result = {}
    t = threading.Thread(target=lambda: result.update(r=run_measurement(
        Measure(runtime="ort", model=str(path), sha256=sha, profile="quick", policy=slow), path)))
    kills_before = oom_kills()
    t.start()
    deadline = time.monotonic() + 60
    child = None
    while child is None and time.monotonic() < deadline:
        child = next((c for c in psutil.Process().children() if "agents.child" in " ".join(c.cmdline())), None)
        time.sleep(0.05)
    assert child is not None
    time.sleep(1.0)  # inside the timed windows
    child.kill()  # a user or a watchdog, not the kernel's OOM killer
    t.join(60)
    res = result["r"]
    if oom_kills() != kills_before:
        pytest.skip("the kernel OOM-killed something meanwhile; the two cannot be told apart")
    assert res.outcome == "runtime_error" and "killed by SIGKILL from outside" in res.message, res.message
