"""The result store: one SQLite file (WAL) per lab, the single source of truth of campaigns.

It holds campaigns, their devices and jobs, every attempt, every result (raw samples zlib-
compressed, statistics as columns, flags), environment fingerprints, artifacts, drift canaries
and rows imported from public tables (marked with their source). Every job state change is
committed before the method returns, so a coordinator killed at any moment leaves a store from
which a new one re-derives its queue (:meth:`Store.recover_interrupted`).

Several processes may write one store at once: the coordinators of its campaigns (one each), ``hwl data
import``, ``hwl onboard``. A write that checks the store before it changes it holds one write transaction
around both (:meth:`Store.transaction`, which nests), so two processes never both pass the same check.
Readers (``hwl campaign status``, the predictors' :meth:`Store.latency_table`) may open the file read-only
while a campaign is writing; one that must see one moment across several reads (an export and its counts)
reads inside :meth:`Store.snapshot`.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import resource
import shutil
import sqlite3
import subprocess
import time
import zlib
from pathlib import Path
from typing import Iterable, NamedTuple

import pandas as pd

from agents.protocol import MEASURED_OUTCOMES
from harness import __version__
from harness.errors import StorageFull, StoreError, StoreGone, StoreVersionError
from harness.paths import make_folder, why_not_made
from harness.profiles import profile_from_dict
from harness.store_schema import APPLICATION_ID, JOB_STATES, MIGRATIONS, SCHEMA_VERSION, STAT_COLUMNS

log = logging.getLogger(__name__)

RAW_RESULT_COLUMNS = ("samples_ns", "record_json")  # not in results_frame (see there)
# the coordinator's flag on results measured while the device's speed moved (a drift canary was off its baseline)
DRIFT_FLAG = "canary_drift"


def drift_flagged(flags: pd.Series) -> pd.Series:
    """Which results' ``flags`` (comma-joined, maybe missing) carry :data:`DRIFT_FLAG`."""
    return flags.fillna("").astype(str).map(lambda joined: DRIFT_FLAG in joined.split(",")).astype(bool)


def drop_superseded_drift(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (``device``, ``arch``, boolean ``drifted``) without the drifted latencies of an arch that also has a
    clean one on its device: it was measured again after the drift, and the median of a moved speed and the
    device's own is neither (`hwl onboard` fits the clean one alone). An arch measured only while the device
    drifted keeps its latencies, read as measured."""
    drifted = rows["drifted"].to_numpy(bool)
    if not drifted.any() or drifted.all():
        return rows
    keys = pd.MultiIndex.from_frame(rows[["device", "arch"]])
    measured_cleanly = keys.isin(keys[~drifted])
    return rows[~(drifted & measured_cleanly)]


def without_superseded_drift(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (``device``, ``arch``, comma-joined ``flags``) less the drifted latencies that
    :func:`drop_superseded_drift` leaves out: for readers of results (exports and their readers), where
    :meth:`Store.latency_labels` reads the store."""
    kept = drop_superseded_drift(rows.assign(drifted=drift_flagged(rows["flags"]).to_numpy(bool)))
    return kept.drop(columns="drifted")


def drifted_counts(labels: pd.DataFrame) -> dict[str, int]:
    """device -> how many of :meth:`Store.latency_labels`' ``labels`` are drifted."""
    counts = labels.loc[labels["drifted"], "device"].value_counts()
    return {device: int(counts[device]) for device in sorted(counts.index)}


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``hwl <version>`` plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"hwl {__version__}" + (f"+g{sha}" if sha else "")


def encode_samples(samples_ns: Iterable[Iterable[int]]) -> bytes:
    """Raw samples (one sequence per repeat, ns per inference) as zlib-compressed JSON."""
    return zlib.compress(json.dumps([[float(s) for s in rep] for rep in samples_ns]).encode(), 6)


def decode_samples(blob: bytes | None) -> list[list[float]]:
    return [] if blob is None else json.loads(zlib.decompress(blob))


class CanaryState(NamedTuple):
    """A device's drift-canary state after its latest canary (``Store.canary_state``)."""

    baseline_ms: float  # in force after that canary (its own label when it drifted)
    last_result_id: int  # the last result that canary vouches for
    ok: bool  # within tolerance (False: its label only stands in until a re-baseline)
    measured_at: float  # wall clock


def require_store_file(path) -> Path:
    """``path`` as a Path; StoreError saying why when it is no file (missing, or a folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise StoreError(f"store {path} is a directory, not a store file")
    if not path.is_file():
        raise StoreError(f"store {path} does not exist")
    return path


# How long a write waits for another process's write transaction (a data import of millions of rows
# holds it for tens of seconds) before it gives up with StoreBusy.
BUSY_TIMEOUT_S = 120.0


# A table given as --store (`hwl adapt --store my_pi.parquet`, for --measurements) was told to give "a new file name"
_TABLE_ENDINGS = (".parquet", ".csv", ".csv.gz")


def _instead_of_a_store(path: Path, *, readonly: bool) -> str:
    """What to give instead of ``path``, a file that is no store. A command that only reads one (`hwl store check`,
    `status`) was told to give 'a new file name' too, which it refuses as missing."""
    if path.name.lower().endswith(_TABLE_ENDINGS):
        return ("by its name it is a latency table: give it by a predictor command's table flag (adapt "
                "--measurements, train --table, evaluate --test-table, search --latency-table), or store it with "
                "hwl data import")
    return "give an existing store" if readonly else "give a new file name or an existing store"


class StoreBusy(StoreError):
    """Another process held the store's write lock for longer than ``BUSY_TIMEOUT_S``."""


def _cannot_write(path: Path, exc: OSError) -> StoreError:
    return StoreError(f"cannot open store {path} for writing ({why_not_made(path.parent, exc)}); give a path in a "
                      "folder you can write to")


def check_new_store_folder(path) -> None:
    """Refuse, as ``Store(path)`` would, a new store whose folder cannot be made, before the store file is made (its
    folder is made here): a command that checks its other paths after this leaves no empty store file behind when
    one of them is refused."""
    path = Path(path).expanduser()
    if path.exists():
        return  # the store itself says what is wrong with it, when opened
    try:
        make_folder(path.parent)  # removed again if the command is refused after this
    except OSError as exc:
        raise _cannot_write(path, exc) from None


@contextlib.contextmanager
def _opening_lock(path: Path):
    """Hold an exclusive lock on opening ``path`` for writing: a flock on ``<store>-locks/open.lock`` (beside
    the campaigns' locks, ``campaign_lock``). Never on the store file itself: SQLite's locks on it are fcntl
    locks, and closing any descriptor of the file drops every fcntl lock the process holds on it. A store
    opened so lost its own shared lock, so the next process to close the store took itself for the last
    one and deleted the WAL file this one went on writing to (its commits reached no other reader, and would
    have died with it)."""
    if path.exists():
        require_store_file(path)  # a folder: said as such
    lock = path.expanduser().resolve()
    lock = lock.parent / f"{lock.name}-locks" / "open.lock"  # one lock however the store is named (a symlink)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a")
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # the kernel frees the lock with the file


class Store:
    """An hwl store file.

    Parameters
    ----------
    path : str or Path
        SQLite file; created when it does not exist (unless ``readonly``).
    readonly : bool
        Open with a read-only connection (safe while a campaign writes; never changes the file).

    Raises
    ------
    StoreError
        The file is not an hwl store (nothing in it is changed).
    StoreVersionError
        The store was written by a newer hwl.
    """

    def __init__(self, path, *, readonly: bool = False):
        self.path = Path(path).expanduser()  # --store=~/lab.db: no shell expands a tilde after '='
        self.readonly = readonly
        if readonly:
            require_store_file(self.path)  # a read-only store must exist
            # SQLite makes -wal and -shm beside a WAL store to read it, and a read-only connection cannot remove them
            self._remove_wal_files_on_close = os.access(self.path.parent, os.W_OK) and not any(
                f.exists() for f in _wal_files(self.path))
            self._check_is_store()
            self.db = sqlite3.connect(self._read_only_uri(), uri=True, isolation_level=None, check_same_thread=False)
            self._configure()
            self._migrate()
            return
        self._check_is_store()  # before the lock: a file refused here is left with nothing beside it
        with _opening_lock(self.path):  # two processes opening a new store must not both create it
            self._check_is_store()  # again: another process may have made the file meanwhile
            try:
                self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")  # the first write: the file is opened here
            except (OSError, sqlite3.OperationalError) as exc:
                raise StoreError(f"cannot open store {self.path} for writing ({exc}); give a path in a folder "
                                 "you can write to") from None
            # NORMAL in WAL mode: a commit survives a killed process (not a power cut), and costs
            # no fsync per job.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._configure()
            self._migrate()
        self._file_id = _file_id(self.path)  # to notice the file being removed under a long run

    def _configure(self) -> None:
        self.db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        self.db.execute("PRAGMA foreign_keys=ON")

    # -- opening ---------------------------------------------------------------------------
    def _check_is_store(self) -> None:
        """Refuse a file that is not an empty file, a fresh SQLite file or an hwl store."""
        if not self.path.exists():
            return
        require_store_file(self.path)  # a folder is refused here
        if self.path.stat().st_size == 0:
            return
        try:
            probe = sqlite3.connect(self._read_only_uri(), uri=True, isolation_level=None)
            try:
                # one read transaction, so one snapshot: read one by one, a store another process was creating
                # showed its tables and schema version (committed between the reads) beside application_id 0, and
                # was refused as another program's SQLite file
                probe.execute("BEGIN")
                app_id = probe.execute("PRAGMA application_id").fetchone()[0]
                version = probe.execute("PRAGMA user_version").fetchone()[0]
                n_tables = probe.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            finally:
                probe.close()
        except sqlite3.OperationalError as exc:  # the file is a database, but cannot be read now
            hint = (f": SQLite keeps {self.path.name}-shm and -wal beside a store, so its folder must be writable "
                    "even to read it; copy the store to a writable folder" if "unable to open" in str(exc) else "")
            raise StoreError(f"cannot open store {self.path} ({exc}){hint}") from None
        except sqlite3.DatabaseError as exc:
            if _header_application_id(self.path) == APPLICATION_ID:  # ours, but SQLite reads none of it
                raise StoreError(f"{self.path} is an hwl store damaged where SQLite starts reading it ({exc}; a copy "
                                 "cut short, say), so no command can read it, `hwl store recover` included; go on "
                                 "from your last `hwl store backup`") from None
            raise StoreError(f"{self.path} is not an hwl store ({exc}); "
                             f"{_instead_of_a_store(self.path, readonly=self.readonly)}") from None
        if app_id != APPLICATION_ID and (n_tables or version):
            raise StoreError(f"{self.path} is an SQLite file but not an hwl store (application_id "
                             f"{app_id:#x}); {_instead_of_a_store(self.path, readonly=self.readonly)}")
        if version > SCHEMA_VERSION:
            raise StoreVersionError(f"store {self.path} has schema version {version} but this hwl "
                                    f"({__version__}) knows only up to {SCHEMA_VERSION}: upgrade hwl "
                                    "(`git pull` in its checkout) to open it")

    def _read_only_uri(self) -> str:
        """The URI that reads the store without writing. In a folder that cannot be written (an archive on
        read-only media) SQLite cannot make the -shm file WAL mode reads through, so the file is read as
        immutable: nothing can be writing it there. Refused when a -wal file holds writes not yet in it."""
        if os.access(self.path.parent, os.W_OK):
            return f"file:{self.path}?mode=ro"
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(f"cannot read store {self.path}: its folder cannot be written and {wal.name} beside it "
                             "holds its last writes, which SQLite applies only in a writable folder; copy the store "
                             "and its -wal file to a writable folder")
        return f"file:{self.path}?mode=ro&immutable=1"

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if self.readonly and version == 0:  # made, then the process that made it was killed
            raise StoreError(f"store {self.path} is empty: nothing was ever stored in it")
        if self.readonly:
            raise StoreError(f"store {self.path} is at schema version {version}; open it once "
                             f"read-write with this hwl to upgrade it to {SCHEMA_VERSION}")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                MIGRATIONS[target](self.db)
                self.db.execute(f"PRAGMA user_version = {target}")
                self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            log.info("store %s migrated to schema version %d", self.path, target)

    def transaction(self):
        """Context manager: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error). Inside another one it is a savepoint
        of it, so a command can hold the write lock over a check and the writes it allows (another process
        writing in between would make the check stale)."""
        return _Transaction(self.db, self.path)

    @contextlib.contextmanager
    def snapshot(self):
        """Every read inside sees the store as of one moment (a read transaction): an export's pages and the
        counts of its line agree while a campaign goes on storing results."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            if self.db.in_transaction:  # SQLite ends it itself on some errors (a damaged page): that error stands
                self.db.execute("COMMIT")  # ends the read: nothing was written

    def check_still_there(self) -> None:
        """Raise :class:`StoreGone` when the file at ``path`` is no longer the one open (removed, with
        its folder or not, or replaced): SQLite would go on writing to a file nobody can open again,
        and a campaign would end "done" with its results lost. What the open store holds is first
        written back to ``path`` (beside it, if another file is there now), so nothing is lost."""
        if self.readonly or _file_id(self.path) == self._file_id:
            return
        if self.path.exists():
            how, dest = "replaced", self.path.with_name(f"{self.path.stem}-saved-{time.strftime('%Y%m%d-%H%M%S')}"
                                                        f"{self.path.suffix}")
        else:
            how, dest = "removed", self.path
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy = sqlite3.connect(dest)
            try:
                self.db.backup(copy)
            finally:
                copy.close()
        except (OSError, sqlite3.Error) as exc:
            raise StoreGone(f"store {self.path} was {how} while this command ran, and writing back what it held "
                            f"to {dest} failed ({exc}): what was stored since it opened is lost") from None
        go_on = "run the same command again" if dest == self.path else f"give --store {dest}"
        raise StoreGone(f"store {self.path} was {how} while this command ran; what it held is written back to "
                        f"{dest}, and nothing stored was lost: {go_on} to go on")

    def close(self) -> None:
        self.db.close()
        if self.readonly and self._remove_wal_files_on_close:
            self._remove_wal_files_on_close = False
            _remove_wal_files(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def query(self, sql: str, params=()) -> pd.DataFrame:
        return pd.read_sql_query(sql, self.db, params=params)

    def integrity_check(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- campaigns -------------------------------------------------------------------------
    def campaign(self, name: str) -> sqlite3.Row | None:
        cur = self.db.execute("SELECT * FROM campaigns WHERE name = ?", (name,))
        cur.row_factory = sqlite3.Row
        return cur.fetchone()

    def campaign_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM campaigns ORDER BY id")]

    def create_campaign(self, *, name: str, space: str, measurement: str | None, arch_spec: str,
                        seed: int, order_seed: int, config: dict, devices: dict[str, str],
                        jobs: Iterable[tuple[str, str, int]]) -> int:
        """Insert a campaign with its devices (name -> profile JSON) and jobs (device, arch,
        position) in one transaction; returns the campaign id."""
        now = time.time()
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO campaigns (name, space, measurement, arch_spec, seed, order_seed, "
                "config_json, code_version, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (name, space, measurement, arch_spec, seed, order_seed, json.dumps(config, sort_keys=True),
                 code_version(), now))
            cid = cur.lastrowid
            self.db.executemany(
                "INSERT INTO campaign_devices (campaign_id, device, profile_json, updated_at) VALUES (?,?,?,?)",
                [(cid, d, pj, now) for d, pj in devices.items()])
            self.db.executemany(
                "INSERT INTO jobs (campaign_id, device, arch, position) VALUES (?,?,?,?)",
                ((cid, d, a, p) for d, a, p in jobs))
        return cid

    def devices(self, campaign_id: int) -> pd.DataFrame:
        """The campaign's devices (campaign_devices rows); ``error`` is None where the device has none."""
        dev = self.query("SELECT * FROM campaign_devices WHERE campaign_id = ? ORDER BY device", (campaign_id,))
        # pandas 3 reads a NULL beside another row's text as NaN, which is truthy and no str
        dev["error"] = dev["error"].astype(object).where(dev["error"].notna(), None)
        return dev

    def set_device_state(self, campaign_id: int, device: str, state: str, *, error: str | None = None,
                         consecutive_failures: int | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE campaign_devices SET state = ?, error = ?, consecutive_failures = "
                "COALESCE(?, consecutive_failures), updated_at = ? WHERE campaign_id = ? AND device = ?",
                (state, error, consecutive_failures, time.time(), campaign_id, device))

    def set_failures_in_row(self, campaign_id: int, device: str, failures: int) -> None:
        """Record a device's current run of failed attempts (0 after a success), so that status
        shows a device failing before it is quarantined."""
        with self.transaction():
            self.db.execute("UPDATE campaign_devices SET consecutive_failures = ?, updated_at = ? "
                            "WHERE campaign_id = ? AND device = ?", (failures, time.time(), campaign_id, device))

    def status(self, campaign_id: int) -> pd.DataFrame:
        """Jobs per device and state (columns: device, queued, running, done, failed), plus the
        device state, error and consecutive_failures (its current run of failed attempts)."""
        counts = self.query("SELECT device, state, count(*) AS n FROM jobs WHERE campaign_id = ? "
                            "GROUP BY device, state", (campaign_id,))
        table = counts.pivot_table(index="device", columns="state", values="n", fill_value=0)
        for col in JOB_STATES:
            if col not in table:
                table[col] = 0
        table = table[list(JOB_STATES)].astype(int)
        dev = self.devices(campaign_id).set_index("device")[["state", "error", "consecutive_failures"]]
        return dev.join(table, how="left").fillna(dict.fromkeys(JOB_STATES, 0)).reset_index()

    def last_sent(self, campaign_id: int) -> float | None:
        """When the newest attempt of the campaign still marked ``running`` was sent to its device (wall-clock
        seconds), None when none is: a coordinator running the campaign always has one."""
        (sent,) = self.db.execute("SELECT max(a.started_at) FROM attempts a JOIN jobs j ON a.job_id = j.id WHERE "
                                  "j.campaign_id = ? AND a.state = 'running'", (campaign_id,)).fetchone()
        return sent

    # -- jobs and attempts -----------------------------------------------------------------
    def recover_interrupted(self, campaign_id: int) -> int:
        """Attempts left ``running`` by a dead coordinator become ``lost``; their jobs go back to
        the queue (the next attempt gets a new number). Returns how many."""
        now = time.time()
        with self.transaction():
            rows = self.db.execute("SELECT id, attempts FROM jobs WHERE campaign_id = ? AND state = 'running'",
                                   (campaign_id,)).fetchall()
            self.db.executemany("UPDATE attempts SET state = 'lost', finished_at = ? WHERE job_id = ? AND "
                                "attempt = ? AND state = 'running'", [(now, j, a) for j, a in rows])
            self.db.executemany("UPDATE jobs SET state = 'queued', updated_at = ? WHERE id = ?",
                                [(now, j) for j, _ in rows])
        return len(rows)

    def queued_jobs(self, campaign_id: int, device: str) -> list[tuple[int, str, int]]:
        """(job id, arch, attempts so far) of a device's queued jobs, in the planned order."""
        return self.db.execute(
            "SELECT id, arch, attempts FROM jobs WHERE campaign_id = ? AND device = ? AND state = 'queued' "
            "ORDER BY position", (campaign_id, device)).fetchall()

    def start_attempt(self, job_id: int) -> int:
        """Mark a job running under a new attempt number; returns the number (1, 2, ...)."""
        now = time.time()
        with self.transaction():
            attempt = self.db.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                                      "updated_at = ? WHERE id = ? RETURNING attempts", (now, job_id)).fetchone()[0]
            self.db.execute("INSERT INTO attempts (job_id, attempt, state, started_at) VALUES (?,?,?,?)",
                            (job_id, attempt, "running", now))
        return attempt

    def finish_attempt(self, job_id: int, attempt: int, *, record: dict, job_state: str) -> int:
        """Store one attempt's record (idempotent on (job, attempt)) and move the job to
        ``job_state`` (``done``, ``failed`` or ``queued`` for a retry), in one transaction.

        With ``done`` this attempt's result becomes the job's answer (``accepted``). Returns
        this attempt's result id.
        """
        now = time.time()
        row = _result_row(job_id, attempt, record, now)
        outcome = row["outcome"]
        with self.transaction():
            cur = self.db.execute(
                f"INSERT OR IGNORE INTO results ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) "
                "RETURNING id", tuple(row.values()))
            inserted = cur.fetchone()  # None when this attempt's row was stored before
            result_id = inserted[0] if inserted else self.db.execute(
                "SELECT id FROM results WHERE job_id = ? AND attempt = ?", (job_id, attempt)).fetchone()[0]
            if job_state == "done":
                self.db.execute("UPDATE results SET accepted = (id = ?) WHERE job_id = ?", (result_id, job_id))
            self.db.execute("UPDATE attempts SET state = ?, outcome = ?, error = ?, finished_at = ? "
                            "WHERE job_id = ? AND attempt = ?",
                            (outcome if outcome in MEASURED_OUTCOMES else "failed", outcome,
                             record.get("error_message"),
                             now, job_id, attempt))
            self.db.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?", (job_state, now, job_id))
        return result_id

    def accept_result(self, job_id: int, result_id: int) -> None:
        """Make ``result_id`` the answer of its job (the others stay, not accepted)."""
        with self.transaction():
            self.db.execute("UPDATE results SET accepted = (id = ?) WHERE job_id = ?", (result_id, job_id))

    def job_results(self, job_id: int) -> list[tuple[int, int, str, float | None, float | None, str]]:
        """(result id, attempt, outcome, label_ms, iqr_over_median, flags) of every attempt of a job."""
        return self.db.execute("SELECT id, attempt, outcome, label_ms, iqr_over_median, flags FROM results "
                               "WHERE job_id = ? ORDER BY attempt", (job_id,)).fetchall()

    def charged_attempts(self, job_id: int, *, free_outcomes: tuple[str, ...], free_kinds: tuple[str, ...]) -> int:
        """How many of a job's recorded attempts count toward its attempt limit: those whose
        outcome is not one of ``free_outcomes`` and whose error kind is not one of ``free_kinds``."""
        outcomes, kinds = ",".join("?" * len(free_outcomes)), ",".join("?" * len(free_kinds))  # SQLite takes IN ()
        return self.db.execute(f"SELECT count(*) FROM results WHERE job_id = ? AND outcome NOT IN ({outcomes}) "
                               f"AND coalesce(error_kind, '') NOT IN ({kinds})",
                               (job_id, *free_outcomes, *free_kinds)).fetchone()[0]

    def others_since_first_failure(self, job_id: int, *, free_outcomes: tuple[str, ...],
                                   free_kinds: tuple[str, ...]) -> tuple[bool, bool]:
        """(whether the job's device measured another job of the campaign, or its drift canary, fine, whether
        another job failed there, lost attempts included) since this job's first failed attempt that counts
        (``charged_attempts``'s terms; failures of ``free_kinds`` are nobody's, so not counted either)."""
        outcomes, kinds = ",".join("?" * len(free_outcomes)), ",".join("?" * len(free_kinds))
        first = (f"(SELECT min(id) FROM results WHERE job_id = ? AND outcome NOT IN ('ok', 'unstable', {outcomes}) "
                 f"AND coalesce(error_kind, '') NOT IN ({kinds}))")
        row = self.db.execute(
            "SELECT max(r.outcome IN ('ok', 'unstable')), "
            f"max(r.outcome NOT IN ('ok', 'unstable') AND coalesce(r.error_kind, '') NOT IN ({kinds})) FROM results r "
            "JOIN jobs o ON o.id = r.job_id JOIN jobs j ON j.id = ? WHERE o.campaign_id = j.campaign_id "
            f"AND o.device = j.device AND o.id != j.id AND r.id > {first}",
            (*free_kinds, job_id, job_id, *free_outcomes, *free_kinds)).fetchone()
        canary_fine = self.db.execute(  # a canary's last_result_id is the newest result when it was measured
            "SELECT 1 FROM canaries c JOIN jobs j ON j.id = ? WHERE c.campaign_id = j.campaign_id AND c.device = "
            f"j.device AND c.median_ms IS NOT NULL AND c.last_result_id >= {first} LIMIT 1",
            (job_id, job_id, *free_outcomes, *free_kinds)).fetchone()
        return bool(row[0]) or canary_fine is not None, bool(row[1])

    def set_device_profile(self, campaign_id: int, device: str, profile_json: str) -> None:
        """Store the profile a campaign reaches ``device`` with (``campaign.refresh_reach``)."""
        with self.transaction():
            self.db.execute("UPDATE campaign_devices SET profile_json = ?, updated_at = ? WHERE campaign_id = ? "
                            "AND device = ?", (profile_json, time.time(), campaign_id, device))

    def requeue_device(self, campaign_id: int, device: str) -> None:
        """Clear a device's quarantine (``resume``): its queued jobs run again."""
        self.set_device_state(campaign_id, device, "active", error=None, consecutive_failures=0)

    # -- canaries, fingerprints, artifacts -------------------------------------------------
    def add_canary(self, campaign_id: int, device: str, *, after_jobs: int, median_ms: float | None,
                   baseline_ms: float | None, ok: bool, last_result_id: int | None) -> None:
        deviation = (None if median_ms is None or not baseline_ms else median_ms / baseline_ms - 1.0)
        with self.transaction():
            self.db.execute("INSERT INTO canaries (campaign_id, device, after_jobs, median_ms, baseline_ms, "
                            "deviation, ok, last_result_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                            (campaign_id, device, after_jobs, median_ms, baseline_ms, deviation, int(ok),
                             last_result_id, time.time()))
            in_force = median_ms if not ok and median_ms is not None else baseline_ms  # a drift re-baselines
            if in_force is not None:
                self.db.execute("UPDATE campaign_devices SET canary_baseline_ms = ? WHERE campaign_id = ? "
                                "AND device = ?", (in_force, campaign_id, device))

    def canary_state(self, campaign_id: int, device: str) -> CanaryState | None:
        """The device's latest canary that measured something, in this campaign or in another that
        ran the device with the same measurement settings (``DeviceProfile.identity``: the same
        device reached at another address counts); None before the first. A session's first
        canary is checked against its baseline, so drift across a restart or between campaigns is
        caught, not taken as the new normal."""
        (mine,) = self.db.execute("SELECT profile_json FROM campaign_devices WHERE campaign_id = ? AND device = ?",
                                  (campaign_id, device)).fetchone()
        mine_identity = profile_from_dict(json.loads(mine)).identity()
        same = {mine: True}  # profile_json -> same identity as mine
        rows = self.db.execute(
            "SELECT CASE WHEN c.ok THEN c.baseline_ms ELSE c.median_ms END, c.last_result_id, c.ok, c.created_at, "
            "d.profile_json FROM canaries c JOIN campaign_devices d ON d.campaign_id = c.campaign_id "
            "AND d.device = c.device WHERE c.device = ? AND c.median_ms IS NOT NULL ORDER BY c.id DESC", (device,))
        for baseline, last_result, ok, created, profile_json in rows:
            if profile_json not in same:
                same[profile_json] = profile_from_dict(json.loads(profile_json)).identity() == mine_identity
            if same[profile_json]:
                return CanaryState(float(baseline), int(last_result or 0), bool(ok), float(created))
        return None

    def ran_canary(self, campaign_id: int, device: str) -> bool:
        """Whether the campaign measured a drift canary on the device (failed ones included)."""
        return self.db.execute("SELECT 1 FROM canaries WHERE campaign_id = ? AND device = ? LIMIT 1",
                               (campaign_id, device)).fetchone() is not None

    def jobs_since_canary(self, campaign_id: int, device: str, after_result_id: int) -> int:
        """The device's jobs of the campaign with a latency stored after its last canary: after ``after_result_id``
        (the last result its latest canary vouched for) and after the last result of any canary of the campaign on
        the device, failed ones included (that end of a session checked them as it could)."""
        return self.db.execute(
            "SELECT count(DISTINCT r.job_id) FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.campaign_id = ? "
            "AND j.device = ? AND r.outcome IN ('ok', 'unstable') AND r.id > max(?, coalesce((SELECT "
            "max(last_result_id) FROM canaries WHERE campaign_id = ? AND device = ?), 0))",
            (campaign_id, device, after_result_id, campaign_id, device)).fetchone()[0]

    def flag_results_since(self, campaign_id: int, device: str, after_result_id: int, flag: str) -> tuple[int, int]:
        """Add ``flag`` to the device's results newer than ``after_result_id``; returns (results, jobs) flagged:
        a job re-measured (an ``unstable`` attempt, a retry) has more than one result."""
        where = ("WHERE id > ? AND instr(',' || flags || ',', ',' || ? || ',') = 0 AND job_id IN "
                 "(SELECT id FROM jobs WHERE campaign_id = ? AND device = ?)")
        args = (after_result_id, flag, campaign_id, device)
        with self.transaction():
            jobs = self.db.execute(f"SELECT count(DISTINCT job_id) FROM results {where}", args).fetchone()[0]
            cur = self.db.execute("UPDATE results SET flags = CASE WHEN flags = '' THEN ? ELSE flags || ',' || ? END "
                                  + where, (flag, flag, *args))
        return cur.rowcount, jobs

    def add_fingerprint(self, fingerprint_id: str, fingerprint: dict) -> None:
        with self.transaction():
            self.db.execute("INSERT OR IGNORE INTO fingerprints (id, json, created_at) VALUES (?,?,?)",
                            (fingerprint_id, json.dumps(fingerprint, sort_keys=True, default=str), time.time()))

    def add_artifact(self, *, sha256: str, space: str, arch: str, config: dict, path: str,
                     size_bytes: int | None) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO artifacts (sha256, space, arch, config_json, path, "
                            "size_bytes, created_at) VALUES (?,?,?,?,?,?,?)",
                            (sha256, space, arch, json.dumps(config, sort_keys=True), path, size_bytes,
                             time.time()))

    # -- tables for users ------------------------------------------------------------------
    def imported_sources(self, space: str, devices) -> pd.DataFrame:
        """Columns device, source, n: the files each of ``devices`` was imported from, with their rows, in
        import order."""
        devices = list(devices)
        return self.query(f"SELECT device, source, count(*) AS n FROM imported WHERE space = ? AND device IN "
                          f"({','.join('?' * len(devices))}) GROUP BY device, source ORDER BY min(rowid)",
                          (space, *devices))

    def add_imported(self, space: str, rows: Iterable[tuple[str, str, float]], source: str) -> tuple[int, int]:
        """Insert imported (arch, device, latency_ms) rows. Re-importing a source replaces its rows
        of the devices it holds (another file of the same name for other devices adds to them).
        Returns (rows inserted, earlier rows replaced)."""
        now = time.time()
        rows = list(rows)
        devices = sorted({d for _, d, _ in rows})
        with self.transaction():
            replaced = sum(self.db.execute("DELETE FROM imported WHERE space = ? AND source = ? AND device = ?",
                                           (space, source, d)).rowcount for d in devices)
            self.db.executemany("INSERT INTO imported (space, arch, device, latency_ms, source, imported_at) "
                                "VALUES (?,?,?,?,?,?)", ((space, a, d, float(v), source, now) for a, d, v in rows))
        return len(rows), replaced

    def latency_table(self, space: str) -> pd.DataFrame:
        """Latencies of one space: columns ``arch`` (NB201 int index or FBNet canonical key),
        ``device``, ``latency_ms`` (label: median of repeat medians of the accepted result) and
        ``source`` (``measured:<campaign>`` or ``imported:<file>``). A latency measured while the device
        drifted is left out where the arch was measured again cleanly (:func:`drop_superseded_drift`)."""
        return self.latency_labels(space).drop(columns="drifted")

    def latency_labels(self, space: str) -> pd.DataFrame:
        """:meth:`latency_table`'s rows with a boolean ``drifted`` column (taken while the device's speed moved: a
        drift canary flagged it, yet it stays accepted; False for imported rows), for a reader that also counts
        them (:func:`drifted_counts`) without reading the store twice."""
        df = self.query(
            "SELECT j.arch, j.device, r.label_ms AS latency_ms, 'measured:' || c.name AS source, "
            "instr(',' || coalesce(r.flags, '') || ',', ',' || ? || ',') > 0 AS drifted "
            "FROM results r JOIN jobs j ON r.job_id = j.id JOIN campaigns c ON j.campaign_id = c.id "
            "WHERE c.space = ? AND r.accepted = 1 AND r.label_ms IS NOT NULL "
            "UNION ALL SELECT arch, device, latency_ms, 'imported:' || source, 0 FROM imported WHERE space = ?",
            (DRIFT_FLAG, space, space))
        if space == "nb201":
            df["arch"] = df["arch"].astype("int64")
        df["drifted"] = df["drifted"].astype(bool)
        return drop_superseded_drift(df).reset_index(drop=True)

    def results_frame(self, campaign_id: int | None = None, *, after_id: int = 0,
                      limit: int | None = None, devices=None) -> pd.DataFrame:
        """One row per result (every attempt) with job, campaign and device columns, in ``id`` order.

        ``after_id`` and ``limit`` read one page (results with ``id > after_id``), so an export can
        stream a month-long campaign in bounded memory. The raw samples and the record JSON stay in
        the store (:data:`RAW_RESULT_COLUMNS`): they are about 90 % of a result's bytes (read one
        with :func:`decode_samples`). ``devices``: only these devices' results.
        """
        where, params = "WHERE r.id > ?", [after_id]
        if campaign_id is not None:
            where, params = where + " AND j.campaign_id = ?", params + [campaign_id]
        if devices:
            where, params = where + f" AND j.device IN ({','.join('?' * len(devices))})", params + list(devices)
        page = "" if limit is None else f"LIMIT {int(limit)}"
        return self.query(
            f"SELECT c.name AS campaign, c.space, j.arch, j.device, j.id AS job_id, "
            f"{', '.join('r.' + c for c in self.result_columns())} "
            "FROM results r JOIN jobs j ON r.job_id = j.id JOIN campaigns c ON j.campaign_id = c.id "
            f"{where} ORDER BY r.id {page}", tuple(params))

    def result_columns(self, *, with_types: bool = False):
        """The results table's columns that :meth:`results_frame` reads (names, or name -> SQL type)."""
        rows = [(row[1], row[2]) for row in self.db.execute("PRAGMA table_info(results)")
                if row[1] != "job_id" and row[1] not in RAW_RESULT_COLUMNS]
        return dict(rows) if with_types else [name for name, _ in rows]


def _result_row(job_id: int, attempt: int, record: dict, now: float) -> dict:
    """Column -> value of an attempt's ``results`` row: its statistics as columns, its raw samples compressed
    (with their counts), the rest of the record as JSON."""
    stats = record.get("stats") or {}
    samples = record.get("samples_ns")
    slim = {k: v for k, v in record.items() if k not in ("samples_ns", "fingerprint", "stats")}
    return {"job_id": job_id, "attempt": attempt, "outcome": record.get("outcome", "runtime_error"),
            "flags": ",".join(record.get("flags") or ()), **{c: stats.get(c) for c in STAT_COLUMNS},
            "block_size": record.get("block_size"),
            "n_repeats": len(samples) if samples else None,
            "n_samples": sum(len(r) for r in samples) if samples else None,
            "samples_ns": encode_samples(samples) if samples else None, "measure_s": record.get("measure_s"),
            "error_kind": record.get("error_kind"), "error_message": record.get("error_message"),
            "fingerprint_id": record.get("fingerprint_id"), "artifact_sha256": record.get("artifact_sha256"),
            "runtime_version": record.get("runtime_version"), "code_version": code_version(),
            "record_json": json.dumps(slim, default=str), "created_at": now}


def _header_application_id(path: Path) -> int | None:
    """The application id in an SQLite file's 100-byte header, read without SQLite, which reads nothing of a file
    whose schema pages are damaged or cut off; None for a file that is no SQLite file."""
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return None
    return int.from_bytes(header[68:72], "big")


def _wal_files(path: Path) -> tuple[Path, Path]:
    """The files SQLite keeps beside a store in WAL mode while a connection has it open."""
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _remove_wal_files(path: Path) -> None:
    """Have SQLite remove the -wal and -shm files that reading a store made: a connection that may write removes them
    as it closes when it is the last one open, as a coordinator's does (one still open, here or elsewhere, keeps
    them). With nothing in the WAL, its close writes nothing to the store."""
    try:
        tidy = sqlite3.connect(f"file:{path}?mode=rw", uri=True)  # mode=rw: a store removed meanwhile is not made
        try:
            tidy.execute("PRAGMA schema_version").fetchone()  # a read opens the WAL, so that the close removes it
        finally:
            tidy.close()
    except sqlite3.Error:  # a store file this user may not write: the files stay, as they did
        pass


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_sqlite_readonly(exc) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_READONLY") or "readonly database" in str(exc))


def _is_sqlite_busy(exc) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_BUSY", 5) or "locked" in str(exc)


def is_sqlite_full(exc) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in str(exc))


def is_sqlite_io_error(exc) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and str(getattr(exc, "sqlite_errorname", "")).startswith(
        "SQLITE_IOERR")


# FAT32 (a USB disk) holds files of up to 4 GiB - 1 byte, a store of a month's campaign on 20 devices being 2.6 GiB
FAT32_FILE_LIMIT = 2**32 - 1


def why_writes_fail(path: Path, *, shown_as: str | None = None, needed: int = 0) -> str:
    """Why writing the SQLite file ``path`` (named ``shown_as`` to the user; ``needed``: the bytes it is to hold,
    when known) failed with an I/O error, SQLite keeping the errno to itself (a file-size limit's EFBIG reads "disk
    I/O error"): the file, or its WAL, at this process's file-size limit or FAT32's, or a full disk; else the disk's
    own failure."""
    files = {f.name: f.stat().st_size for f in (path, path.with_name(path.name + "-wal")) if f.exists()}
    name, size = max(files.items(), key=lambda item: item[1], default=(path.name, 0))
    name, size = shown_as or name, max(size, needed)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size + 2**16 >= limit:  # within a few pages of it: the next write
        return (f"{name} takes {size:,} bytes, reaching this process's file-size limit of {limit:,} bytes "
                "(ulimit -f); raise it (ulimit -f unlimited)")
    if size + 2**16 >= FAT32_FILE_LIMIT:
        return (f"{name} takes {size:,} bytes, reaching the 4 GiB file-size limit of file systems such as FAT32; "
                "move the store (with its -wal file) to a disk formatted otherwise")
    free = shutil.disk_usage(path.parent).free
    if free < max(2**20, needed):
        return f"the disk holding it has only {free:,} bytes free{f' of the {needed:,} needed' if needed else ''}; " \
               "free space there"
    return "the file system refused the write (a failing disk or a lost network mount? see dmesg)"


class _Transaction:
    def __init__(self, db: sqlite3.Connection, path):
        self.db = db
        self.path = path

    def __enter__(self):
        self.nested = self.db.in_transaction
        if self.nested:
            self.db.execute("SAVEPOINT nested")
            return self.db
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_sqlite_busy(exc):
                raise StoreBusy(f"store {self.path} is busy: another process has held its write lock for over "
                                f"{BUSY_TIMEOUT_S:g} s (a large hwl data import?); nothing was changed: run the "
                                "command again once it is done") from None
            raise
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if self.nested:  # the outer transaction commits, or rolls back, the whole
            if exc_type is None:
                self.db.execute("RELEASE nested")
            elif self.db.in_transaction:  # SQLite may have rolled all of it back already (a full disk)
                self.db.execute("ROLLBACK TO nested")
                self.db.execute("RELEASE nested")
            return False
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.OperationalError as failed:  # e.g. the disk filled up at the commit
                exc = failed
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        if is_sqlite_full(exc):
            raise StorageFull(f"the disk holding the store {self.path} is full ({exc}); the change was rolled "
                              "back and nothing stored before it is lost: free space there, then run the command "
                              "again") from exc
        if _is_sqlite_readonly(exc):
            raise StoreError(f"store {self.path} cannot be written ({exc}): its file (or folder) is read-only; "
                             "nothing in it was changed") from None
        if is_sqlite_io_error(exc):
            raise StorageFull(f"writing the store {self.path} failed ({exc}): {why_writes_fail(Path(self.path))}; "
                              "the change was rolled back and nothing stored before it is lost: run the command "
                              "again once that is mended") from exc
        if exc_type is None:
            raise exc  # the failed commit
        return False
