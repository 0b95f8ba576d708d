"""Proxy scores in the harness store file (table ``zcp_scores``), so a run can resume.

The file is opened with ``harness.store.Store`` first, which refuses a foreign SQLite file or a
store written by a newer hwl and brings an older one up to date. The proxy table is kept by this
module with ``CREATE TABLE IF NOT EXISTS`` and a version row in ``zcp_meta`` (the store's own
migrations stay untouched; proxy scores are derived data that can always be recomputed).
One row per (space, dataset, input, arch, proxy): a run that stopped part-way keeps every arch
it finished, and an arch is done when all the asked proxies are stored for it.
"""
from __future__ import annotations

import sqlite3
import time

import numpy as np
import pandas as pd

from harness.errors import StoreVersionError

ZCP_TABLE_VERSION = 1

_DDL = (
    """CREATE TABLE IF NOT EXISTS zcp_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS zcp_scores (
        space TEXT NOT NULL,
        dataset TEXT NOT NULL,
        input_key TEXT NOT NULL,
        arch TEXT NOT NULL,
        proxy TEXT NOT NULL,
        score REAL,
        seconds REAL NOT NULL,
        peak_rss_mb REAL,
        code_version TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (space, dataset, input_key, arch, proxy)
    )""",
)


class ProxyStore:
    """Read and write proxy scores in an hwl store file.

    Parameters
    ----------
    path : str or Path
        The store file (created when missing).
    readonly : bool
        Open read-only (only reading scores).

    Raises
    ------
    harness.errors.StoreError
        Not an hwl store; ``StoreVersionError`` for a proxy table newer than this code.
    """

    def __init__(self, path, *, readonly: bool = False):
        from harness.store import Store, code_version

        self.store = Store(path, readonly=readonly)
        self.db = self.store.db
        self.code_version = code_version()
        if not readonly:
            with self.store.transaction():
                for ddl in _DDL:
                    self.db.execute(ddl)
                self.db.execute("INSERT OR IGNORE INTO zcp_meta VALUES ('version', ?)", (str(ZCP_TABLE_VERSION),))
        self._check_version()

    def _check_version(self) -> None:
        try:
            row = self.db.execute("SELECT value FROM zcp_meta WHERE key = 'version'").fetchone()
        except sqlite3.OperationalError:  # read-only store without proxy tables: nothing stored yet
            return
        if row and int(row[0]) > ZCP_TABLE_VERSION:
            raise StoreVersionError(f"the proxy table of {self.store.path} has version {row[0]}; this hwl "
                                    f"knows {ZCP_TABLE_VERSION}: upgrade hwl to read it")

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def done_archs(self, space: str, dataset: str, input_key: str, proxies) -> set[str]:
        """Arch keys (as text) that have a stored score for every proxy in ``proxies``."""
        proxies = list(proxies)
        marks = ",".join("?" * len(proxies))
        try:
            rows = self.db.execute(
                f"SELECT arch FROM zcp_scores WHERE space=? AND dataset=? AND input_key=? AND proxy IN ({marks}) "
                "GROUP BY arch HAVING count(DISTINCT proxy) = ?",
                (space, dataset, input_key, *proxies, len(proxies))).fetchall()
        except sqlite3.OperationalError:  # no proxy table yet (read-only store)
            return set()
        return {r[0] for r in rows}

    def add(self, space: str, dataset: str, input_key: str, arch, scores: dict, seconds: dict,
            peak_rss_mb: float | None = None) -> None:
        """Store one architecture's scores (one transaction; replaces earlier values)."""
        now = time.time()
        rows = [(space, dataset, input_key, str(arch), name,
                 float(value) if np.isfinite(value) else None, float(seconds.get(name, 0.0)),
                 peak_rss_mb, self.code_version, now) for name, value in scores.items()]
        with self.store.transaction():
            self.db.executemany("INSERT OR REPLACE INTO zcp_scores VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def scores(self, space: str, dataset: str | None = None, input_key: str | None = None) -> pd.DataFrame:
        """Long table: space, dataset, input_key, arch, proxy, score, seconds, peak_rss_mb."""
        where, params = ["space = ?"], [space]
        if dataset is not None:
            where.append("dataset = ?")
            params.append(dataset)
        if input_key is not None:
            where.append("input_key = ?")
            params.append(input_key)
        columns = "space, dataset, input_key, arch, proxy, score, seconds, peak_rss_mb"
        # no proxy table yet (a store `hwl zcp` never wrote to, opened read-only); pandas' read_sql turned
        # sqlite3's OperationalError into its own DatabaseError, which an except here missed
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'zcp_scores'").fetchone():
            return pd.DataFrame(columns=columns.split(", "))
        return self.store.query(f"SELECT {columns} FROM zcp_scores WHERE {' AND '.join(where)}", params)
