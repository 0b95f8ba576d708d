"""What the job of a killed agent left running is killed by the next agent in its folder, and nothing else is
(agents.in_flight): real agents killed with SIGKILL, real daemons found in /proc."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from agents.in_flight import sweep
from agents.process_tree import new_job_mark
from agents.protocol import Measure
from agents.server import IN_FLIGHT_FOLDER
from harness.transport import ConnectionLost, LocalSession
from tests.processes import processes_with, started

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="marks are read from /proc")

TINY = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 2, "window_min_runs": 5, "window_min_s": 0.02,
        "cooldown_s": 0.0, "window_timeout_s": 60}
SWEPT = "before it, killed what the job of an agent that was killed left running, which ran beside every " \
        "measurement since: "


def _daemonizing(marker: str, job_id: str = "j1a1") -> Measure:
    """A command whose tool starts a daemon (``setsid sleep <marker>``), then times nothing for 30 s."""
    return Measure(id=job_id, runtime="command", profile="quick", policy=TINY,
                   options={"command": ["sh", "-c", f"setsid sleep {marker} & exec sleep 30"], "regex": "([0-9.]+)"})


def _quick(job_id: str = "j2a1") -> Measure:
    return Measure(id=job_id, runtime="command", profile="quick", policy=TINY,
                   options={"command": ["echo", "1.5"], "regex": "([0-9.]+)"})


def _kill_mid_job(agent, pool: ThreadPoolExecutor, marker: str) -> None:
    """Start a daemonizing job on ``agent`` (an open session) and SIGKILL the agent once the daemon runs."""
    job = pool.submit(agent.request, _daemonizing(marker))
    assert started(f"sleep {marker}"), "the tool's daemon never started"
    os.kill(agent.hello.pid, signal.SIGKILL)
    with pytest.raises(ConnectionLost):
        job.result(timeout=30)
    agent.close()


def _kill_all(*markers: str) -> None:
    for marker in markers:
        for pid in processes_with(f"sleep {marker}", grace_s=0):
            os.kill(pid, signal.SIGKILL)


def test_what_the_job_of_a_killed_agent_left_running_is_killed_by_the_next_agent_in_its_folder(tmp_path):
    """An agent killed mid-job (the OOM killer, kill -9, a lost SSH session) took its measuring child with it, but
    the daemon the child's tool started was re-parented to init and ran on beside every later measurement on the
    device (a busy loop there: 0.97 CPU-s per s, measured). The next agent started in the same folder kills it and
    says so in its next result."""
    marker, cache = f"{os.getpid() % 97 + 31}.81", tmp_path / "cache"
    try:
        with ThreadPoolExecutor(1) as pool:
            _kill_mid_job(LocalSession(cache_dir=cache).open(), pool, marker)
        assert processes_with(f"sleep {marker}", grace_s=0.5), "the daemon died with the agent: nothing to show"
        with LocalSession(cache_dir=cache) as agent:
            assert processes_with(f"sleep {marker}") == []
            res = agent.request(_quick())
        assert res.outcome in ("ok", "unstable") and res.message.startswith(SWEPT), res.message
        assert "job j1a1: " in res.message and f"sleep {marker}" in res.message, res.message
        assert list((cache / IN_FLIGHT_FOLDER).iterdir()) == []
    finally:
        _kill_all(marker)


def test_an_agent_leaves_alone_the_jobs_of_live_agents_and_of_other_folders(tmp_path):
    """Two agents may share a host, and a folder: a job whose agent lives is never swept (its record is locked),
    nor one recorded in another folder."""
    mine, theirs = f"{os.getpid() % 97 + 31}.82", f"{os.getpid() % 97 + 31}.83"
    shared, other = tmp_path / "shared", tmp_path / "other"
    try:
        with ThreadPoolExecutor(2) as pool:
            _kill_mid_job(LocalSession(cache_dir=other).open(), pool, theirs)
            with LocalSession(cache_dir=shared) as busy:
                job = pool.submit(busy.request, _daemonizing(mine))
                assert started(f"sleep {mine}"), "the live agent's daemon never started"
                with LocalSession(cache_dir=shared) as beside:
                    res = beside.request(_quick())
                assert res.outcome in ("ok", "unstable") and SWEPT not in res.message, res.message
                assert processes_with(f"sleep {mine}", grace_s=0) and not job.done()
                assert processes_with(f"sleep {theirs}", grace_s=0)
        assert processes_with(f"sleep {mine}") == []  # the live agent's own job ended with its session
        assert f"sleep {theirs}" in [p.split(": ", 2)[2] for p in sweep(other / IN_FLIGHT_FOLDER)]
    finally:
        _kill_all(mine, theirs)


def test_a_record_whose_processes_are_gone_is_removed_silently(tmp_path):
    """A crash that left a record but no process (the job had started none): no error, nothing named."""
    folder = tmp_path / IN_FLIGHT_FOLDER
    folder.mkdir()
    (folder / f"{new_job_mark()}.job").write_text("j5a1")
    assert sweep(folder) == [] and list(folder.iterdir()) == []
    assert sweep(tmp_path / "absent") == []


HOLDER = textwrap.dedent("""
    import os, subprocess, sys, time
    from pathlib import Path
    from agents.in_flight import recorded
    folder, mark, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    with recorded(folder, mark, "j9a2"):
        subprocess.Popen(["sleep", seconds], env=dict(os.environ, HWL_JOB_MARK=mark), start_new_session=True)
        print("ready", flush=True)
        time.sleep(60)
""")


def test_a_record_is_swept_only_once_the_process_that_holds_it_is_gone(tmp_path):
    """The record's lock is the proof that its agent lives: swept while held, nothing is killed; the holder killed
    with SIGKILL (its lock dropped by the kernel), its job's daemon is killed and named with the job's id."""
    folder, mark, seconds = tmp_path / IN_FLIGHT_FOLDER, new_job_mark(), f"{os.getpid() % 97 + 31}.84"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mark, seconds], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"ready\n" and started(f"sleep {seconds}")
        assert sweep(folder) == [] and processes_with(f"sleep {seconds}", grace_s=0)
        holder.kill()
        holder.wait()
        (killed,) = sweep(folder)
        assert killed.startswith("job j9a2: ") and killed.endswith(f": sleep {seconds}"), killed
        assert processes_with(f"sleep {seconds}") == [] and list(folder.iterdir()) == []
    finally:
        holder.kill()
        holder.wait()
        _kill_all(seconds)


def test_what_a_killed_hwl_measure_left_running_is_killed_by_the_next_one(tmp_path):
    """`hwl measure` kept no record of its job: killed mid-job (kill -9, a closed terminal) it took its measuring
    child along, but the daemon the child's tool started ran on beside every later timing on this machine. It now
    records the job where the machine's local agents keep theirs, and the next one (or a local agent) kills it."""
    from tests.campaign_helpers import HWL

    marker = f"{os.getpid() % 97 + 31}.84"
    env = {**os.environ, "TMPDIR": str(tmp_path), "HWL_LOCK_DIR": str(tmp_path / "locks")}  # its own agent cache
    tiny = [f"--policy={k}={v}" for k, v in TINY.items()]
    tool = tmp_path / "tool.sh"  # not in hwl's own command line, which the search for the daemon reads too
    tool.write_text(f"setsid sleep {marker} & exec sleep 30\n")
    daemonizing = [*HWL, "measure", "--runtime", "command", "--profile", "quick", *tiny, "--regex", "([0-9.]+)",
                   "--command", f"sh {tool}"]
    try:
        first = subprocess.Popen(daemonizing, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert started(f"sleep {marker}"), "the tool's daemon never started"
        first.kill()
        first.wait(30)
        assert processes_with(f"sleep {marker}", grace_s=0.5), "the daemon died with hwl measure: nothing to show"
        second = subprocess.run([*HWL, "measure", "--runtime", "command", "--profile", "quick", *tiny, "--json",
                                 "--regex", "([0-9.]+)", "--command", "echo 1.5"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert processes_with(f"sleep {marker}") == []
        message = json.loads(second.stdout)["message"]
        assert SWEPT in message and f"sleep {marker}" in message, message
        assert list((tmp_path / f"hwl-agent-cache-{os.getuid()}" / IN_FLIGHT_FOLDER).iterdir()) == []
    finally:
        _kill_all(marker)
