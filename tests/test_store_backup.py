"""`hwl store backup`: a consistent copy of a store that another process is writing, as a campaign does."""
import contextlib
import resource
import shutil
import sqlite3
import subprocess
import sys

import pytest

from harness.errors import StoreError
from harness.store import Store
from harness.store_backup import backup_store
from tests.campaign_helpers import HWL, REPO


@contextlib.contextmanager
def _writer(db, before: int, after: int, *, on: bool = False):
    """A process storing results into ``db`` (tests/store_writer.py), open while the block runs."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.store_writer", str(db), str(before), str(after),
                             *(["--on"] if on else [])], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == f"stored {before + after}"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _hwl(capsys, *args) -> subprocess.CompletedProcess:
    """`hwl ARGS` run in this process (harness.cli.main), its exit status and output as a process's: a fresh
    interpreter costs a second of imports, and these commands' refusals and counts are the same in either."""
    from harness.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _results(path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT count(*) FROM results").fetchone()[0]


def test_a_copy_of_the_store_file_misses_committed_results_that_the_backup_holds(tmp_path, capsys):
    db = tmp_path / "lab.db"
    with _writer(db, 5, 7):  # 7 committed results are in lab.db-wal alone, as a campaign's newest are
        shutil.copy(db, tmp_path / "naive.db")
        r = _hwl(capsys, "store", "backup", db, tmp_path / "backup.db")
    assert _results(tmp_path / "naive.db") == 5
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(f"backed up {db} to {tmp_path / 'backup.db'} (")
    assert "integrity ok): 1 campaign, 20,000 jobs (12 done), 12 results (12 accepted latencies), 0 imported" \
        in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("backup")) == ["backup.db"]  # no -wal
    with Store(tmp_path / "backup.db", readonly=True) as copy:
        assert len(copy.latency_table("nb201")) == 12 and copy.integrity_check() == "ok"


def test_backups_taken_while_a_writer_stores_results_are_whole_and_grow(tmp_path):
    db = tmp_path / "lab.db"
    held = []
    with _writer(db, 0, 1, on=True):
        for i in range(3):
            dest, counts = backup_store(db, tmp_path / f"b{i}.db")  # raises unless its counts match the moment's
            assert counts.results == counts.jobs_done == counts.latencies == _results(dest)
            held.append(counts.results)
    assert held == sorted(held) and held[-1] > held[0]
    assert _results(db) >= held[-1]


def test_an_existing_backup_is_replaced_only_with_force(tmp_path, monkeypatch, capsys):
    db, dest = tmp_path / "lab.db", tmp_path / "backup.db"
    with _writer(db, 2, 0):
        pass
    dest.write_text("last week's backup")
    r = _hwl(capsys, "store", "backup", db, dest)
    assert r.returncode == 2
    assert r.stderr.strip() == f"hwl store: error: {dest} exists; give another file name, or --force to replace it"
    assert dest.read_text() == "last week's backup"
    r = _hwl(capsys, "store", "backup", db, db)
    assert r.returncode == 2 and "is the store itself" in r.stderr
    monkeypatch.chdir(tmp_path)
    r = _hwl(capsys, "store", "backup", db, "-")
    assert r.returncode == 2 and not (tmp_path / "-").exists(), r.stderr  # a file named '-' was written
    assert r.stderr.strip() == "hwl store: error: the copy is a store file, not a stream: give its file name, not '-'"
    r = _hwl(capsys, "store", "backup", db, dest, "--force")
    assert r.returncode == 0, r.stderr
    assert _results(dest) == 2


def test_a_backup_its_disk_cannot_hold_is_one_line_and_leaves_no_file(tmp_path):
    """A USB stick that fills, a FAT32 disk's 4 GiB, ``ulimit -f``: here a file-size limit below the store's size."""
    db, dest = tmp_path / "lab.db", tmp_path / "backup.db"
    with _writer(db, 30, 0):
        pass
    limit = db.stat().st_size // 2
    r = subprocess.run([*HWL, "store", "backup", str(db), str(dest)], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"hwl store: error: writing {dest} failed (disk I/O error): backup.db takes "
                               f"{db.stat().st_size:,} bytes, reaching this process's file-size limit of {limit:,} "
                               "bytes (ulimit -f)"), r.stderr
    assert not [p.name for p in tmp_path.iterdir() if "backup" in p.name]  # nor a partial one


def test_recover_names_the_recovered_store_where_it_refuses_its_name(tmp_path, capsys):
    """`hwl store recover lab.db lab.db` said "give the backup another file name": the user made no backup."""
    db = tmp_path / "lab.db"
    with _writer(db, 2, 0):
        pass
    for dest, why in ((db, "is the store itself; give the recovered store another file name"),
                      (tmp_path, "is a directory; give the recovered store's file name")):
        r = _hwl(capsys, "store", "recover", db, dest)
        assert r.returncode == 2 and r.stderr.strip() == f"hwl store: error: {dest} {why}", r.stderr
    assert _results(db) == 2


def test_a_file_that_is_no_store_is_named_without_asking_a_reading_command_for_a_new_file(tmp_path, capsys):
    # `hwl store check notes.db` and `backup` said 'give a new file name or an existing store': a new file name
    # is what they refuse as missing; a command that makes the store may be given one
    from harness.cli import main as hwl_main

    notes = tmp_path / "notes.db"
    notes.write_text("my notes\n" * 100)
    for argv in (["store", "check", str(notes)], ["store", "backup", str(notes), str(tmp_path / "b.db")],
                 ["campaign", "status", "--store", str(notes)]):
        assert hwl_main(argv) == 2
        err = capsys.readouterr().err
        assert err.endswith(f": error: {notes} is not an hwl store (file is not a database); give an existing "
                            "store\n"), err
    with pytest.raises(StoreError, match=r"not a database\); give a new file name or an existing store$"):
        Store(notes)  # as `hwl campaign run` opens it: there a new file is a new store
    assert notes.read_text() == "my notes\n" * 100 and sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_an_output_named_as_the_store_s_wal_is_refused_and_its_commits_kept(tmp_path, capsys):
    """`--out lab.db-wal` (a completion one character too far) replaced a running store's WAL with the export: the
    commits in it were lost once the writer was killed; a backup so named was deleted by SQLite as it closed."""
    db = tmp_path / "lab.db"
    with _writer(db, 5, 7):  # the 7 newest commits are in lab.db-wal alone, as a campaign's are
        backup = _hwl(capsys, "store", "backup", db, f"{db}-wal", "--force")
        export = _hwl(capsys, "campaign", "export", "--store", db, "--out", f"{db}-wal", "--format", "parquet")
    # the writer exits without closing the store, as a killed coordinator does
    what = f"{db}-wal is SQLite's wal file of the database {db} (an hwl store?), which SQLite deems its own"
    assert backup.returncode == 2 and backup.stderr == f"hwl store: error: {what}; give the backup another file name\n"
    assert export.returncode == 2
    assert export.stderr == f"hwl campaign: error: {what}: give the output another file name\n"
    assert _results(db) == 12


def test_a_backup_s_resume_line_carries_the_flags_of_the_campaign_s_last_run(tmp_path, capsys):
    """A backup kept none of the flags its campaigns last ran with: its status line, pasted to go on from the backup,
    exported every model again into a new folder beside it and ran canaries at another rate."""
    from harness.campaign_lock import campaign_lock

    db, flags = tmp_path / "lab.db", ["--artifacts", str(tmp_path / "models"), "--canary-every", "3"]
    with Store(db) as st:
        cid = st.create_campaign(name="c1", space="nb201", measurement="quick", arch_spec="5", seed=0, order_seed=0,
                                 config={}, devices={"d1": "{}"}, jobs=[("d1", "5", 0)])
    with campaign_lock(db, cid, "c1", resume_flags=flags):
        pass  # as its run left it
    for command in ("backup", "recover"):
        copy = tmp_path / f"{command}.db"
        assert _hwl(capsys, "store", command, db, copy).returncode == 0
        status = _hwl(capsys, "campaign", "status", "--store", copy)
        assert f"go on with: hwl campaign resume --store {copy} --name c1 {' '.join(flags)}" in status.stdout
