"""A store's backup, check and recovery: ``hwl store backup``, ``check`` and ``recover``.

A campaign writes its store for weeks, and the newest commits live in ``lab.db-wal`` until SQLite
checkpoints them into ``lab.db``: a copy of ``lab.db`` alone lacks them, and one taken during a
checkpoint can be torn. SQLite's online backup API copies the store as of one moment while the
coordinator goes on writing (it reads as any reader does, through the WAL). A store damaged on disk (a bad sector,
a torn copy) is named as such by every command (:func:`damaged_store_line`), and :func:`recover_store` copies the
rows that can still be read into a new store.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import NamedTuple

from harness.campaign_lock import copy_run_flags
from harness.errors import StorageFull, StoreError
from harness.paths import check_writable_folder, sqlite_companion, written_whole
from harness.store import Store, is_sqlite_full, is_sqlite_io_error, require_store_file, why_writes_fail
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
        pages, page_size = (st.db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        with _new_store_file(dest, needed=pages * page_size) as copy:
            st.db.backup(copy)  # one step: the whole snapshot, whatever the coordinator commits meanwhile
            _check_copy(copy, held, dest)
    copy_run_flags(source, dest)
    return dest, held


@contextlib.contextmanager
def _new_store_file(dest: Path, *, needed: int = 0):
    """A connection to a new SQLite file that takes ``dest``'s name, as one self-contained file (no -wal beside it
    to lose; readable from read-only media), when the block ends without an error. A write its disk refuses
    (full, a file-size limit) is one line naming ``dest``."""
    with written_whole(dest) as partial:
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            yield copy
            copy.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError as exc:
            if not (is_sqlite_full(exc) or is_sqlite_io_error(exc)):
                raise
            why = why_writes_fail(partial, shown_as=dest.name, needed=needed)
            raise StorageFull(f"writing {dest} failed ({exc}): {why}; nothing was written there") from None
        finally:
            copy.close()


def _check_backup_target(source: Path, dest: Path, *, overwrite: bool, what: str = "backup") -> None:
    """``what``: the copy's name in the refusals (`hwl store recover lab.db lab.db` was told to name "the backup")."""
    if str(dest) == "-":  # a file named '-' was written, where the user meant the standard output
        raise StoreError("the copy is a store file, not a stream: give its file name, not '-'")
    if dest.is_dir():
        raise StoreError(f"{dest} is a directory; give the {what}'s file name")
    if dest.exists() and os.path.samefile(dest, source):
        raise StoreError(f"{dest} is the store itself; give the {what} another file name")
    if (companion := sqlite_companion(dest)) is not None:  # even with --force: SQLite removes it as it closes the store
        raise StoreError(f"{companion}; give the {what} another file name")
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


def damaged_store_line(exc: BaseException, store) -> str | None:
    """The line a command says when ``exc`` (or what caused it) is SQLite finding the store damaged; else None.
    SQLite's own "database disk image is malformed" names neither the file nor what to do."""
    damage = _sqlite_damage(exc)
    if damage is None:
        return None
    name = store or "FILE"
    return (f"{f'the store {store}' if store else 'an SQLite file this command reads'} is damaged (SQLite: {damage}); "
            f"`hwl store check {name}` says how, and `hwl store recover {name} NEW.db` copies what can still be read "
            "into a new store (or go on from your last `hwl store backup`)")


def _sqlite_damage(exc: BaseException | None) -> sqlite3.DatabaseError | None:
    seen = 0
    while exc is not None and seen < 10:  # pandas wraps SQLite's error in its own
        name = str(getattr(exc, "sqlite_errorname", ""))
        if isinstance(exc, sqlite3.DatabaseError) and name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def check_store(path) -> tuple[list[str], StoreCounts | None]:
    """SQLite's integrity check of the store ``path`` (["ok"] when sound, else up to 20 problems) and its
    counts (None where a damaged page keeps them from being read)."""
    with Store(require_store_file(path), readonly=True) as st:
        try:
            problems = [row[0] for row in st.db.execute("PRAGMA integrity_check(20)")]
        except sqlite3.DatabaseError as exc:  # damage where the check starts (the schema's pages)
            return [str(exc)], None
        try:
            return problems, store_counts(st.db)
        except sqlite3.DatabaseError:
            return problems, None


class Recovered(NamedTuple):
    """What :func:`recover_store` copied."""

    counts: StoreCounts
    damaged_stretches: int  # runs of rows skipped, their pages unreadable
    orphans: int  # rows whose parent row (a result's job, say) was on a damaged page
    requeued: int  # jobs done whose accepted result was on a damaged page: queued again, for a resume to measure


def recover_store(source, dest, *, overwrite: bool = False) -> Recovered:
    """Copy every row of the damaged store ``source`` that can still be read into a new store ``dest``: each table
    is read in rowid order, and a stretch on a damaged page is stepped over (its rows are lost). Indexes are built
    anew. ``dest`` is checked as a backup is before it takes its name."""
    source, dest = require_store_file(source), Path(dest).expanduser()
    _check_backup_target(source, dest, overwrite=overwrite, what="recovered store")
    with Store(source, readonly=True) as st, _new_store_file(dest) as copy:
        _copy_schema(st.db, copy)
        copy.execute("BEGIN")
        stretches = sum(_copy_readable_rows(st.db, copy, table) for table in _tables(st.db))
        requeued = _requeue_jobs_without_answer(copy)
        copy.execute("COMMIT")
        orphans = len(copy.execute("PRAGMA foreign_key_check").fetchall())
        counts = store_counts(copy)
        _check_copy(copy, counts, dest)
    copy_run_flags(source, dest)
    return Recovered(counts, stretches, orphans, requeued)


def _requeue_jobs_without_answer(db: sqlite3.Connection) -> int:
    """Queue again the jobs marked done whose accepted result was lost, so that ``hwl campaign resume`` measures
    them (their lost attempts left no result, so none is charged); returns how many."""
    return db.execute("UPDATE jobs SET state = 'queued' WHERE state = 'done' AND NOT EXISTS (SELECT 1 FROM results r "
                      "WHERE r.job_id = jobs.id AND r.accepted = 1)").rowcount


def _tables(db: sqlite3.Connection) -> list[str]:
    return [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                           "'sqlite_%' ORDER BY rowid")]


def _copy_schema(src: sqlite3.Connection, dst: sqlite3.Connection) -> None:
    """The source's tables and indexes, and the pragmas that make a file an hwl store of its schema version."""
    for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                              "ORDER BY type = 'index', rowid").fetchall():
        dst.execute(sql)
    for pragma in ("user_version", "application_id"):
        dst.execute(f"PRAGMA {pragma} = {int(src.execute(f'PRAGMA {pragma}').fetchone()[0])}")


def _copy_readable_rows(src: sqlite3.Connection, dst: sqlite3.Connection, table: str) -> int:
    """Copy ``table``'s readable rows; returns how many damaged stretches were stepped over. Rows are read a page at
    a time; a page that fails is read again row by row up to the damaged one (a cursor that fails mid-way has read
    a row ahead, which it never hands over)."""
    columns = [row[1] for row in src.execute(f'PRAGMA table_info("{table}")')]
    insert = f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({", ".join("?" * len(columns))})'
    start, stretches, page = -2**63, 0, ROWS_PER_READ
    while start is not None:
        rows = _rows_from(src, table, start, page)
        if rows is None and page > 1:
            page = 1
        elif rows is None:  # the row at ``start`` is on a damaged page
            start, stretches, page = _first_readable(src, table, start), stretches + 1, ROWS_PER_READ
        elif not rows:
            return stretches
        else:
            dst.executemany(insert, [row[1:] for row in rows])
            start = rows[-1][0] + 1
    return stretches


ROWS_PER_READ = 1000


def _rows_from(src: sqlite3.Connection, table: str, start: int, limit: int) -> list | None:
    """(rowid, *columns) of up to ``limit`` rows of ``table`` from rowid ``start`` on; None when a page they are
    on is damaged."""
    try:
        return src.execute(f'SELECT rowid, * FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT ?',
                           (start, limit)).fetchall()
    except sqlite3.DatabaseError:
        return None


def _first_readable(src: sqlite3.Connection, table: str, bad: int) -> int | None:
    """The smallest rowid above ``bad`` (where reading fails) from which ``table`` reads again; None when no
    later row can be read. Steps doubling in size find a readable start, then halving ones the first."""
    def readable(start: int) -> bool:
        return _rows_from(src, table, start, 1) is not None

    step, good = 1, None
    while bad + step < 2**63:
        if readable(bad + step):
            good = bad + step
            break
        bad, step = bad + step, step * 2
    if good is None:
        return None
    while good - bad > 1:  # bad fails, good reads: halve the gap
        middle = (bad + good) // 2
        bad, good = (bad, middle) if readable(middle) else (middle, good)
    return good
