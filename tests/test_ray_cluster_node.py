"""Growing the Ray cluster the way a lab does: a second node joins with its own `host:<name>`
resource, and the device actor of a profile bound to that host runs there (checked by node id).

The cluster is started with `ray start` and driven from fresh processes (`hwl campaign run
--address ...`, and a short script that asks the actor where it runs), as a user would."""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.store import Store
from tests.campaign_helpers import HWL, exported_models, hwl, kill_leftovers, leftover_processes, write_profile
from tests.sshd import free_port

pytestmark = pytest.mark.slow
RAY = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ray")
WHERE = """
import json, sys, time, ray
from harness.profiles import load_profile
from harness.ray_cluster import actor_status, device_actor
ray.init(address=sys.argv[1], namespace="hwl", log_to_driver=False)
deadline = time.monotonic() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "host:node2" in n["Resources"]]
actor = device_actor(load_profile(sys.argv[2]))
print(json.dumps({"node2": nodes, "actor_node": actor_status(actor, timeout_s=120)["node_id"]}))
ray.kill(actor)
"""


def start_head(temp: str, env: dict, *options: str, client_port: bool = False) -> tuple[int, int | None]:
    """`ray start --head` on free ports; returns (port, Ray Client port or None). A port free when picked may be taken
    before Ray binds it (by another test worker's server), and one CI run's head start exited 1 under load with
    nothing to say why (stop 49). Setup, not what the tests check: tried 3 times, each on fresh ports, and a last
    failure shows what Ray printed."""
    for _ in range(3):
        port, client = free_port(), free_port() if client_port else None
        ports = [f"--port={port}"] + ([f"--ray-client-server-port={client}"] if client_port else [])
        done = subprocess.run([RAY, "start", "--head", *ports, "--num-cpus=1", "--include-dashboard=false",
                               f"--temp-dir={temp}", "--disable-usage-stats", *options], env=env,
                              capture_output=True, text=True, timeout=180)
        if done.returncode == 0:
            return port, client
        kill_leftovers(temp)  # what the failed start left running
    raise AssertionError(f"`ray start --head` failed 3 times; the last printed:\n{(done.stdout + done.stderr)[-3000:]}")


@pytest.fixture(scope="module")
def two_node_cluster():
    if not Path(RAY).exists():
        pytest.skip("ray CLI not in .venv")
    temp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")
    # Tests only: no token auth between the two local nodes (a lab uses Ray's token auth and
    # shares the token file, see README). RAY_TMPDIR marks every daemon for the cleanup.
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled"}
    # How long the head's Ray Client proxy waits for a driver's server to answer (Ray's default: 30 s). The retry
    # test waits it out for the server it kills, then the reconnect grace period the head keeps the failed
    # connection open for (the driver's RAY_CLIENT_RECONNECT_GRACE_PERIOD, set there). A server that lives took 4 s
    # to listen at a load of 12 on 2 cores: at 5 s the proxy gave up on it ("Timeout waiting for channel"), each of
    # hwl's 3 tries, and the join failed.
    head_env = {**env, "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "15"}
    try:
        port, client_port = start_head(temp, head_env, "--resources", '{"host:coordinator": 1000}', client_port=True)
        address = f"127.0.0.1:{port}"
        subprocess.run([RAY, "start", f"--address={address}", "--num-cpus=1",
                        "--resources", '{"host:node2": 1000}', "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=180)
        yield address, env, f"ray://127.0.0.1:{client_port}"
    finally:
        kill_leftovers(temp)  # both nodes' daemons and drivers, by pid
        shutil.rmtree(temp, ignore_errors=True)


def test_device_actor_runs_on_the_node_with_its_host_resource(two_node_cluster, model_cache, tmp_path):
    address, env, _ = two_node_cluster
    path = write_profile(tmp_path, "node2-ort")
    path.write_text(path.read_text().replace('name = "local"', 'name = "node2"', 1))
    where = subprocess.run([sys.executable, "-c", WHERE, address, str(path)], env=env, capture_output=True,
                           text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert where.returncode == 0, where.stderr[-2000:]
    import json
    found = json.loads(where.stdout.strip().splitlines()[-1])
    assert len(found["node2"]) == 1 and found["actor_node"] == found["node2"][0]

    db = tmp_path / "lab.db"
    exported_models(model_cache, tmp_path / "lab-artifacts", "1835,7165")  # where the campaign looks: beside its store
    run = hwl("campaign", "run", "--address", address, "--space", "nb201", "--archs", "1835,7165",
              "--devices", path, "--store", db, "--canary-every", "0", "--no-progress", env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    with Store(db) as s:
        assert len(s.latency_table("nb201")) == 2


def test_a_campaign_with_a_relative_store_path_measures_on_a_joined_cluster(two_node_cluster, tmp_path):
    """`hwl campaign run --address HEAD --store lab.db` (the README's lab flow, store by its relative name) from
    a folder other than the one the head was started in hung for ever: the export tasks wrote lab-artifacts/ in
    the node's own folder, and the coordinator, finding no such file in its folder, exported it again and again.
    The artifact folder goes to Ray as an absolute path now, so the models are where the coordinator looks."""
    address, env, _ = two_node_cluster
    here = tmp_path / "here"  # this command's folder; the head runs in pytest's
    here.mkdir()
    path = write_profile(tmp_path, "rel-ort")
    path.write_text(path.read_text().replace('name = "local"', 'name = "node2"', 1))
    run = subprocess.run([*HWL, "campaign", "run", "--address", address, "--space", "nb201", "--archs", "1835",
                          "--devices", str(path), "--store", "lab.db", "--canary-every", "0", "--no-progress"],
                         cwd=here, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"done_now": 1' in run.stdout
    with Store(here / "lab.db") as s:
        assert len(s.latency_table("nb201")) == 1
    assert len(list((here / "lab-artifacts").glob("*.onnx"))) == 1  # exported beside the store, as it says


def test_a_coordinator_that_does_not_see_the_nodes_artifact_folder_stops_saying_so(two_node_cluster, model_cache,
                                                                                    tmp_path):
    """The export tasks run on the cluster's nodes and write the model into the artifact folder there. A
    coordinator whose machine does not share that folder (here: its own empty tmpfs over it, in a mount
    namespace of its own, beside a cluster that sees the real one) found no file, exported again, and again,
    for ever, measuring nothing and saying nothing. Now it stops after a few tries, naming the folder."""
    address, env, _ = two_node_cluster
    path = write_profile(tmp_path, "unshared-ort")
    path.write_text(path.read_text().replace('name = "local"', 'name = "node2"', 1))
    art, db = tmp_path / "art", tmp_path / "lab.db"
    exported_models(model_cache, art, "1835")  # the nodes find it there: no torch
    hidden = "mount -t tmpfs -o size=1m hwl-test \"$0\" && exec \"$@\""  # this process's own view of art
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a mount namespace of its own needs root and unshare")
    run = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", hidden, str(art), *HWL,
                          "campaign", "run", "--address", address, "--space", "nb201", "--archs", "1835", "--devices",
                          str(path), "--store", str(db), "--artifacts", str(art), "--canary-every", "0",
                          "--no-progress"], env={**os.environ, **env}, capture_output=True, text=True, timeout=180)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert f"the artifact folder {art} must be one folder that every node of the Ray cluster sees" in run.stderr
    assert "exporting it again" in run.stderr  # each try said so
    with Store(db, readonly=True) as s:  # nothing charged: the job waits for the next run
        assert s.db.execute("SELECT state FROM jobs").fetchall() == [("queued",)]
        assert s.db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0


def test_a_campaign_runs_through_ray_client(two_node_cluster, model_cache, tmp_path):
    """`--address ray://HEAD:PORT` (Ray Client, as from a laptop) had never been run: the campaign's Ray
    calls (a named actor on the node with its host resource, export tasks, ray.wait, the job id in the
    actor's name, the node check) go through the client, the store stays with hwl."""
    _, env, client_address = two_node_cluster
    path = write_profile(tmp_path, "client-ort")
    path.write_text(path.read_text().replace('name = "local"', 'name = "node2"', 1))
    db = tmp_path / "lab.db"
    exported_models(model_cache, tmp_path / "lab-artifacts", "1835,7165")  # export tasks find them: no torch
    run = hwl("campaign", "run", "--address", client_address, "--space", "nb201", "--archs", "1835,7165",
              "--devices", path, "--store", db, "--canary-every", "0", "--no-progress", env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:] + client_server_errors(env["RAY_TMPDIR"])
    assert '"done_now": 2' in run.stdout and "Traceback" not in run.stderr
    # the head's client server started a server of its own for this driver (Ray names its log by its port)
    assert list(Path(env["RAY_TMPDIR"]).glob("session_*/logs/ray_client_server_*.out"))
    with Store(db) as s:
        assert len(s.latency_table("nb201")) == 2


def test_a_ray_client_join_whose_server_failed_to_start_is_tried_again(two_node_cluster, model_cache, tmp_path):
    """The head's client server starts a server process per driver; once (in CI) that start failed, and the
    campaign ended with "cannot join ... Start it there with `ray start --head`" though the head ran. Here the
    first such server is killed as it starts: the join is tried again and the campaign measures."""
    _, env, client_address = two_node_cluster
    path = write_profile(tmp_path, "retry-ort")
    path.write_text(path.read_text().replace('name = "local"', 'name = "node2"', 1))
    exported_models(model_cache, tmp_path / "lab-artifacts", "1835")
    killed, earlier = [], {proc.pid for proc in leftover_processes(env["RAY_TMPDIR"])}  # earlier drivers' servers
    watcher = threading.Thread(target=_kill_first_specific_server, args=(env["RAY_TMPDIR"], earlier, killed),
                               daemon=True)
    watcher.start()
    # How long the head keeps a driver's failed connection open for it to reconnect (Ray's default: 30 s), which the
    # failed join waits out before hwl tries again; this campaign's own connection, on one machine, does not drop.
    grace = {"RAY_CLIENT_RECONNECT_GRACE_PERIOD": "10"}
    run = hwl("campaign", "run", "--address", client_address, "--space", "nb201", "--archs", "1835", "--devices",
              path, "--store", tmp_path / "lab.db", "--canary-every", "0", "--no-progress", env={**env, **grace},
              timeout=600)
    watcher.join(timeout=60)
    assert killed, "no Ray Client server started for the driver"
    assert run.returncode == 0, run.stderr[-2000:] + client_server_errors(env["RAY_TMPDIR"])
    assert "could not start a server for this driver" in run.stderr and "trying again (2 of 3)" in run.stderr
    assert '"done_now": 1' in run.stdout


def test_a_ray_client_join_failing_on_the_heads_side_says_so_not_to_start_a_head():
    """After its tries, a join the head failed on its side said "Start it there with `ray start --head`", though a
    head answered; the message now gives the server's own error (Ray's text, as CI printed it) and its log."""
    from harness.ray_cluster import _join_refused

    server_failed = ConnectionAbortedError(
        "Initialization failure from server:\nTraceback (most recent call last):\n  File \"proxier.py\", line 772, in "
        "Datapath\n    raise RuntimeError(\nRuntimeError: Starting Ray client server failed. See "
        "ray_client_server_23000.err for detailed logs.\n")
    said = _join_refused("ray://10.0.0.5:10001", server_failed)
    assert said == ("cannot join the Ray cluster at 'ray://10.0.0.5:10001': its Ray Client server failed to start a "
                    "server for this driver, 3 times (RuntimeError: Starting Ray client server failed. See "
                    "ray_client_server_23000.err for detailed logs). That log is in the head's session folder "
                    "(/tmp/ray/session_latest/logs unless its temp dir says otherwise); or run hwl on a node of the "
                    "cluster and give --address the head's HOST:6379"), said
    refused = _join_refused("ray://10.0.0.5:10001", ConnectionError("ray client connection timeout"))
    assert "Start it there with `ray start --head --ray-client-server-port PORT`" in refused  # no head: as before


def test_address_auto_with_no_head_on_this_machine_says_none_runs():
    """`--address auto` with no Ray on this machine printed Ray's "Could not find any running Ray instance", then
    "A Ray head answers there: if it uses Ray's token auth ... set RAY_AUTH_MODE=token": a head that is not there.
    (Ray's own text, as `ray.init(address="auto")` raises it; a CLI run would join any other Ray on a shared host.)"""
    from harness.ray_cluster import _join_refused

    none_here = ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                                "setting `--address` flag or `RAY_ADDRESS` environment variable.")
    said = _join_refused("auto", none_here)
    assert said == ("cannot join the Ray cluster at 'auto': no Ray head runs on this machine (`auto` joins one "
                    "started here with `ray start --head`); start it, give --address the head's HOST:PORT, or leave "
                    "out --address to run a local Ray"), said


def _kill_first_specific_server(temp: str, earlier: set, killed: list, timeout_s: float = 120) -> None:
    """SIGKILL the first new per-driver Ray Client server (``--mode=specific-server``, its pid not in
    ``earlier``) of the cluster in ``temp``."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in leftover_processes(temp):
            try:
                if proc.pid not in earlier and "--mode=specific-server" in proc.cmdline():
                    proc.kill()
                    killed.append(proc.pid)
                    return
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        time.sleep(0.05)


def client_server_errors(temp: str) -> str:
    """The head's Ray Client server logs (``ray_client_server*.err``), for an assertion's message."""
    return "".join(f"\n--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}"
                   for log in sorted(Path(temp).glob("session_*/logs/ray_client_server*.err")))


def test_two_campaigns_on_one_cluster_measure_a_device_each_with_its_own_settings(two_node_cluster, model_cache,
                                                                                  tmp_path):
    """The same device name in two campaigns at once (another --profile, say): each measures with its
    own profile, and the one that ends first does not take the other's device actor with it."""
    import sqlite3

    from harness.device_worker import device_locks
    from tests.campaign_helpers import FAST_POLICY

    address, env, _ = two_node_cluster
    domain = f"two-campaigns-{os.getpid()}-{tmp_path.name}"  # a lock of its own: no other test waits on it
    runs = {}
    # Neither measures until both have a job sent to their device: the test holds their thermal domain until then,
    # as another device of the domain would, so the two campaigns overlap however fast or slow each starts. (Before:
    # the second started 3 s after the first, and the nodes exported the models, so the first was still running.)
    with device_locks([f"node2.thermal.{domain}"]):
        for repeats, archs in ((3, "1835,7165"), (2, "1835,7165,9545")):
            folder = tmp_path / f"r{repeats}"
            folder.mkdir()
            exported_models(model_cache, folder / "lab-artifacts", archs)  # the campaigns are tested, not exports
            path = write_profile(folder, "shared-ort", policy={**FAST_POLICY, "repeats": repeats},
                                 thermal_domain=domain)
            path.write_text(path.read_text().replace('name = "local"', 'name = "node2"', 1))
            runs[repeats] = subprocess.Popen(
                [*HWL, "campaign", "run", "--address", address, "--space", "nb201", "--archs", archs, "--devices",
                 str(path), "--store", str(folder / "lab.db"), "--canary-every", "0", "--no-progress"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for repeats, proc in runs.items():
            _wait_for_a_job_sent(tmp_path / f"r{repeats}" / "lab.db", proc)
    for repeats, proc in runs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        with sqlite3.connect(tmp_path / f"r{repeats}" / "lab.db") as con:
            got = con.execute("SELECT outcome, n_repeats, count(*) FROM results GROUP BY 1, 2").fetchall()
        assert {(o, n) for o, n, _ in got} <= {("ok", repeats), ("unstable", repeats)}, got  # none lost


def _wait_for_a_job_sent(db: Path, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    """Wait until the campaign of ``db`` (run by ``proc``) has sent a job to its device (a job 'running')."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError):  # the store not made yet
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                if con.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]:
                    return
        time.sleep(0.2)
    raise AssertionError(f"no job of {db} was sent to its device within {timeout_s} s: "
                         f"{proc.stderr.read()[-2000:] if proc.poll() is not None else 'hwl still runs'}")


def test_a_host_no_node_offers_is_named_while_its_devices_wait(two_node_cluster, tmp_path):
    """A profile whose [host] name no node of the cluster offers (an ssh device made by `hwl profile new`,
    named after the device) left its campaign waiting without a word."""
    address, env, _ = two_node_cluster
    path = write_profile(tmp_path, "pi-9")
    path.write_text(path.read_text().replace('name = "local"', 'name = "pi-9"', 1))
    proc = subprocess.Popen([*HWL, "campaign", "run", "--address", address, "--space", "nb201", "--archs", "1",
                             "--devices", str(path), "--store", str(tmp_path / "lab.db"), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(90, proc.terminate)  # the warning never came: stop waiting for it
    watchdog.start()
    seen = []
    for line in proc.stderr:  # the campaign waits on its device for good: read until the warning
        seen.append(line)
        if "no node of the Ray cluster offers" in line:
            break
    watchdog.cancel()
    proc.terminate()  # SIGTERM: the campaign stops cleanly, as Ctrl-C would
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert "no node of the Ray cluster offers the resource host:pi-9, so the devices whose [host] name is 'pi-9' " \
           "wait for one: start that host's node with --resources '{\"host:pi-9\": 1}'" in err, err[-2000:]
    assert "host:coordinator" not in err and "host:node2" not in err  # offered: no warning


def test_an_address_nothing_answers_is_a_clear_error_at_once(tmp_path):
    from harness.errors import ClusterError
    from harness.ray_cluster import ray_session

    address = f"127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    start = time.monotonic()
    with pytest.raises(ClusterError, match=rf"cannot join the Ray cluster at '{address}': nothing answers there"):
        with ray_session(address=address):
            pass
    assert time.monotonic() - start < 10  # not Ray's minutes of waiting for a GCS
    done = hwl("campaign", "run", "--space", "nb201", "--archs", "1", "--devices", write_profile(tmp_path, "nowhere"),
               "--store", tmp_path / "lab.db", "--address", address)
    assert done.returncode == 2 and "hwl campaign: error: cannot join the Ray cluster" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def token_head():
    """A Ray head with Ray's token auth and a ``host:local`` resource: (its temp dir, its token file, its port).
    Shared by the tests that join it or are refused: none changes what the others find there."""
    temp = tempfile.mkdtemp(prefix="hwlt-", dir="/tmp")
    token = Path(temp) / "head.tok"
    token.write_text("c" * 64 + "\n")
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    try:
        port, _ = start_head(temp, env, "--resources", '{"host:local": 1000}')
        yield temp, token, port
    finally:
        kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_cluster_that_refuses_to_be_joined_leaves_no_store_behind(token_head, tmp_path):
    """A Ray head with token auth, and this machine holding another token: `hwl campaign run --address` and `hwl
    onboard --address` made the store file (the campaign planned into it) before the join failed. They now join
    first, so the failure leaves nothing behind."""
    temp, _, port = token_head
    other_token = tmp_path / "other.tok"
    other_token.write_text("b" * 64 + "\n")
    # Ray tries a GCS that refuses its token once a second for 20 s (NUM_REDIS_GET_RETRIES) before it gives
    # up; 2 tries end in the same refusal (23.8 s -> 4.3 s a command)
    wrong = {"RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(other_token),
             "RAY_gcs_server_port_wait_time_s": "2"}
    profile = write_profile(tmp_path, "joined")
    for command in (["campaign", "run", "--space", "nb201", "--archs", "1", "--devices", profile, "--store",
                     tmp_path / "lab.db", "--no-progress"],
                    ["onboard", profile, "--space", "nb201", "--store", tmp_path / "lab.db", "--out",
                     tmp_path / "p.pt"]):
        done = hwl(*command, "--address", f"127.0.0.1:{port}", env=wrong)
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"cannot join the Ray cluster at '127.0.0.1:{port}'" in done.stderr.splitlines()[-1]
        assert not (tmp_path / "lab.db").exists() and not (tmp_path / "lab-artifacts").exists()


def test_joining_a_token_cluster_by_address_without_token_mode_names_ray_auth_mode(token_head, tmp_path):
    """On the head's own machine, its token in place, `hwl campaign run --address HOST:PORT` was refused with
    'Start it there with `ray start --head` (and give this machine its token)': a head ran and the token was
    there, but Ray's driver sends it to a given address only with RAY_AUTH_MODE=token. The error says so now,
    and the join works with it set."""
    temp, token, port = token_head
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env.update(RAY_TMPDIR=temp, RAY_AUTH_TOKEN_PATH=str(token), RAY_gcs_server_port_wait_time_s="2")
    profile = write_profile(tmp_path, "joined")  # no drift canaries: the join is tested, not the measuring
    args = [*HWL, "campaign", "run", "--space", "nb201", "--archs", "1", "--devices", str(profile), "--store",
            str(tmp_path / "lab.db"), "--canary-every", "0", "--no-progress", "--address", f"127.0.0.1:{port}"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and not (tmp_path / "lab.db").exists(), done.stderr[-2000:]
    last = done.stderr.splitlines()[-1]
    assert f"cannot join the Ray cluster at '127.0.0.1:{port}'" in last and "set RAY_AUTH_MODE=token" in last, last
    done = subprocess.run(args, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and '"done_now": 1' in done.stdout, done.stderr[-2000:]
