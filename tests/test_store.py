"""The SQLite store: schema versioning, refusal of foreign files, attempts and results."""
import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import threading

import pytest

from harness.campaign_lock import campaign_lock, lock_path
from harness.errors import CampaignError, StorageFull, StoreError, StoreGone, StoreVersionError
from harness.store import Store, decode_samples
from harness.store_schema import SCHEMA_VERSION
from tests.small_disk import small_disk


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _campaign(store, name="c1", devices=("d1", "d2"), archs=("5", "7", "9")):
    jobs = [(d, a, i) for d in devices for i, a in enumerate(archs)]
    return store.create_campaign(name=name, space="nb201", measurement="quick", arch_spec=",".join(archs),
                                 seed=0, order_seed=0, config={"x": 1}, devices={d: "{}" for d in devices},
                                 jobs=jobs)


def _ok(label, iqr=0.01, outcome="ok"):
    return {"outcome": outcome, "flags": [] if outcome == "ok" else ["unstable"],
            "stats": {"label_ms": label, "median_ms": label, "iqr_over_median": iqr},
            "samples_ns": [[1.5e6, 1.6e6], [1.4e6]], "block_size": 1, "fingerprint_id": None}


def test_new_store_is_wal_and_versioned(tmp_path):
    with Store(tmp_path / "lab.db") as s:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.integrity_check() == "ok"


def test_attempts_results_and_latency_table(tmp_path):
    s = Store(tmp_path / "lab.db")
    cid = _campaign(s)
    (job, arch, attempts), *_ = s.queued_jobs(cid, "d1")
    assert attempts == 0
    a1 = s.start_attempt(job)
    s.finish_attempt(job, a1, record=_ok(2.0, 0.4, "unstable"), job_state="queued")
    a2 = s.start_attempt(job)
    assert (a1, a2) == (1, 2)
    rid = s.finish_attempt(job, a2, record=_ok(1.5), job_state="done")
    # the same (job, attempt) stored twice is one row: results are idempotent on it
    assert s.finish_attempt(job, a2, record=_ok(9.9), job_state="done") == rid
    rows = s.job_results(job)
    assert [(r[1], r[2]) for r in rows] == [(1, "unstable"), (2, "ok")]
    table = s.latency_table("nb201")
    assert table.to_dict(orient="records") == [{"arch": int(arch), "device": "d1", "latency_ms": 1.5,
                                                "source": "measured:c1"}]
    blob = s.db.execute("SELECT samples_ns FROM results WHERE id = ?", (rid,)).fetchone()[0]
    assert decode_samples(blob) == [[1.5e6, 1.6e6], [1.4e6]]
    st = s.status(cid).set_index("device")
    assert st.loc["d1", "done"] == 1 and st.loc["d1", "queued"] == 2 and st.loc["d2", "queued"] == 3


def test_a_drift_flag_counts_jobs_apart_from_their_results(tmp_path):
    """A drifting canary's warning said "flagged 53 results" of a 30-arch campaign: 23 were unstable
    attempts measured again. It now counts the jobs apart from the results."""
    with Store(tmp_path / "lab.db") as s:
        cid = _campaign(s)
        (first, _, _), (second, _, _), _ = s.queued_jobs(cid, "d1")
        s.finish_attempt(first, s.start_attempt(first), record=_ok(2.0, 0.4, "unstable"), job_state="queued")
        s.finish_attempt(first, s.start_attempt(first), record=_ok(1.5), job_state="done")
        s.finish_attempt(second, s.start_attempt(second), record=_ok(1.7), job_state="done")
        other = s.queued_jobs(cid, "d2")[0][0]  # another device's result is not flagged
        s.finish_attempt(other, s.start_attempt(other), record=_ok(1.1), job_state="done")
        assert s.flag_results_since(cid, "d1", 0, "canary_drift") == (3, 2)
        assert s.flag_results_since(cid, "d1", 0, "canary_drift") == (0, 0)  # flagged once
        flags = s.query("SELECT j.device, r.flags FROM results r JOIN jobs j ON j.id = r.job_id ORDER BY r.id")
    assert flags.values.tolist() == [["d1", "unstable,canary_drift"], ["d1", "canary_drift"],
                                     ["d1", "canary_drift"], ["d2", ""]]


def test_recover_interrupted_requeues_running_jobs(tmp_path):
    s = Store(tmp_path / "lab.db")
    cid = _campaign(s)
    job = s.queued_jobs(cid, "d2")[0][0]
    s.start_attempt(job)
    s.close()
    s = Store(tmp_path / "lab.db")  # a new coordinator
    assert s.recover_interrupted(cid) == 1
    assert s.db.execute("SELECT state FROM attempts WHERE job_id = ?", (job,)).fetchone()[0] == "lost"
    assert s.start_attempt(job) == 2  # the next attempt gets a new number


def test_a_device_without_an_error_has_none_beside_a_quarantined_one(tmp_path):
    """pandas 3 read d2's NULL error as NaN beside d1's text: a truthy float where callers test `error or ''`."""
    with Store(tmp_path / "lab.db") as s:
        cid = _campaign(s)
        s.set_device_state(cid, "d1", "quarantined", error="no CUDA provider")
        assert s.devices(cid)["error"].tolist() == ["no CUDA provider", None]
        assert s.status(cid)["error"].tolist() == ["no CUDA provider", None]


def test_imported_rows_live_beside_measured_ones(tmp_path):
    s = Store(tmp_path / "lab.db")
    assert s.add_imported("nb201", [("1", "pixel3", 3.0), ("2", "pixel3", 4.0)], source="t.parquet") == (2, 0)
    # another file of that name for another device adds to it; a re-import for pixel3 replaces its rows
    assert s.add_imported("nb201", [("1", "pixel2", 7.0)], source="t.parquet") == (1, 0)
    assert s.add_imported("nb201", [("1", "pixel3", 5.0)], source="t.parquet") == (1, 2)
    t = s.latency_table("nb201")
    assert t.to_dict(orient="records") == [{"arch": 1, "device": "pixel2", "latency_ms": 7.0,
                                            "source": "imported:t.parquet"},
                                           {"arch": 1, "device": "pixel3", "latency_ms": 5.0,
                                            "source": "imported:t.parquet"}]


def test_latency_table_reads_while_a_writer_holds_a_transaction(tmp_path):
    path = tmp_path / "lab.db"
    writer = Store(path)
    cid = _campaign(writer)
    job = writer.queued_jobs(cid, "d1")[0][0]
    writer.finish_attempt(job, writer.start_attempt(job), record=_ok(1.0), job_state="done")
    reader = Store(path, readonly=True)
    with writer.transaction():  # a campaign in the middle of a write
        writer.db.execute("UPDATE jobs SET updated_at = 1")
        result = {}
        t = threading.Thread(target=lambda: result.update(df=reader.latency_table("nb201")))
        t.start()
        t.join(10)
    assert len(result["df"]) == 1


def test_foreign_files_are_refused_unchanged(tmp_path):
    text = tmp_path / "notes.db"
    text.write_bytes(b"these are my notes, not a database\n" * 50)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE mine (x)")
    con.execute("INSERT INTO mine VALUES (1)")
    con.commit()
    con.close()
    before = {p: _digest(p) for p in (text, other)}
    with pytest.raises(StoreError, match="not an hwl store"):
        Store(text)
    with pytest.raises(StoreError, match="not an hwl store"):
        Store(other)
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "nothing.db", readonly=True)
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(StoreError, match="is a directory, not a store file"):
        Store(tmp_path / "folder.db", readonly=True)
    assert {p: _digest(p) for p in (text, other)} == before
    assert not (tmp_path / "notes.db-wal").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.db", "notes.db", "other.db"]  # no -locks folder


def test_newer_store_is_refused_with_upgrade_message(tmp_path):
    path = tmp_path / "lab.db"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    digest = _digest(path)
    # it said 'pip install -U hwl', which installs whatever PyPI holds under that name; hwl is a checkout
    with pytest.raises(StoreVersionError, match=r"upgrade hwl \(`git pull` in its checkout\) to open it"):
        Store(path)
    assert _digest(path) == digest


def test_campaign_lock_refuses_a_second_holder_and_frees_on_exit(tmp_path):
    db = tmp_path / "lab.db"
    refused = rf"campaign c-7 in .*lab.db is being measured by another hwl process \(pid {os.getpid()} on "
    with campaign_lock(db, 7, "c-7"):
        for _ in range(2):  # a refused attempt leaves the holder's lock in place
            with pytest.raises(CampaignError, match=refused):
                with campaign_lock(db, 7, "c-7"):
                    pass
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "lab.db").symlink_to(db)  # the same store by another name
        with pytest.raises(CampaignError, match=refused):
            with campaign_lock(tmp_path / "elsewhere" / "lab.db", 7, "c-7"):
                pass
        with campaign_lock(db, 8):  # another campaign of the same store runs alongside
            pass
    with pytest.raises(RuntimeError):
        with campaign_lock(db, 7):
            raise RuntimeError("the coordinator fails")
    with campaign_lock(db, 7):  # free again after either exit
        pass
    assert lock_path(db, 7).parent == tmp_path.resolve() / "lab.db-locks"


def test_status_counts_one_running_job_per_device_and_none_without_a_coordinator(tmp_path):
    """The coordinator sends a device's next job before the current one ends; the store marks both
    running, but the device measures one, and with no coordinator alive none."""
    from harness.cli.campaign import status

    with Store(tmp_path / "lab.db") as s:
        cid = _campaign(s)
        for job_id, _, _ in s.queued_jobs(cid, "d1")[:2]:
            s.start_attempt(job_id)
    with campaign_lock(tmp_path / "lab.db", cid, "c1"):
        _, live, coordinator = status(store=str(tmp_path / "lab.db"))
    _, dead, nobody = status(store=str(tmp_path / "lab.db"))
    assert coordinator.startswith(f"pid {os.getpid()} on ") and nobody is None

    def counts(frame):
        return frame.set_index("device")[["queued", "running"]].to_dict(orient="index")

    assert counts(live) == {"d1": {"queued": 2, "running": 1}, "d2": {"queued": 3, "running": 0}}
    assert counts(dead) == {"d1": {"queued": 3, "running": 0}, "d2": {"queued": 3, "running": 0}}


def test_campaign_status_opens_the_store_once(tmp_path, monkeypatch, capsys):
    """`hwl campaign status` of a campaign no coordinator runs opened the store twice, for its table and again for
    the resume line under it: two read-only opens' checks of the file, and a table and a hint read at two moments of
    a store a campaign may be writing. One open now serves both."""
    from harness.cli import main as hwl_main

    db = tmp_path / "lab.db"
    with Store(db) as s:
        _campaign(s)
    opened, real_init = [], Store.__init__

    def counted(self, path, **kwargs):
        opened.append(str(path))
        real_init(self, path, **kwargs)

    monkeypatch.setattr(Store, "__init__", counted)
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    assert f"no coordinator is running it; go on with: hwl campaign resume --store {db} --name c1" in \
        capsys.readouterr().out
    assert opened == [str(db)]


def test_campaign_status_of_an_onboarding_batch_says_to_run_the_onboarding_again(tmp_path, capsys):
    """An onboarding stopped mid-batch (killed, or the machine rebooted): `hwl campaign status` said to go on with
    `hwl campaign resume --name onboard:...`, which measured that batch alone and left the onboarding's next picks,
    model and table undone; README says to run the onboarding's command again, which finishes the batch first."""
    from harness.campaign import onboarding_prefix
    from harness.cli import main as hwl_main

    db = tmp_path / "lab.db"
    with Store(db) as s:
        _campaign(s, name=onboarding_prefix("d1", "nb201") + "0123456789", devices=("d1",))
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # as one line, however the terminal wrapped it
    assert f"no coordinator is running it; go on with: hwl onboard d1 --space nb201 --store {db} ... (the " \
           "onboarding's command as it was given: it finishes this batch, then goes on where it stopped)" in out
    assert "campaign resume" not in out


def test_the_go_on_line_of_an_onboarding_from_a_profile_file_names_that_file(tmp_path, capsys):
    """`hwl onboard myort.toml ...` stopped mid-batch: status said to go on with `hwl onboard myort ...`, which is
    refused as an unknown device (no profile of that name). It names the file the batch was measured with; a
    shipped profile, found by its name, is still named so."""
    import json

    from harness.campaign import onboarding_prefix
    from harness.cli import main as hwl_main
    from harness.profiles import available_profiles

    db, mine = tmp_path / "lab.db", tmp_path / "my board.toml"
    shipped = available_profiles()["local-ort-1t"]
    for device, source in (("myort", mine), ("local-ort-1t", shipped)):
        with Store(db) as s:
            cid = _campaign(s, name=onboarding_prefix(device, "nb201") + "0123456789", devices=(device,))
            s.set_device_profile(cid, device, json.dumps({"name": device, "source": str(source)}))
    assert hwl_main(["campaign", "status", "--store", str(db), "--name", "onboard:myort:nb201:0123456789"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"go on with: hwl onboard '{mine}' --space nb201 --store {db} ... (the onboarding's" in out, out
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"go on with: hwl onboard local-ort-1t --space nb201 --store {db} ... (the onboarding's" in out, out


def test_status_of_a_campaign_done_but_for_its_end_canary_says_so_unless_its_canaries_are_off(tmp_path, capsys):
    """Every job done, the last one after the campaign's last canary (killed in its end canary): status showed a
    finished campaign. A campaign last run with --canary-every 0, whose resume runs no canary, says nothing."""
    from harness.cli import main as hwl_main

    db = tmp_path / "lab.db"
    with Store(db) as s:
        cid = _campaign(s, devices=("d1",), archs=("5", "7"))
        (first, _, _), (second, _, _) = s.queued_jobs(cid, "d1")
        checked = s.finish_attempt(first, s.start_attempt(first), record=_ok(2.0), job_state="done")
        s.add_canary(cid, "d1", after_jobs=1, median_ms=3.0, baseline_ms=3.0, ok=True, last_result_id=checked)
        s.finish_attempt(second, s.start_attempt(second), record=_ok(2.1), job_state="done")
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    assert ("its last session stopped before its end canary: the latencies of 1 job of d1 are not checked for drift "
            f"yet; go on with: hwl campaign resume --store {db} --name c1") in " ".join(capsys.readouterr().out.split())
    with campaign_lock(db, cid, "c1", resume_flags=["--canary-every", "0"]):
        pass
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    assert "end canary" not in capsys.readouterr().out


def test_status_warns_of_a_job_sent_lately_by_a_coordinator_holding_no_lock(tmp_path, capsys):
    """A coordinator of an hwl older than the campaign lock (7f97a1b) marks jobs running as it sends them and holds
    no lock: written here as it wrote them (Store.start_attempt, no campaign_lock). status must not tell the lab,
    upgrading under it, that no coordinator runs the campaign; an hour later (it crashed) it may."""
    from harness.cli import main as hwl_main

    db = tmp_path / "lab.db"
    with Store(db) as s:
        cid = _campaign(s)
        job_id = s.queued_jobs(cid, "d1")[0][0]
        s.start_attempt(job_id)
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "no process holds its lock, yet a job was sent to a device" in out and "measure its jobs twice" in out
    assert "no coordinator is running it" not in out
    assert f"if none does, go on with: hwl campaign resume --store {db} --name c1" in out
    with campaign_lock(db, cid, "c1"):  # a coordinator of today's hwl holds it: it is named, no warning
        assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "no process holds its lock" not in out and f"being measured by pid {os.getpid()}" in out
    with Store(db) as s:  # the same job an hour earlier: what a crashed coordinator left
        s.db.execute("UPDATE attempts SET started_at = started_at - 3600 WHERE job_id = ?", (job_id,))
        s.db.commit()
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "no process holds its lock" not in out and "no coordinator is running it; go on with" in out


def test_a_canary_baseline_follows_the_device_to_a_new_address_but_not_to_a_new_setup(tmp_path):
    from harness.profiles import parse_profile

    def profile(address, threads=1):
        return parse_profile({"name": "pi", "device_class": "embedded_cpu", "runtime": {"kind": "onnxruntime",
                              "threads": threads}, "host": {"name": "pi", "transport": "ssh", "address": address,
                                                            "user": "pi", "key": "~/.ssh/lab"}}).to_json()

    with Store(tmp_path / "lab.db") as s:
        ids = [s.create_campaign(name=f"c{i}", space="nb201", measurement=None, arch_spec="5", seed=0, order_seed=0,
                                 config={}, devices={"pi": p}, jobs=[("pi", "5", 0)])
               for i, p in enumerate((profile("198.18.0.2"), profile("198.18.0.9"), profile("198.18.0.9", 2)))]
        s.add_canary(ids[0], "pi", after_jobs=0, median_ms=2.5, baseline_ms=2.5, ok=True, last_result_id=None)
        assert s.canary_state(ids[1], "pi").baseline_ms == 2.5  # the same device, reached elsewhere
        assert s.canary_state(ids[2], "pi") is None  # two threads: another baseline


def test_a_full_disk_under_the_store_is_a_clear_error_and_loses_nothing(tmp_path):
    """A real full disk: a 1 MB tmpfs (mounting it needs root)."""
    with small_disk(tmp_path / "small", 1) as folder, Store(folder / "lab.db") as s:
        cid = _campaign(s)
        before = s.status(cid)
        with pytest.raises(StorageFull, match=r"the disk holding the store .*lab.db is full .* nothing stored "
                                              r"before it is lost"):
            for i in range(100):  # ~100 kB each: the disk fills within a few
                s.add_imported("nb201", [(str(k), f"dev{i}", 1.0 + k) for k in range(2000)], source=f"x{i}")
        assert s.integrity_check() == "ok"
        assert s.status(cid).equals(before)  # what was there is still there, readable


@contextlib.contextmanager
def _immutable(path):
    """chattr +i: read-only even for root (tests run as root, where chmod does not stop a write)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_store_or_folder_is_a_clear_error_and_keeps_the_store(tmp_path):
    db = tmp_path / "lab.db"
    with Store(db) as s:
        _campaign(s)
    digest = _digest(db)
    with _immutable(db):
        read_only = r"lab.db cannot be written \(attempt to write a readonly database\): its file \(or folder\)"
        with Store(db) as s, pytest.raises(StoreError, match=read_only):
            _campaign(s, name="c2")
        with Store(db, readonly=True) as s:  # reading it is fine
            assert s.campaign_names() == ["c1"]
    assert _digest(db) == digest



def test_a_store_archived_in_a_folder_that_cannot_be_written_is_read_unless_its_wal_holds_writes(tmp_path):
    """A store on read-only media (a month's campaign archived): `hwl campaign status` / `export` were
    refused, since SQLite cannot make the -shm file beside it. It is now read as immutable, unchanged;
    only when a -wal file beside it holds writes not yet in the store is it refused, saying so."""
    db = tmp_path / "lab.db"
    with Store(db) as s:
        _campaign(s)
        unsaved = tmp_path / "unsaved"  # a copy taken while a writer still had writes in its -wal
        unsaved.mkdir()
        shutil.copy(db, unsaved / "lab.db")
        shutil.copy(tmp_path / "lab.db-wal", unsaved / "lab.db-wal")
    folder = tmp_path / "shelf"
    folder.mkdir()
    shutil.copy(db, folder / "lab.db")
    digest = _digest(folder / "lab.db")
    with _immutable(folder):
        with Store(folder / "lab.db", readonly=True) as s:
            assert s.campaign_names() == ["c1"] and len(s.status(1)) == 2
        assert sorted(p.name for p in folder.iterdir()) == ["lab.db"] and _digest(folder / "lab.db") == digest
    assert (unsaved / "lab.db-wal").stat().st_size > 0
    with _immutable(unsaved), pytest.raises(StoreError, match=r"its folder cannot be written and lab.db-wal beside "
                                                             r"it holds its last writes"):
        Store(unsaved / "lab.db", readonly=True)


def test_a_store_replaced_while_open_is_saved_beside_the_new_file_which_is_left_alone(tmp_path):
    """(A store removed under a campaign: tests/test_campaign_ray.py.) Another file moved over the
    path: the open store's content goes beside it, and the new file is not overwritten."""
    db = tmp_path / "lab.db"
    with Store(db) as s:
        s.check_still_there()  # the same file: nothing happens
        _campaign(s)
        with Store(tmp_path / "other.db") as other:
            _campaign(other, name="theirs")
        os.replace(tmp_path / "other.db", db)
        theirs = _digest(db)
        with pytest.raises(StoreGone, match=r"lab.db was replaced while this command ran; what it held is written "
                                            r"back to .*lab-saved-\d{8}-\d{6}.db, .*give --store .*lab-saved-"):
            s.check_still_there()
    assert _digest(db) == theirs
    (saved,) = tmp_path.glob("lab-saved-*.db")
    with Store(saved, readonly=True) as s:
        assert s.campaign_names() == ["c1"] and s.integrity_check() == "ok"


def test_a_store_read_while_it_is_being_made_is_never_taken_for_another_programs_file(tmp_path):
    """Opening checks the file before it waits for the opening lock, and read application_id, the schema version and
    the tables one by one: a store made meanwhile showed its tables beside application_id 0 and was refused as "an
    SQLite file but not an hwl store" (CI: one of four processes opening a new store at once; here 9 of 100 stores
    read while made). The three are now read in one snapshot."""
    refused = []
    for i in range(200):
        path = tmp_path / f"s{i}.db"
        made = threading.Event()
        maker = threading.Thread(target=lambda: (Store(path).close(), made.set()))
        maker.start()
        while not made.is_set():
            try:
                Store(path, readonly=True).close()
            except StoreError as exc:  # not there yet, or empty: said so, rightly
                if "not an hwl store" in str(exc):
                    refused.append(str(exc))
        maker.join()
    assert not refused, refused[:1]


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path):
    """Each opener checks the schema version and creates the tables; without a lock around that, two
    of them both created it (table campaigns already exists)."""
    import subprocess
    import sys
    import time

    opener = ("import sys, time; from harness.store import Store\n"
              "print('ready', flush=True)\n"
              "time.sleep(max(0.0, float(sys.stdin.readline()) - time.time()))\n"  # all at one instant
              "with Store(sys.argv[1]) as s: assert s.integrity_check() == 'ok'\n")
    for i in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", opener, str(tmp_path / f"s{i}.db")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        for p in procs:  # once all have imported hwl (instead of a fixed few seconds for it)
            assert p.stdout.readline() == "ready\n", p.communicate()[1]
        at = time.time() + 0.2
        for p in procs:
            p.stdin.write(f"{at}\n")
            p.stdin.flush()
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors


def test_another_process_closing_the_store_leaves_this_ones_writes_to_everyone(tmp_path):
    """A store kept open (a campaign's coordinator) while another process opens and closes it (a refused
    `hwl campaign resume`, an onboarding into the same store). The opening lock was a flock on the store
    file, whose close dropped this process's SQLite fcntl locks: the other process took itself for the last
    one, deleted the WAL file, and every later commit of this one went to that deleted file, seen by no
    other reader (a coordinator killed then would have lost them all)."""
    import sys

    db = tmp_path / "lab.db"
    with Store(db) as s:
        _campaign(s)
        other = subprocess.run([sys.executable, "-c", "import sys; from harness.store import Store\n"
                                "with Store(sys.argv[1]) as s: assert s.campaign_names() == ['c1']", str(db)],
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr
        assert (tmp_path / "lab.db-wal").exists()  # the WAL this store writes to is still the file's
        _campaign(s, name="c2")  # committed after the other process left
        with Store(db, readonly=True) as reader:
            assert reader.campaign_names() == ["c1", "c2"]
    with Store(db, readonly=True) as s:
        assert s.integrity_check() == "ok" and s.campaign_names() == ["c1", "c2"]


def test_a_write_lock_held_past_the_busy_timeout_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    import sqlite3

    import harness.store as store_module

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.3)
    with Store(tmp_path / "lab.db") as s:
        other = sqlite3.connect(tmp_path / "lab.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a long data import in another process
        with pytest.raises(store_module.StoreBusy, match=r"lab.db is busy: another process has held its write "
                                                         r"lock for over 0.3 s .*nothing was changed"):
            s.add_fingerprint("f1", {"cpu": "x"})
        other.execute("ROLLBACK")
        s.add_fingerprint("f1", {"cpu": "x"})  # free again
        assert s.db.execute("SELECT count(*) FROM fingerprints").fetchone()[0] == 1
        other.close()


def test_a_store_file_left_empty_is_said_to_be_empty_when_read(tmp_path):
    (tmp_path / "lab.db").write_bytes(b"")  # a run killed as it created the store
    with pytest.raises(StoreError, match="lab.db is empty: nothing was ever stored in it"):
        Store(tmp_path / "lab.db", readonly=True)


def _listing(folder):
    """Each file's name, size and modification time in ``folder`` (folders by name only)."""
    return {p.name: None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_status_of_a_store_no_process_has_open_leaves_its_folder_as_it_found_it(tmp_path):
    """A read-only command left lab.db-wal (0 bytes) and lab.db-shm (32 KiB) beside a finished store: SQLite makes
    them to read a WAL store, and a read-only connection cannot remove them."""
    from harness.cli import main as hwl_main

    db = tmp_path / "lab.db"
    with Store(db) as s:
        _campaign(s)
    before, digest = _listing(tmp_path), _digest(db)
    assert hwl_main(["campaign", "status", "--store", str(db)]) == 0
    assert _listing(tmp_path) == before and _digest(db) == digest


WRITER = ("import sys\nfrom harness.store import Store\nfrom tests.test_store import _campaign\n"
          "with Store(sys.argv[1]) as s:\n"
          "    _campaign(s, name='c2')\n    print('ready', flush=True)\n    sys.stdin.readline()\n"
          "    _campaign(s, name='c3')\n")


def test_a_reader_beside_a_coordinator_sees_its_rows_and_leaves_its_wal(tmp_path):
    """A reader that opened the store while no process had it open, then a coordinator opened it: the reader sees
    the coordinator's rows, and closing leaves the coordinator's -wal file in place (removing it would lose what the
    coordinator commits next); the coordinator's own close removes it."""
    import sys
    from pathlib import Path

    db = tmp_path / "lab.db"
    with Store(db) as s:
        _campaign(s)
    before = _listing(tmp_path)
    reader = Store(db, readonly=True)
    assert reader.campaign_names() == ["c1"]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], cwd=Path(__file__).resolve().parents[1],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "ready\n", writer.communicate(timeout=60)[1]
        assert reader.campaign_names() == ["c1", "c2"]
        reader.close()
        assert (tmp_path / "lab.db-wal").exists() and (tmp_path / "lab.db-shm").exists()
    finally:
        _, errors = writer.communicate("go on\n", timeout=60)
    assert writer.returncode == 0, errors
    with Store(db, readonly=True) as s:
        assert s.campaign_names() == ["c1", "c2", "c3"] and s.integrity_check() == "ok"
    assert _listing(tmp_path).keys() == before.keys()


def test_export_of_a_campaign_being_measured_says_so_not_to_resume_it(tmp_path, capsys):
    """The export line of a campaign with jobs left told the user to resume it, also while its coordinator ran: a
    resume beside it is refused. It says the campaign is being measured now."""
    from harness.cli import main as hwl_main
    from harness.profiles import load_profile

    db = tmp_path / "lab.db"
    with Store(db) as s:
        cid = s.create_campaign(name="c1", space="nb201", measurement="quick", arch_spec="5,7", seed=0, order_seed=0,
                                config={}, devices={"d1": load_profile("local-ort-1t").to_json()},
                                jobs=[("d1", "5", 0), ("d1", "7", 1)])
        first = s.queued_jobs(cid, "d1")[0][0]
        s.finish_attempt(first, s.start_attempt(first), record=_ok(2.0), job_state="done")
    out = ["campaign", "export", "--store", str(db), "--out", str(tmp_path / "so-far.parquet")]
    with campaign_lock(db, cid, "c1"):  # as its coordinator holds it
        assert hwl_main(out) == 0
        assert "(campaign c1; 1 job not measured yet: c1 is being measured now; export again once done) to " in \
            capsys.readouterr().err
    assert hwl_main(out) == 0
    assert "(campaign c1; 1 job not measured yet: resume it, then export again) to " in capsys.readouterr().err
