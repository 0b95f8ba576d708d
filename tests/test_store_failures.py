"""A store whose writes start failing under a running process: a file-size limit (``ulimit -f``; FAT32's 4 GiB).
(A full disk: test_store.py and test_campaign_ray.py, on a real tmpfs.)"""
import contextlib
import resource
import sqlite3
import subprocess
import sys

from tests.campaign_helpers import HWL, REPO

LIMIT = 400_000  # bytes: the writer's WAL passes it within a few dozen results


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
    assert line == (f"StorageFull: writing the store {db} failed (disk I/O error): lab.db-wal is "
                    f"{(tmp_path / 'lab.db-wal').stat().st_size:,} bytes, at this process's file-size limit of "
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
                               "lab.db-wal is ") and len(r.stderr.splitlines()) == 1
    assert "file-size limit of 400,000 bytes (ulimit -f)" in r.stderr
