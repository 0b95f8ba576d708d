"""DeviceWorker without Ray: a real agent subprocess, a real exported model, a real SIGKILL."""
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time

import pytest

from harness.device_worker import DeviceWorker, device_locks, lock_file_name
from harness.export import export_one
from harness.profiles import load_profile
from harness.transport.errors import DeviceSetupError
from tests.campaign_helpers import write_profile

CHEAP_ARCH = 1835  # all skip_connect: a fast model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rec = export_one("nb201", CHEAP_ARCH, tmp_path_factory.mktemp("artifacts"))
    return rec.path, hashlib.sha256(open(rec.path, "rb").read()).hexdigest()


def _job(model, job_id=1, attempt=1):
    path, sha = model
    return {"job_id": job_id, "attempt": attempt, "space": "nb201", "arch": str(CHEAP_ARCH), "model": path,
            "sha256": sha}


def test_measure_returns_a_typed_record(tmp_path, model):
    worker = DeviceWorker(load_profile(str(write_profile(tmp_path, "w-fast"))))
    try:
        rec = worker.measure(_job(model))
        assert rec["outcome"] in ("ok", "unstable"), rec.get("error_message")
        assert rec["stats"]["label_ms"] > 0 and rec["samples_ns"] and rec["fingerprint_id"]
        assert rec["measurement"]["spec"]["cores"] == [1] or os.cpu_count() == 1
        bad = worker.measure({**_job(model, 2), "sha256": "0" * 64})
        assert bad["outcome"] == "load_error" and bad["error_kind"] == "HashMismatch"
        status = worker.status()
        assert status["jobs_done"] == 2 and not status["busy"] and status["agent_starts"] == 1
    finally:
        worker.close()


def _wait_for(worker, ready, limit_s=30.0) -> dict:
    deadline = time.monotonic() + limit_s
    while not ready(status := worker.status()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


@pytest.mark.slow
def test_agent_killed_mid_measurement_gives_device_lost_then_recovers(tmp_path, model, monkeypatch):
    """The job waits first for its thermal domain's lock, held by another device (another test run on this
    machine did hold it now and then): an agent killed while the job waits is only restarted, so the kill
    goes in 1 s after the job was sent to the agent (``measuring_since``), not 1 s after it began."""
    monkeypatch.setenv("HWL_LOCK_DIR", str(tmp_path / "locks"))
    slow = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 3, "window_min_runs": 5,
            "window_min_s": 1.5, "cooldown_s": 0.0}
    worker = DeviceWorker(load_profile(str(write_profile(tmp_path, "w-slow", policy=slow))))
    try:
        worker.hello()
        out = {}
        t = threading.Thread(target=lambda: out.update(rec=worker.measure(_job(model, 7))))
        with device_locks([f"local.thermal.{worker.profile.thermal_domain}"]):
            t.start()
            waiting = _wait_for(worker, lambda s: s["busy"])
            time.sleep(1.5)
            status = worker.status()
        assert waiting["running"]["job_id"] == 7 and status["running"]["measuring_since"] is None
        status = _wait_for(worker, lambda s: (s["running"] or {}).get("measuring_since"))  # answered mid-run
        assert status["busy"] and status["running"]["job_id"] == 7
        time.sleep(max(0.0, status["running"]["measuring_since"] + 1.0 - time.time()))  # inside the windows
        os.kill(status["agent_pid"], signal.SIGKILL)
        t.join(60)
        assert out["rec"]["outcome"] == "device_lost"
        assert "agent" in out["rec"]["error_message"]
        again = worker.measure(_job(model, 7, attempt=2))  # the agent is restarted
        assert again["outcome"] in ("ok", "unstable")
        assert worker.status()["agent_starts"] == 2
    finally:
        worker.close()


def test_a_thermal_domain_that_is_no_plain_file_name_measures(tmp_path, model):
    """'rack/1 shelf' made the lock file's name a path that did not exist: every measurement
    failed (FileNotFoundError) and the device was quarantined."""
    worker = DeviceWorker(load_profile(str(write_profile(tmp_path, "w-rack", thermal_domain="rack/1 shelf"))))
    try:
        rec = worker.measure(_job(model))
        assert rec["outcome"] in ("ok", "unstable"), rec.get("error_message")
    finally:
        worker.close()


@pytest.mark.parametrize("domain", ["x", "rack/1 shelf", "d" * 300, "nul\x00in it", "é"])
def test_devices_sharing_a_domain_exclude_each_other(tmp_path, domain):
    events = []
    hold = threading.Event()
    assert len({lock_file_name(k) for k in (f"local.thermal.{domain}", "local.thermal.rack_1 shelf")}) == 2

    def first():
        with device_locks([f"local.thermal.{domain}", "local.core.1"], folder=tmp_path):
            events.append("first in")
            hold.wait(5)
            events.append("first out")

    t = threading.Thread(target=first)
    t.start()
    while not events:
        time.sleep(0.01)
    def second():
        with device_locks([f"local.thermal.{domain}"], folder=tmp_path):
            events.append("second in")

    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.3)
    assert events == ["first in"]  # the second device waits
    hold.set()
    t.join(5)
    t2.join(5)
    assert events == ["first in", "first out", "second in"]


def test_a_lock_named_twice_is_taken_once(tmp_path):
    """Two keys alike (a request pinned to cores [0, 0]) waited for ever: the second flock of the file behind the
    first, in the same process."""
    entered = threading.Event()

    def hold_twice():
        with device_locks(["local.core.0", "local.core.0"], folder=tmp_path):
            entered.set()

    threading.Thread(target=hold_twice, daemon=True).start()
    assert entered.wait(10)
    with device_locks(["local.core.0"], folder=tmp_path):  # and released, with its files
        pass


def test_a_device_that_stays_away_is_tried_until_its_reconnect_timeout(tmp_path, model):
    """A real ssh device whose port nothing answers: retried with backoff for the whole
    reconnect_timeout_s (5 s here), the last try at the deadline; it gave up after 3 s before."""
    from tests.sshd import free_port, make_key

    key = make_key(tmp_path / "key")
    profile = tmp_path / "gone.toml"
    profile.write_text("\n".join([
        'name = "gone"', 'device_class = "embedded_cpu"', "[host]", 'name = "gone"', 'transport = "ssh"',
        'address = "127.0.0.1"', f"port = {free_port()}", 'user = "root"', f'key = "{key}"',
        f'known_hosts = "{tmp_path / "known_hosts"}"', "reconnect_timeout_s = 5", "[runtime]",
        'kind = "onnxruntime"']) + "\n")
    worker = DeviceWorker(load_profile(str(profile)))
    started = time.monotonic()
    try:
        record = worker.measure(_job(model))
    finally:
        worker.close()
    assert record["outcome"] == "device_lost" and "cannot reach gone at 127.0.0.1" in record["error_message"]
    assert 4.9 <= time.monotonic() - started < 30


# A tiny vendor tool: prints a latency, or fails the way its first argument says.
TINY_TOOL = """import os, signal, sys
mode = sys.argv[1]
if mode == "killed":
    os.kill(os.getpid(), signal.SIGTERM)  # a person, a watchdog
if mode == "crash":
    import ctypes; ctypes.string_at(0)  # the tool's own segfault on this model
if mode == "unsupported":
    sys.exit("unsupported op: GridSample")
print("run 0: 2.5 ms")
"""


@pytest.mark.parametrize("command, outcome, kind, said", [
    ("/nonexistent/vendor-tool {model}", "device_lost", "DeviceSetupError",
     "key 'runtime.options.command' of device w-tool runs '/nonexistent/vendor-tool', which is no executable file"),
    ("sh -c 'no-such-vendor-tool {model}'", "device_lost", "RuntimeUnavailable", "exited with status 127"),
    ("{python} {tool} killed {model}", "device_lost", "ToolKilled", "died from SIGTERM"),
    ("{python} {tool} crash {model}", "runtime_error", "runtime_error", "died from SIGSEGV"),
    ("{python} {tool} unsupported {model}", "runtime_error", "runtime_error", "unsupported op: GridSample"),
], ids=["missing", "shell-not-found", "killed", "crash", "unsupported"])
def test_a_vendor_tool_that_cannot_run_or_is_killed_charges_the_device_not_the_model(tmp_path, model, command,
                                                                                    outcome, kind, said):
    """Every non-zero exit of the command runtime's tool was a runtime_error charged to the architecture. A
    tool that cannot be started, or that a signal sent to it killed, says nothing about the model: it is now
    device_lost (no architecture charged; a missing tool quarantines the device at once, as a missing
    runtime does). The tool's own crash or failing exit stays the model's runtime_error."""
    tool = tmp_path / "tool.py"
    tool.write_text(TINY_TOOL)
    assert "2.5 ms" in os.popen(f"{sys.executable} {tool} fine").read()  # the tool itself works
    command = command.replace("{python}", sys.executable).replace("{tool}", str(tool))
    profile = write_profile(tmp_path, "w-tool", runtime="command", options={"command": command,
                                                                            "regex": "([0-9.]+) ms"})
    worker = DeviceWorker(load_profile(str(profile)))
    try:
        rec = worker.measure(_job(model))
    finally:
        worker.close()
    assert (rec["outcome"], rec["error_kind"]) == (outcome, kind), rec
    assert said in rec["error_message"] and "\n" not in rec["error_message"], rec["error_message"]


@pytest.mark.parametrize("key", ["host.push", "host.check", "host.recover", "runtime.options.command"])
def test_a_program_not_on_this_machine_refuses_the_device_before_its_agent_starts(tmp_path, key):
    """A profile whose command names a program this machine lacks (`adb` where Android's tools are not
    installed): a push failed as a lost device at each attempt. The worker now refuses to start the device, in one
    line naming the profile file, the key and the program, before anything is measured."""
    missing = "hwl-no-such-adb"
    assert shutil.which(missing) is None
    fine = {"host.push": "cp {model} /tmp", "host.check": "true", "host.recover": "true",
            "runtime.options.command": "echo 2.5 ms"}
    commands = {**fine, key: f"{missing} shell {{sha256}}"}
    path = write_profile(tmp_path, "w-phone", runtime="command", push=commands["host.push"],
                         recover=commands["host.recover"],
                         options={"command": commands["runtime.options.command"], "regex": "([0-9.]+) ms"})
    path.write_text(path.read_text().replace("push =", f"check = {json.dumps(commands['host.check'])}\npush ="))
    worker = DeviceWorker(load_profile(str(path)))
    try:
        with pytest.raises(DeviceSetupError) as refused:
            worker.hello()
    finally:
        worker.close()
    assert str(refused.value).startswith(f"{path}: key '{key}' of device w-phone runs '{missing}', which is not "
                                         "on PATH"), refused.value
    assert worker.agent_starts == 0


def test_locks_that_cannot_be_taken_are_an_attempt_lost_with_the_device_in_one_line(tmp_path, model, monkeypatch):
    """HWL_LOCK_DIR naming a file (or a folder this user cannot write): the error escaped the worker, so in a
    campaign each job failed as a Ray task, its actor was killed, and the device's recover command (a power cycle)
    ran for a folder on this machine, its quarantine saying so in a traceback. The worker now answers with an
    attempt lost with the device (charging no model), the reason in one line naming the folder."""
    not_a_folder = tmp_path / "locks"
    not_a_folder.write_text("")
    monkeypatch.setenv("HWL_LOCK_DIR", str(not_a_folder))
    worker = DeviceWorker(load_profile(str(write_profile(tmp_path, "w-locks"))))
    try:
        rec = worker.measure(_job(model))
    finally:
        worker.close()
    assert (rec["outcome"], rec["error_kind"]) == ("device_lost", "DeviceSetupError"), rec
    assert str(not_a_folder) in rec["error_message"] and "HWL_LOCK_DIR" in rec["error_message"], rec
    assert "\n" not in rec["error_message"] and worker.agent_starts == 0
