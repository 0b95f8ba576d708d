"""The local Ray hwl starts itself (ray_session without an address): Ray's bookkeeping is bounded,
and hwl's finished session folders do not pile up. Each test starts real local Rays."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.ray_cluster import ray_session
from tests.campaign_helpers import REPO, kill_leftovers

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture
def ray_tmp(monkeypatch):
    temp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")  # short: Ray's socket paths are limited
    monkeypatch.setenv("RAY_TMPDIR", temp)  # Ray's daemons inherit it, so leftovers can be found
    yield temp
    kill_leftovers(temp)
    shutil.rmtree(temp, ignore_errors=True)


def _run_tasks(n: int) -> None:
    @ray.remote(num_cpus=0)
    def nothing(i):
        return i

    ray.get([nothing.remote(i) for i in range(n)], timeout=120)
    time.sleep(2.5)  # past Ray's report interval (1 s by default), so any task events reached the GCS


def _tasks_in_timeline() -> set:
    return {event["args"]["task_id"] for event in ray.timeline() if event.get("args", {}).get("task_id")}


def _event_stats_dumps(logs: Path) -> int:
    return sum(p.read_text(errors="replace").count("Event stats:") for p in logs.glob("*") if p.is_file())


def watch_event_stats(temp: str, out: str) -> None:
    """Start hwl's local Ray and write (JSON, to ``out``) its logs' event-stats dumps 10 s after it
    started and past Ray's first minute, and whether its node was still up then."""
    from harness.ray_cluster import this_node_alive

    with ray_session(num_cpus=1, temp_dir=temp):
        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        time.sleep(10)
        at_start = _event_stats_dumps(logs)
        time.sleep(65)  # past Ray's first minute
        seen = {"at_start": at_start, "after": _event_stats_dumps(logs), "alive": this_node_alive()}
    Path(out + ".part").write_text(json.dumps(seen))
    os.replace(out + ".part", out)


@pytest.fixture(scope="module", autouse=True)
def event_stats_watch():
    """The 75 s watch of the event-stats test, run from this module's start by a process of its own while
    the other tests start their own Rays (each in a temp folder of its own), instead of after them. It is
    detached (forked off, so no child of this process): a test whose Ray fails to start kills the Ray
    processes among this process's children (ray_cluster._stop_half_started_ray)."""
    temp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")
    out = Path(temp) / "event-stats.json"
    code = ("import os\nif os.fork():\n    os._exit(0)\nos.setsid()\nprint(os.getpid(), flush=True)\n"
            f"from tests.test_ray_session_local import watch_event_stats\nwatch_event_stats({temp!r}, {str(out)!r})\n")
    with open(Path(temp) / "watch.err", "w") as err:
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "RAY_TMPDIR": temp},
                       stdin=subprocess.DEVNULL, stdout=err, stderr=err, check=True, timeout=60)
    try:
        yield out
    finally:
        kill_leftovers(temp)  # the watcher too: it runs with RAY_TMPDIR=temp
        shutil.rmtree(temp, ignore_errors=True)


def _monitor_log() -> Path:
    return Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "monitor.log"


def _monitor_started() -> float:
    """When (``time.monotonic()``) the running Ray's autoscaler monitor was first seen started; waits for it."""
    log = _monitor_log()
    deadline = time.monotonic() + 60
    while "Monitor: Started" not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, "the autoscaler's monitor did not start within 60 s"
        time.sleep(0.5)
    return time.monotonic()


def _monitor_log_after(seconds: float, *, until: str | None = None, started: float | None = None) -> str:
    """The autoscaler monitor's log of the running Ray, ``seconds`` after the monitor started (at ``started``, or
    when this call first sees it started); with ``until``, as soon as the log holds that text (polled, so a fast
    monitor is not waited out), ``seconds`` at most."""
    log = _monitor_log()
    started = _monitor_started() if started is None else started
    if until is None:
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        return log.read_text(errors="replace")
    deadline = started + seconds
    while until not in (text := log.read_text(errors="replace")) and time.monotonic() < deadline:
        time.sleep(0.2)
    return text


@pytest.fixture(scope="class")
def monitor_started():
    """hwl's default local Ray, open for the tests of one class; yields when its autoscaler monitor started."""
    temp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")  # short: Ray's socket paths are limited
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RAY_TMPDIR", temp)  # Ray's daemons inherit it, so leftovers can be found
            with ray_session(num_cpus=1, temp_dir=temp):
                yield _monitor_started()
    finally:
        kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


class TestHwlsDefaultLocalRay:
    """Checks that only watch what hwl's default local Ray does share one: a start and a shutdown took 5 s on an
    idle machine, several times that under load, and the monitor's log is read 12 s after it started anyway."""

    def test_the_local_ray_keeps_no_task_events(self, monitor_started):
        """Ray's task events (about 3.7 KiB a task in the GCS, up to 100,000 tasks, and buffers in every
        worker) are read by nothing in hwl's local Ray: it reports none."""
        _run_tasks(20)
        assert _tasks_in_timeline() == set()

    def test_the_local_rays_autoscaler_monitor_logs_no_status_every_few_seconds(self, monitor_started):
        """The autoscaler's monitor logged the cluster's status (some 20 lines) and two timing lines every 5 s
        to monitor.log, about 13 MB a day; a local Ray of one node has nothing to scale."""
        # 2 updates at Ray's 5 s (the first comes 5 s after the monitor starts)
        text = _monitor_log_after(12, started=monitor_started)
        assert "Autoscaler status" not in text
        assert text.count("to complete the update iteration") <= 1  # the first update's, at most
        assert "RAY_ENABLE_CLUSTER_STATUS_LOG" not in os.environ  # set for Ray's processes only, while they start
        assert "AUTOSCALER_UPDATE_INTERVAL_S" not in os.environ


def test_the_task_events_and_autoscaler_settings_a_user_sets_win(ray_tmp, monkeypatch):
    """Task events a user turns on keep the last thousand tasks; the autoscaler status a user turns on is logged at
    the user's interval. (One Ray for both: a start took 5 s on an idle machine, several times that under load.)"""
    monkeypatch.setenv("RAY_task_events_report_interval_ms", "100")  # the user's setting wins over hwl's
    monkeypatch.setenv("RAY_ENABLE_CLUSTER_STATUS_LOG", "1")
    monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
    with ray_session(num_cpus=1, temp_dir=ray_tmp):
        _run_tasks(1200)
        assert 0 < len(_tasks_in_timeline()) <= 1000
        # a status a second at the user's interval; hwl's (none, every 60 s) would show none within 30 s
        text = _monitor_log_after(30, until="Autoscaler status")
    assert "Autoscaler status" in text
    assert os.environ["RAY_ENABLE_CLUSTER_STATUS_LOG"] == "1" and os.environ["AUTOSCALER_UPDATE_INTERVAL_S"] == "1"


def _ray_session_in_another_process(temp: str) -> tuple[subprocess.Popen, Path]:
    """An hwl process holding its local Ray open (until its stdin closes); returns it and its session
    (on the real stdout: ray_session sends stdout to stderr while Ray runs)."""
    code = ("import sys, ray\nfrom harness.ray_cluster import ray_session\n"
            f"with ray_session(num_cpus=1, temp_dir={temp!r}):\n"
            "    print(ray._private.worker._global_node.get_session_dir_path(), file=sys.__stdout__, flush=True)\n"
            "    sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    return proc, Path(proc.stdout.readline().strip())


def _start_and_stop(temp: str) -> Path:
    with ray_session(num_cpus=1, temp_dir=temp):
        return Path(ray._private.worker._global_node.get_session_dir_path())


def test_hwl_removes_its_finished_ray_sessions_beyond_the_newest_few(ray_tmp, monkeypatch):
    monkeypatch.setenv("HWL_RAY_SESSIONS_KEPT", "1")
    foreign = Path(ray_tmp) / "session_2000-01-01_00-00-00_000000_1"  # another tool's Ray: not hwl's
    (foreign / "logs").mkdir(parents=True)
    other, running = _ray_session_in_another_process(ray_tmp)  # a campaign still running: the oldest
    try:
        assert running.is_dir() and running.parent == Path(ray_tmp)
        first = _start_and_stop(ray_tmp)
        second = _start_and_stop(ray_tmp)
        assert first.is_dir() and second.is_dir()  # one finished session kept beyond the one running
        third = _start_and_stop(ray_tmp)
        sessions = {p for p in Path(ray_tmp).glob("session_*") if not p.is_symlink()}
        assert sessions == {foreign, running, second, third}
    finally:
        other.communicate(timeout=60)  # stdin closed: it shuts its Ray down
    assert other.returncode == 0


def test_a_bad_sessions_kept_setting_is_one_line_before_ray_starts(ray_tmp, monkeypatch):
    monkeypatch.setenv("HWL_RAY_SESSIONS_KEPT", "a few")
    with pytest.raises(UserError, match=r"^HWL_RAY_SESSIONS_KEPT='a few' is not a whole number >= 0 \("):
        with ray_session(num_cpus=1, temp_dir=ray_tmp):
            pass
    assert not ray.is_initialized() and not list(Path(ray_tmp).glob("session_*"))


def test_the_ray_token_file_is_made_readable_by_this_user_alone_and_ray_s_opt_out_advice_is_not_shown(ray_tmp,
                                                                                                   tmp_path):
    """Ray writes ~/.ray/auth_token 0644; whoever reads it may join the cluster (which listens on every interface)
    and run code as this user. In a process of its own: Ray keeps the token it first read for the process.
    Ray also warned at every start that token auth is on and RAY_AUTH_MODE=disabled turns it off: advice against
    what keeps hwl's local Ray closed, on every campaign's stderr."""
    home = tmp_path / "home"
    token = home / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("f" * 64)
    token.chmod(0o644)
    # RAY_AUTH_MODE unset, as most users have it: Ray then turns token auth on for a local start, and says so
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    code = ("import ray\nfrom ray._raylet import AuthenticationMode, get_authentication_mode\n"
            "from harness.ray_cluster import ray_session\n"
            f"with ray_session(num_cpus=1, temp_dir={ray_tmp!r}):\n    assert ray.is_initialized()\n"
            "    assert get_authentication_mode() == AuthenticationMode.TOKEN\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "HOME": str(home)}, timeout=300,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert token.stat().st_mode & 0o777 == 0o600
    assert "Started a local Ray instance" in run.stderr  # Ray's own log lines reach stderr
    assert "RAY_AUTH_MODE=disabled to opt out" not in run.stderr, run.stderr


def test_a_local_ray_without_token_auth_is_warned_of(ray_tmp):
    """In a process of its own: Ray's auth mode is read once a process."""
    code = ("import logging\nfrom harness.ray_cluster import ray_session\nlogging.basicConfig()\n"
            f"with ray_session(num_cpus=1, temp_dir={ray_tmp!r}):\n    pass\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                         check=True, timeout=300, capture_output=True, text=True)
    assert "RAY_AUTH_MODE=disabled: hwl's local Ray listens on every network interface" in run.stderr

def _blas_threads() -> dict:
    """Thread count of each BLAS library loaded in this process, by its file."""
    from threadpoolctl import threadpool_info

    return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_device_on_every_core_leaves_ray_and_blas_off_the_other_devices_cores(ray_tmp, tmp_path):
    """The demo's pair on a 2-core machine: local-ort-1t times on core 1, local-ort-2t on cores 0-1. Their cores
    together were every core, so Ray was not pinned at all and its exports ran on core 1 during 1t's timed
    windows (seen running there in 2 and 25 of a campaign's 0.1 s samples); Ray now keeps to core 0.

    BLAS sized for every core, pinned to fewer: its threads spin-waited for each other, and onboarding's
    pretraining under a local device took 20 s instead of 0.04 s. Sized to the cores the session keeps, and
    restored when it ends. (One Ray for both: a start took 5 s on an idle machine, several times that under load.)"""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from harness.coordinator import CoordinatorOptions, campaign_ray
    from harness.profiles import load_profile
    from tests.campaign_helpers import write_profile

    every = sorted(range(os.cpu_count() or 1))
    one = load_profile(write_profile(tmp_path, "on-one-core", cores=every[-1:]))
    spanning = load_profile(write_profile(tmp_path, "on-every-core", cores=every))
    np.ones((64, 64)) @ np.ones((64, 64))  # BLAS loaded and started, as before a campaign's fits
    # sized for every core, as BLAS starts unless told otherwise (scripts/test tells it 1 thread a process)
    with threadpool_limits(len(every), user_api="blas"):
        before = _blas_threads()
        assert before and set(before.values()) == {len(every)}, before
        with campaign_ray([one, spanning], CoordinatorOptions(ray_temp_dir=ray_tmp)):
            inside = _blas_threads()
            where = ray.get(ray.remote(num_cpus=1)(lambda: sorted(os.sched_getaffinity(0))).remote(), timeout=120)
        assert inside == {path: len(every) - 1 for path in before}, (before, inside)
        assert _blas_threads() == before
    assert where == every[:-1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_local_ray_left_one_core_runs_one_export_at_a_time(ray_tmp, tmp_path):
    """The benchmark's pair times on core 1 of 2, so Ray keeps to core 0, yet it was given the default 2 CPUs: two
    export tasks ran at once there, each importing torch, and a cold campaign's first model was ready only after
    both imports (the first 4 exports all came 23-27 s after they were sent, under load)."""
    from harness.coordinator import CoordinatorOptions, campaign_ray
    from harness.profiles import load_profile
    from tests.campaign_helpers import write_profile

    every = sorted(range(os.cpu_count() or 1))
    device = load_profile(write_profile(tmp_path, "on-all-but-one-core", cores=every[1:]))
    with campaign_ray([device], CoordinatorOptions(num_cpus=2, ray_temp_dir=ray_tmp)):
        assert ray.cluster_resources()["CPU"] == 1


@pytest.mark.parametrize("core_sets, cores, free", [
    ([[1], [0, 1]], 2, {1}),  # the demo's pair: Ray on core 0
    ([[1], [2], [0, 1, 2]], 3, {1, 2}),
    ([[2, 3]], 4, {2, 3}),  # room for all: every device's cores, as before
    ([[0], [1]], 2, set()),  # Ray on either would sit on a whole device: unpinned, as before
    ([[0, 1]], 2, set()),
])
def test_the_cores_kept_free_leave_ray_a_core_no_device_has_to_itself(core_sets, cores, free):
    from harness.ray_cluster import cores_kept_free

    assert cores_kept_free(core_sets, range(cores)) == free


def test_a_second_ctrl_c_as_the_session_stops_ray_still_stops_all_of_it(ray_tmp):
    """Ctrl-C pressed again while a stopped campaign shut its Ray down broke ray.shutdown off half-way; Ray's atexit
    hook ran it once more, and a third Ctrl-C there printed Ray's traceback. The shutdown now runs whole, then the
    Ctrl-C goes on to the caller. The second Ctrl-C is sent by the process itself as ray.shutdown starts."""
    code = ("import os, signal, sys, ray\nfrom harness.ray_cluster import ray_session\n"
            "real_shutdown = ray.shutdown\n"
            "def shutdown_under_ctrl_c():\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    real_shutdown()\n"
            "ray.shutdown = shutdown_under_ctrl_c\n"
            "try:\n"
            f"    with ray_session(num_cpus=1, temp_dir={ray_tmp!r}):\n"
            "        raise KeyboardInterrupt\n"
            "except KeyboardInterrupt:\n"
            "    print('stopped; ray still connected:', ray.is_initialized(), file=sys.__stdout__, flush=True)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "stopped; ray still connected: False\n", run.stderr
    assert kill_leftovers(ray_tmp) == []


# Last in the module: the watch it reads runs for 75 s from the module's start, beside the tests above, and a test
# placed earlier waited for what was left of it.
def test_the_local_rays_logs_get_no_event_stats_every_minute(event_stats_watch):
    """Ray's processes appended their event-loop stats to their logs once a minute (about 55 MB a day
    of logs kept in the session folder); hwl's local Ray does so once an hour."""
    import psutil

    log = event_stats_watch.parent / "watch.err"
    watcher = int(log.read_text().split()[0])  # the pid it printed first
    deadline = time.monotonic() + 300
    while not event_stats_watch.exists() and psutil.pid_exists(watcher) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert event_stats_watch.exists(), log.read_text()[-2000:]
    seen = json.loads(event_stats_watch.read_text())
    assert seen["alive"] and seen["after"] == seen["at_start"], seen
