"""Growing the Ray cluster the way a lab does: a second node joins with its own `host:<name>`
resource, and the device actor of a profile bound to that host runs there (checked by node id)."""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness.campaign import CampaignSpec, plan_campaign
from harness.coordinator import CoordinatorOptions, run_campaign
from harness.ray_cluster import actor_status, device_actor
from harness.profiles import load_profile
from harness.store import Store
from tests.campaign_helpers import kill_leftovers, write_profile
from tests.sshd import free_port

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
RAY = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ray")


@pytest.fixture(scope="module")
def two_node_cluster():
    if not Path(RAY).exists():
        pytest.skip("ray CLI not in .venv")
    temp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")
    # Tests only: no token auth between the two local nodes (a lab sets RAY_AUTH_MODE=token
    # and shares the token file, see README).
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        f"--temp-dir={temp}", "--resources", '{"host:coordinator": 1000}', "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([RAY, "start", f"--address={address}", "--num-cpus=1",
                        "--resources", '{"host:node2": 1000}', "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=180)
        os.environ.update(RAY_TMPDIR=temp, RAY_AUTH_MODE="disabled")
        ray.init(address=address, namespace="hwl", log_to_driver=False)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        yield address
    finally:
        ray.shutdown()
        for key in ("RAY_TMPDIR", "RAY_AUTH_MODE"):
            os.environ.pop(key, None)
        kill_leftovers(temp)  # both nodes' daemons, by pid
        shutil.rmtree(temp, ignore_errors=True)


def test_device_actor_runs_on_the_node_with_its_host_resource(two_node_cluster, tmp_path):
    path = write_profile(tmp_path, "node2-ort")
    text = path.read_text().replace('name = "local"', 'name = "node2"', 1)
    path.write_text(text)
    profile = load_profile(str(path))
    assert profile.host.resource == "host:node2"
    node2 = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "host:node2" in n["Resources"]]
    assert len(node2) == 1
    actor = device_actor(profile)
    assert actor_status(actor, timeout_s=120)["node_id"] == node2[0]
    ray.kill(actor)

    db = tmp_path / "lab.db"
    with Store(db) as s:
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs="1835,7165", devices=(str(path),)))
        summary = run_campaign(s, cid, CoordinatorOptions(address=two_node_cluster, artifact_dir=tmp_path / "art",
                                                          canary_every=0))
        assert summary["devices"]["node2-ort"]["state"] == "active"
        assert len(s.latency_table("nb201")) == 2
