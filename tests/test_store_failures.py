"""A store whose writes start failing under a running process: a file-size limit (``ulimit -f``; FAT32's 4 GiB)
(a full disk: test_store.py and test_campaign_ray.py, on a real tmpfs); a store damaged on disk."""
import contextlib
import hashlib
import resource
import sqlite3
import subprocess
import sys

import pytest

from harness.profiles import load_profile
from harness.store import Store
from tests.campaign_helpers import HWL, REPO, hwl
from tests.store_writer import store_results

LIMIT = 400_000  # bytes: the writer's WAL passes it within a few dozen results
DEVICE = "local-ort-1t"


def _rows(db, sql):
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


def test_a_store_at_its_file_size_limit_stops_the_writer_with_one_line_and_loses_nothing(tmp_path):
    """SQLite reads EFBIG as 'disk I/O error' (SQLITE_IOERR_WRITE), which the coordinator let out as a traceback
    and which names neither the store nor the cause."""
    db = tmp_path / "lab.db"
    out = subprocess.run([sys.executable, "-m", "tests.store_writer", str(db), "3", "2", "--file-size-limit",
                          str(LIMIT)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, stored, line = out.stdout.splitlines()
    assert first == "stored 5" and int(stored.split()[1]) > 0
    assert line == (f"StorageFull: writing the store {db} failed (disk I/O error): lab.db-wal takes "
                    f"{(tmp_path / 'lab.db-wal').stat().st_size:,} bytes, reaching this process's file-size limit of "
                    f"{LIMIT:,} bytes (ulimit -f); raise it (ulimit -f unlimited); the change was rolled back and "
                    "nothing stored before it is lost: run the command again once that is mended")
    kept = 5 + int(stored.split()[1])
    assert _rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(db, "SELECT count(*) FROM results") == [(kept,)]
    # a result refused is not stored: its job is left running (when its start was stored), which the next run
    # puts back in the queue
    states = dict(_rows(db, "SELECT state, count(*) FROM jobs WHERE state != 'queued' GROUP BY state"))
    assert states.pop("done") == kept and states.get("running", 0) <= 1


def test_a_data_import_past_the_file_size_limit_is_one_line(tmp_path):
    table = tmp_path / "big.csv"
    table.write_text("arch_index,device,latency_ms\n" + "".join(f"{i},pi,{1 + i / 1e4}\n" for i in range(15625)))
    r = subprocess.run([*HWL, "data", "import", str(table), "--space", "nb201", "--store", str(tmp_path / "lab.db")],
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT)))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"hwl data: error: writing the store {tmp_path / 'lab.db'} failed (disk I/O error): "
                               "lab.db-wal takes ") and len(r.stderr.splitlines()) == 1
    assert "file-size limit of 400,000 bytes (ulimit -f)" in r.stderr


def _damaged_store(tmp_path, results=200):
    """A closed store of ``results`` results with one page of its results table overwritten by garbage, as a bad
    sector or a torn copy leaves it; returns its path and how many results that page held."""
    db = tmp_path / "lab.db"
    with Store(db) as st:
        cid = st.create_campaign(name="c1", space="nb201", measurement="quick", arch_spec="all", seed=0,
                                 order_seed=0, config={}, devices={DEVICE: load_profile(DEVICE).to_json()},
                                 jobs=[(DEVICE, str(i), i) for i in range(results + 10)])
        store_results(st, iter(st.queued_jobs(cid, DEVICE)), results)
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            leaves = con.execute("SELECT pageno, ncell FROM dbstat WHERE name = 'results' AND pagetype = 'leaf' "
                                 "ORDER BY pageno").fetchall()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find a page of the results table")
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
    page, held = leaves[len(leaves) // 2]
    with open(db, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(bytes(range(256)) * (page_size // 256))
    return db, held


def test_a_damaged_store_is_one_line_naming_it_in_every_command(tmp_path):
    db, _ = _damaged_store(tmp_path)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    damaged = (f"the store {db} is damaged (SQLite: database disk image is malformed); `hwl store check {db}` says "
               f"how, and `hwl store recover {db} NEW.db` copies what can still be read into a new store")
    for command in (["campaign", "export", "--store", db, "--out", tmp_path / "x.parquet"],
                    ["store", "backup", db, tmp_path / "backup.db"]):
        r = hwl(*command)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"hwl {command[0]}: error: {damaged}"), r.stderr
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "backup.db").exists()
    r = hwl("store", "check", db)
    assert r.returncode == 1 and r.stdout.startswith(f"{db} is damaged: SQLite's integrity check found "), r.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest  # nothing wrote into it


def test_recover_copies_every_row_of_a_damaged_store_that_can_be_read(tmp_path):
    db, lost = _damaged_store(tmp_path)
    new = tmp_path / "new.db"
    r = hwl("store", "recover", db, new)
    assert r.returncode == 0, r.stderr
    kept = 200 - lost
    assert r.stdout.startswith(f"recovered {db} into {new} (integrity ok): 1 campaign, 210 jobs ({kept} done), "
                               f"{kept} results ({kept} accepted latencies)"), r.stdout
    assert r.stdout.rstrip().endswith(f"; 1 damaged stretch of rows stepped over; {lost} jobs whose answer was lost "
                                      f"queued again: `hwl campaign resume --store {new}` measures them")
    assert _rows(new, "SELECT state, count(*) FROM jobs GROUP BY state") == [("done", kept), ("queued", 10 + lost)]
    assert _rows(new, "PRAGMA integrity_check") == [("ok",)]
    r = hwl("campaign", "export", "--store", new, "--out", tmp_path / "x.parquet")
    assert r.returncode == 0, r.stderr
    assert f"wrote {kept} accepted latencies of 1 device" in r.stderr


def test_a_store_cut_short_is_named_damaged_not_a_foreign_file(tmp_path, capsys):
    """A copy of a store cut short (an interrupted scp, a full disk) reads as nothing at all to SQLite, and every
    command called it 'not an hwl store' and said to give a new file name: the user's store, gone in their eyes.
    Its header still says it is one, so the line says it is damaged and where to go on from."""
    db, _ = _damaged_store(tmp_path, results=20)
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    damaged = (f"{db} is an hwl store damaged where SQLite starts reading it (database disk image is malformed; a "
               "copy cut short, say), so no command can read it, `hwl store recover` included; go on from your last "
               "`hwl store backup`")
    from harness.cli import main as hwl_main

    (tmp_path / "pi.csv").write_text("arch_index,device,latency_ms\n1,pi,2.5\n")
    for command in (["store", "check", db], ["store", "recover", db, tmp_path / "new.db"],
                    ["campaign", "status", "--store", db],
                    ["data", "import", "--store", db, tmp_path / "pi.csv"]):
        capsys.readouterr()
        assert hwl_main(list(map(str, command))) == 2
        assert capsys.readouterr().err == f"hwl {command[0]}: error: {damaged}\n"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest and not (tmp_path / "new.db").exists()
    (tmp_path / "other.db").write_bytes(b"SQLite format 3\0" + bytes(84) + db.read_bytes()[100:])
    capsys.readouterr()
    assert hwl_main(["store", "check", str(tmp_path / "other.db")]) == 2  # no hwl header: no word of damage
    assert "is not an hwl store" in capsys.readouterr().err
