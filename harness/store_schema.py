"""Schema of the SQLite store and its ``migrate_to_N`` steps.

``PRAGMA user_version`` holds the schema version and ``PRAGMA application_id`` marks a file as
an hwl store, so a foreign SQLite file is refused instead of being written into. A store at
version N is brought to :data:`SCHEMA_VERSION` by running ``migrate_to_{N+1}`` ... in order,
each in one transaction.
"""
from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1
APPLICATION_ID = 0x48574C31  # "HWL1"

JOB_STATES = ("queued", "running", "done", "failed")  # of `jobs.state`; a device's is active, recovering or quarantined

# Statistics stored as columns of `results` (names of agents.measurement.Measurement.statistics;
# milliseconds unless the name says otherwise). label_ms = median of the repeat medians.
STAT_COLUMNS = (
    "label_ms", "median_ms", "mean_ms", "std_ms", "min_ms", "p10_ms", "p25_ms", "p75_ms", "p90_ms",
    "p95_ms", "iqr_ms", "iqr_over_median", "iq_mean_ms", "median_ci95_lo_ms", "median_ci95_hi_ms",
    "drift", "init_ms", "first_ms",
)


def migrate_to_1(db: sqlite3.Connection) -> None:
    stat_cols = ",\n            ".join(f"{c} REAL" for c in STAT_COLUMNS)
    ddl = f"""
        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            space TEXT NOT NULL,
            measurement TEXT,
            arch_spec TEXT NOT NULL,
            seed INTEGER NOT NULL,
            order_seed INTEGER NOT NULL,
            config_json TEXT NOT NULL,
            code_version TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE campaign_devices (
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            device TEXT NOT NULL,
            profile_json TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'active',
            error TEXT,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            canary_baseline_ms REAL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (campaign_id, device)
        );
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            device TEXT NOT NULL,
            arch TEXT NOT NULL,
            position INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            updated_at REAL,
            UNIQUE (campaign_id, device, arch)
        );
        CREATE INDEX jobs_queue ON jobs (campaign_id, device, state, position);
        CREATE TABLE attempts (
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            attempt INTEGER NOT NULL,
            state TEXT NOT NULL,
            outcome TEXT,
            error TEXT,
            started_at REAL NOT NULL,
            finished_at REAL,
            PRIMARY KEY (job_id, attempt)
        );
        CREATE TABLE fingerprints (
            id TEXT PRIMARY KEY,
            json TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE artifacts (
            sha256 TEXT PRIMARY KEY,
            space TEXT NOT NULL,
            arch TEXT NOT NULL,
            config_json TEXT NOT NULL,
            path TEXT NOT NULL,
            size_bytes INTEGER,
            created_at REAL NOT NULL
        );
        CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            attempt INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            accepted INTEGER NOT NULL DEFAULT 0,
            flags TEXT NOT NULL DEFAULT '',
            {stat_cols},
            block_size INTEGER,
            n_repeats INTEGER,
            n_samples INTEGER,
            samples_ns BLOB,
            measure_s REAL,
            error_kind TEXT,
            error_message TEXT,
            fingerprint_id TEXT REFERENCES fingerprints(id),
            artifact_sha256 TEXT,
            runtime_version TEXT,
            code_version TEXT NOT NULL,
            record_json TEXT,
            created_at REAL NOT NULL,
            UNIQUE (job_id, attempt)
        );
        CREATE INDEX results_job ON results (job_id, accepted);
        CREATE TABLE canaries (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            device TEXT NOT NULL,
            after_jobs INTEGER NOT NULL,
            median_ms REAL,
            baseline_ms REAL,
            deviation REAL,
            ok INTEGER NOT NULL,
            last_result_id INTEGER,
            created_at REAL NOT NULL
        );
        CREATE TABLE imported (
            space TEXT NOT NULL,
            arch TEXT NOT NULL,
            device TEXT NOT NULL,
            latency_ms REAL NOT NULL,
            source TEXT NOT NULL,
            imported_at REAL NOT NULL,
            PRIMARY KEY (space, device, arch, source)
        );
    """
    # One statement at a time, so the caller's transaction stays open (executescript commits).
    for statement in ddl.split(";"):
        if statement.strip():
            db.execute(statement)


MIGRATIONS = {1: migrate_to_1}
