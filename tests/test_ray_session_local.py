"""The local Ray hwl starts itself (ray_session without an address): Ray's bookkeeping is bounded.
Each test starts a real local Ray."""
import shutil
import tempfile
import time

import pytest

from harness.ray_cluster import ray_session
from tests.campaign_helpers import kill_leftovers

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


def test_the_local_ray_keeps_no_task_events(ray_tmp):
    """Ray's task events (about 3.7 KiB a task in the GCS, up to 100,000 tasks, and buffers in every
    worker) are read by nothing in hwl's local Ray: it reports none."""
    with ray_session(num_cpus=1, temp_dir=ray_tmp):
        _run_tasks(20)
        assert _tasks_in_timeline() == set()


def test_task_events_a_user_turns_on_keep_the_last_thousand_tasks(ray_tmp, monkeypatch):
    monkeypatch.setenv("RAY_task_events_report_interval_ms", "100")  # the user's setting wins over hwl's
    with ray_session(num_cpus=1, temp_dir=ray_tmp):
        _run_tasks(1200)
        assert 0 < len(_tasks_in_timeline()) <= 1000
