"""A process that writes a store through the Store calls the coordinator makes, and keeps it open, as a campaign
does for weeks: ``python -m tests.store_writer STORE BEFORE AFTER [--on | --file-size-limit BYTES]``.

It stores BEFORE results, checkpoints the WAL into the store file (as SQLite does by itself every 1,000 pages),
stores AFTER more (these stay in STORE-wal) and prints ``stored N``. Then, with ``--on``, it goes on storing one
result after another until its stdin closes (without, it waits for that), and exits without closing the store.
With ``--file-size-limit`` it instead stores results under that file-size limit (RLIMIT_FSIZE, as ``ulimit -f``)
until a write is refused, and prints ``stored N`` and the error's class and line.
"""
from __future__ import annotations

import os
import resource
import sys
import threading

from harness.errors import UserError
from harness.store import Store

JOBS = 20_000


def store_results(store: Store, jobs, n: int) -> None:
    for _ in range(n):
        job = next(jobs)[0]
        attempt = store.start_attempt(job)
        store.finish_attempt(job, attempt, job_state="done", record={
            "outcome": "ok", "stats": {"label_ms": 1.5, "median_ms": 1.5}, "samples_ns": [[1.5e6] * 20]})


def store_until_refused(store: Store, jobs, file_size_limit: int) -> int:
    """Results stored before a write fails under ``file_size_limit`` (Python ignores SIGXFSZ, so the write gets
    EFBIG, as the coordinator's would under ``ulimit -f`` or on FAT32)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    stored = 0
    try:
        while True:
            store_results(store, jobs, 1)
            stored += 1
    except UserError as exc:
        print(f"stored {stored}\n{type(exc).__name__}: {exc}", flush=True)
    return stored


def main(path: str, before: int, after: int, on: bool, file_size_limit: int | None) -> None:
    store = Store(path)
    cid = store.create_campaign(name="w", space="nb201", measurement="quick", arch_spec="all", seed=0,
                                order_seed=0, config={}, devices={"d1": "{}"},
                                jobs=[("d1", str(i), i) for i in range(JOBS)])
    jobs = iter(store.queued_jobs(cid, "d1"))
    store_results(store, jobs, before)
    store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    store_results(store, jobs, after)
    print(f"stored {before + after}", flush=True)
    if file_size_limit is not None:
        store_until_refused(store, jobs, file_size_limit)
        os._exit(0)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while on and not stdin_closed.is_set():
        store_results(store, jobs, 1)
    stdin_closed.wait()
    os._exit(0)  # as a coordinator killed mid-campaign: no close, no last checkpoint


if __name__ == "__main__":
    limit = sys.argv[sys.argv.index("--file-size-limit") + 1] if "--file-size-limit" in sys.argv else None
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "--on" in sys.argv[4:],
         None if limit is None else int(limit))
