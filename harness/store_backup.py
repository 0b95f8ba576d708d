"""A store's backup and check: ``hwl store backup`` and ``hwl store check``.

A campaign writes its store for weeks, and the newest commits live in ``lab.db-wal`` until SQLite
checkpoints them into ``lab.db``: a copy of ``lab.db`` alone lacks them, and one taken during a
checkpoint can be torn. SQLite's online backup API copies the store as of one moment while the
coordinator goes on writing (it reads as any reader does, through the WAL).
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import NamedTuple

from harness.errors import StoreError
from harness.paths import check_writable_folder, written_whole
from harness.store import Store, require_store_file
from harness.text import count


class StoreCounts(NamedTuple):
    """What a store holds, in the rows a user knows."""

    campaigns: int
    jobs: int
    jobs_done: int
    results: int
    latencies: int  # accepted results with a label
    imported: int

    def line(self) -> str:
        return (f"{count(self.campaigns, 'campaign', 'campaigns')}, {count(self.jobs, 'job', 'jobs')} "
                f"({self.jobs_done:,} done), {count(self.results, 'result', 'results')} "
                f"({count(self.latencies, 'accepted latency', 'accepted latencies')}), "
                f"{count(self.imported, 'imported latency', 'imported latencies')}")


def store_counts(db: sqlite3.Connection) -> StoreCounts:
    """The counts of :class:`StoreCounts`, read in one statement (one moment of a live store)."""
    return StoreCounts(*db.execute(
        "SELECT (SELECT count(*) FROM campaigns), (SELECT count(*) FROM jobs), "
        "(SELECT count(*) FROM jobs WHERE state = 'done'), (SELECT count(*) FROM results), "
        "(SELECT count(*) FROM results WHERE accepted = 1 AND label_ms IS NOT NULL), "
        "(SELECT count(*) FROM imported)").fetchone())


def backup_store(source, dest, *, overwrite: bool = False) -> tuple[Path, StoreCounts]:
    """Copy the store ``source`` to ``dest`` as of one moment, also while a campaign writes it; the copy is
    checked (integrity, and the same counts as the store at that moment) before it takes ``dest``'s name,
    so ``dest`` is a whole, sound store or is not there. Returns ``dest`` and what it holds.

    Raises
    ------
    StoreError
        ``dest`` exists (and not ``overwrite``), is the store itself, or the copy failed its check.
    """
    source, dest = require_store_file(source), Path(dest).expanduser()
    _check_backup_target(source, dest, overwrite=overwrite)
    with Store(source, readonly=True) as st, st.snapshot():  # counts and copy: one moment
        held = store_counts(st.db)
        with written_whole(dest) as partial:
            copy = sqlite3.connect(partial)
            try:
                st.db.backup(copy)  # one step: the whole snapshot, whatever the coordinator commits meanwhile
                # one self-contained file: no -wal beside it to lose, readable from read-only media
                copy.execute("PRAGMA journal_mode=DELETE")
                _check_copy(copy, held, dest)
            finally:
                copy.close()
    return dest, held


def _check_backup_target(source: Path, dest: Path, *, overwrite: bool) -> None:
    if dest.is_dir():
        raise StoreError(f"{dest} is a directory; give the backup's file name")
    if dest.exists() and os.path.samefile(dest, source):
        raise StoreError(f"{dest} is the store itself; give the backup another file name")
    if dest.exists() and not overwrite:
        raise StoreError(f"{dest} exists; give another file name, or --force to replace it")
    check_writable_folder(dest.parent, what=str(dest))


def _check_copy(copy: sqlite3.Connection, held: StoreCounts, dest: Path) -> None:
    verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
    if verdict != "ok":
        raise StoreError(f"the copy for {dest} failed SQLite's integrity check ({verdict}); nothing was written")
    copied = store_counts(copy)
    if copied != held:
        raise StoreError(f"the copy for {dest} holds {copied.line()}, not the store's {held.line()}; nothing was "
                         "written")
