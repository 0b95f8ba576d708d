"""SSHSession against a real sshd: agent deployed over SSH, models pushed by hash, link loss."""
import contextlib
import dataclasses
import hashlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agents.protocol import Measure, Ping, Result
from agents.server import IN_FLIGHT_FOLDER
from harness.remote import Host
from harness.remote.deploy import deploy
from harness.transport.errors import ConnectionLost
from harness.transport.ssh import SSHSession
from tests.processes import processes_with
from tests.small_disk import small_disk
from tests.sshd import SSHServer, TestNetns, make_key, netns_available, sshd_available, trusted_loopback_host
from tests.test_agent_in_flight import SWEPT, _kill_all, _kill_mid_job, _quick

pytestmark = pytest.mark.skipif(not sshd_available(), reason="openssh-server not installed")
TINY = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 2, "window_min_runs": 5, "window_min_s": 0.02,
        "cooldown_s": 0.0}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from harness.export import export_one
    out = tmp_path_factory.mktemp("models")
    return [Path(export_one("nb201", i, out).path) for i in (77, 1234)]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    work = tmp_path_factory.mktemp("ssh")
    srv, host = trusted_loopback_host(work)
    report = deploy(host, python=sys.executable, agent_dir=str(work / "hwl"), use_venv=False)
    yield host, report, work
    host.close()
    srv.stop()


def _timed(reply) -> bool:
    """A measurement came back (on this shared 2-core machine a tiny window may be flagged unstable;
    stability is the agent's business, tested there; here the transport is under test)."""
    return isinstance(reply, Result) and reply.outcome in ("ok", "unstable") and reply.measurement is not None


def _measure(path: Path) -> Measure:
    return Measure(runtime="onnxruntime", model=str(path), sha256=_sha256(path), profile="quick", policy=TINY,
                   threads=1)


def test_measure_over_ssh_pushes_each_model_once(deployed, models):
    host, report, work = deployed
    cache = str(work / "hwl" / "cache")
    with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=cache) as session:
        assert session.hello.agent_version
        assert session.request(Ping(sent_ns=1)).sent_ns == 1
        first = session.request(_measure(models[0]))
        assert _timed(first), first.message
        assert first.measurement["stats"]["median_ms"] > 0
        again = session.request(_measure(models[0]))
        assert _timed(again)
    assert list(session.pushed) == [_sha256(models[0])]
    assert (Path(cache) / f"{_sha256(models[0])}.onnx").exists()


def test_a_long_ssh_session_remembers_only_its_latest_pushes(deployed, tmp_path):
    """One upload per architecture over a month: the session keeps the latest uploads, not all of them."""
    host, report, work = deployed
    cache = work / "hwl" / "cache-many"
    files = []
    for i in range(120):
        files.append(tmp_path / f"m{i}.onnx")
        files[-1].write_bytes(b"model %d" % i)
    session = SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=str(cache))
    cache.mkdir()
    for path in files:
        session.stage_model(path, _sha256(path))
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{_sha256(p)}.onnx" for p in files)
    assert list(session.pushed) == [_sha256(p) for p in files[-100:]]


def test_two_agents_on_one_device_never_measure_at_once(deployed, models):
    """The agent a dropped link leaves behind finishes its measurement while the reconnected
    coordinator's new agent starts one: the device lock makes the second wait (two sessions here)."""
    host, report, work = deployed
    cache = str(work / "hwl" / "cache")
    second_long = {**TINY, "warmup_min_s": 0.2, "repeats": 3, "window_min_s": 0.3}  # about 1 s per measurement
    ends, replies = {}, {}

    def measure(i):
        # its own connection, as each device actor of a real campaign has
        own = Host(host.name, host.address, host.user, host.key_file, port=host.port, known_hosts=host.known_hosts)
        with own, SSHSession(own, agent_path=report.agent_path, python=report.python, cache_dir=cache) as session:
            request = dataclasses.replace(_measure(models[i]), policy=second_long)
            ready.wait(30)
            replies[i] = session.request(request)
            ends[i] = time.monotonic()

    ready = threading.Barrier(2)
    threads = [threading.Thread(target=measure, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(_timed(replies[i]) for i in (0, 1)), replies
    first, second = sorted((0, 1), key=ends.get)
    # one measurement ran after the other: the later one ended about a whole measurement later
    assert ends[second] - ends[first] > 0.7 * replies[second].elapsed_s, (ends, replies[second].elapsed_s)
    log = (work / "hwl" / "agent.log").read_text()
    assert "another agent on this device is measuring" in log


def test_an_agent_that_cannot_start_is_said_in_the_words_of_the_shell_that_started_it(deployed, tmp_path):
    # the shell could not open the agent's log (on a Pi's SD card remounted read-only, before the agent's folder was
    # checked first; here a folder in the log's place), and the message gave only that log's last lines, from an
    # earlier healthy run (a campaign waited out reconnect_timeout_s on it). Said alone: the shell's check of the
    # log's size also complained ("[: 0 0: integer expression expected") before it; and the exit status is waited
    # for, which may come just after the end of the agent's output ("exit status unknown" under load)
    host, _, _ = deployed
    report = deploy(host, python=sys.executable, agent_dir=str(tmp_path / "hwl"), use_venv=False)
    (tmp_path / "hwl" / "agent.log").mkdir()
    session = SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConnectionLost, match=r"the agent did not start; agent on \S+ exit status \d+; its start "
                                             r"said: [^\[;]*/agent\.log: Is a directory; its log ends with: "
                                             r"\(nothing\)$"):
        session.open()


def test_a_long_agent_log_is_moved_aside_when_a_session_starts(deployed, monkeypatch):
    # one line per job: over months of campaigns the device's agent.log would grow without end
    from harness.transport import ssh

    host, report, work = deployed
    log, old, cache = work / "hwl" / "agent.log", work / "hwl" / "agent.log.1", str(work / "hwl" / "log-cache")
    monkeypatch.setattr(ssh, "AGENT_LOG_KEEP_BYTES", 1000)
    log.write_text("an old line\n" * 200)  # 2,400 bytes
    with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=cache) as session:
        assert session.request(Ping()) is not None
    assert old.read_text() == "an old line\n" * 200
    assert "an old line" not in log.read_text() and log.stat().st_size < 1000  # this session's lines only
    with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=cache) as s2:  # kept
        assert s2.request(Ping()) is not None
    assert old.read_text() == "an old line\n" * 200 and log.stat().st_size < 1000


def test_cache_quota_evicts_least_recently_used(deployed, models):
    host, report, work = deployed
    cache = work / "hwl" / "quota-cache"
    quota = max(p.stat().st_size for p in models) + 10  # room for one model only
    with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=str(cache),
                    cache_quota_bytes=quota) as session:
        for path in models:
            assert _timed(session.request(_measure(path)))
    left = sorted(p.name for p in cache.glob("*.onnx"))
    assert left == [f"{_sha256(models[1])}.onnx"]


def test_a_full_device_disk_evicts_cached_models_then_says_it_is_full(deployed, models, tmp_path):
    """A real small disk on the device (a 4 MB tmpfs for the model cache: mounting needs root),
    smaller than the cache quota: uploads make room by removing least recently used models, and
    a disk filled by something else is named as such."""
    from harness.export import export_one

    host, report, work = deployed
    three = models + [Path(export_one("nb201", 4000, tmp_path).path)]  # 2.4, 0.4 and 2.5 MB
    with small_disk(work / "small-device-disk", 4) as disk:
        with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=str(disk)) as session:
            for path in three + three[:1]:
                assert _timed(session.request(_measure(path)))
        left = sorted(p.name for p in disk.iterdir() if p.name != IN_FLIGHT_FOLDER)
        assert not any((disk / IN_FLIGHT_FOLDER).iterdir())  # the agent's record of each job, removed after it
        assert f"{_sha256(three[0])}.onnx" in left and len(left) < 3  # it made room
        assert all(name.endswith(".onnx") for name in left)  # and left no partial upload
        for name in left:
            (disk / name).unlink()
        with contextlib.suppress(OSError), open(disk / "someone-elses.log", "wb") as junk:
            while True:  # another program fills the disk
                junk.write(b"x" * 65536)
                junk.flush()
        with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=str(disk)) as session:
            with pytest.raises(ConnectionLost, match=r"the disk under .* is full \(\d+ kB free, the model needs "
                                                     r"\d+ kB\) and no cached model is left"):
                session.request(_measure(three[1]))


def test_what_the_job_of_an_ssh_agent_killed_on_its_host_left_running_is_killed_by_the_next_session(deployed):
    """An agent over SSH killed mid-job (the OOM killer, a lost session) left its tool's daemon running on the
    device; the agent of the next session, in the same cache folder, kills it and says so in its next result."""
    host, report, work = deployed
    marker, cache = f"{os.getpid() % 97 + 31}.85", str(work / "hwl" / "cache-killed")
    try:
        with ThreadPoolExecutor(1) as pool:
            _kill_mid_job(SSHSession(host, agent_path=report.agent_path, python=report.python,
                                     cache_dir=cache).open(), pool, marker)
        with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=cache) as session:
            reply = session.request(_quick())
        assert reply.message.startswith(SWEPT) and f"sleep {marker}" in reply.message, reply.message
        assert processes_with(f"sleep {marker}") == []
    finally:
        _kill_all(marker)


def test_agent_killed_on_host_is_connection_lost(deployed, models):
    host, report, work = deployed
    session = SSHSession(host, agent_path=report.agent_path, python=report.python,
                         cache_dir=str(work / "hwl" / "cache")).open()
    try:
        os.kill(session.hello.pid, signal.SIGKILL)  # the agent's pid, as it reported in hello
        with pytest.raises(ConnectionLost) as lost:
            session.request(Ping(sent_ns=2), timeout_s=10)
        assert "the link is up: killed by a signal?" in str(lost.value) and "link lost" not in str(lost.value)
    finally:
        session.close()
    # A new session on the same host works again.
    with SSHSession(host, agent_path=report.agent_path, python=report.python,
                    cache_dir=str(work / "hwl" / "cache")) as fresh:
        assert _timed(fresh.request(_measure(models[0])))


@contextlib.contextmanager
def _host_behind_a_link(tmp_path, ns_name: str, prefix: str, **host_options):
    """(link, a session factory) for a deployed host in a network namespace whose link a test cuts."""
    ns = TestNetns(ns_name, prefix).create()
    key = make_key(tmp_path / "client_key")
    srv = SSHServer(tmp_path / "srv", address=ns.address, netns=ns, authorized_keys=[key])
    try:
        srv.start()
        (tmp_path / "known_hosts").write_text(srv.public_host_key_line())
        host = Host("pi", ns.address, "root", key, port=srv.port, known_hosts=tmp_path / "known_hosts",
                    connect_timeout_s=2, **host_options)
        report = deploy(host, python=sys.executable, agent_dir=str(tmp_path / "hwl"), use_venv=False)
        yield ns, lambda: SSHSession(host, agent_path=report.agent_path, python=report.python,
                                     cache_dir=str(tmp_path / "hwl" / "cache"))
    finally:
        ns.restore()
        srv.stop()
        ns.delete()


@pytest.mark.skipif(not netns_available(), reason="needs root and ip netns")
def test_link_cut_mid_session_then_restored(tmp_path, models):
    with _host_behind_a_link(tmp_path, "hwlt-ssh", "198.18.42") as (link, new_session):
        session = new_session().open()
        link.cut()
        with pytest.raises(ConnectionLost):  # no answer comes over the cut link: its timeout's length is no matter
            session.request(Ping(sent_ns=3), timeout_s=1)
        session.close()
        with pytest.raises(ConnectionLost):
            new_session().open()
        link.restore()
        with new_session() as back:
            assert _timed(back.request(_measure(models[0])))


@pytest.mark.skipif(not netns_available(), reason="needs root and ip netns")
def test_a_link_cut_during_a_long_measurement_is_noticed_within_the_link_timeout(tmp_path, models):
    """No reply is due for minutes while a model is timed; keepalives find the dead link long before."""
    with _host_behind_a_link(tmp_path, "hwlt-keep", "198.18.43", link_timeout_s=4) as (link, new_session):
        long = dataclasses.replace(_measure(models[0]), policy={**TINY, "window_min_s": 60.0, "repeats": 2})
        with new_session() as session:
            # cut once the agent runs the job (its mark in the folder of jobs in flight), not a fixed 3 s later
            threading.Thread(target=_cut_once_a_job_runs, args=(link, tmp_path / "hwl" / "cache"), daemon=True).start()
            start = time.monotonic()
            with pytest.raises(ConnectionLost):
                session.request(long, timeout_s=300)
            assert time.monotonic() - start < 30, "noticed only at the reply timeout"


def _cut_once_a_job_runs(link, cache: Path, wait_s: float = 120) -> None:
    """Cut ``link`` once the agent caching in ``cache`` has a job in flight (or after ``wait_s``: a guard against a
    job that never starts, which the test's request then waits out)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not any((cache / IN_FLIGHT_FOLDER).glob("*.job")):
        time.sleep(0.05)
    link.cut()


def test_a_cached_model_gone_bad_on_the_device_is_pushed_again(deployed, models):
    """The agent refuses a cached copy whose bytes no longer match its hash (bit rot on an SD card,
    a hand edit); the session pushes the model again instead of failing the architecture."""
    host, report, work = deployed
    cache = work / "hwl" / "cache-rot"
    sha = _sha256(models[1])
    with SSHSession(host, agent_path=report.agent_path, python=report.python, cache_dir=str(cache)) as session:
        assert _timed(session.request(_measure(models[1])))
        cached = cache / f"{sha}.onnx"
        cached.write_bytes(cached.read_bytes()[:-100] + bytes(100))  # same size, other bytes
        again = session.request(_measure(models[1]))
        assert _timed(again), again.message
    assert list(session.pushed) == [sha, sha] and _sha256(cached) == sha
