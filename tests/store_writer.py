"""A process that writes a store through the Store calls the coordinator makes, and keeps it open, as a campaign
does for weeks: ``python -m tests.store_writer STORE BEFORE AFTER [--on]``.

It stores BEFORE results, checkpoints the WAL into the store file (as SQLite does by itself every 1,000 pages),
stores AFTER more (these stay in STORE-wal), prints ``stored N`` and then, with ``--on``, goes on storing one
result after another until its stdin closes (without, it waits for that), and exits without closing the store.
"""
from __future__ import annotations

import os
import sys
import threading

from harness.store import Store

JOBS = 20_000


def store_results(store: Store, jobs, n: int) -> None:
    for _ in range(n):
        job = next(jobs)[0]
        attempt = store.start_attempt(job)
        store.finish_attempt(job, attempt, job_state="done", record={
            "outcome": "ok", "stats": {"label_ms": 1.5, "median_ms": 1.5}, "samples_ns": [[1.5e6] * 20]})


def main(path: str, before: int, after: int, on: bool) -> None:
    store = Store(path)
    cid = store.create_campaign(name="w", space="nb201", measurement="quick", arch_spec="all", seed=0,
                                order_seed=0, config={}, devices={"d1": "{}"},
                                jobs=[("d1", str(i), i) for i in range(JOBS)])
    jobs = iter(store.queued_jobs(cid, "d1"))
    store_results(store, jobs, before)
    store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    store_results(store, jobs, after)
    print(f"stored {before + after}", flush=True)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while on and not stdin_closed.is_set():
        store_results(store, jobs, 1)
    stdin_closed.wait()
    os._exit(0)  # as a coordinator killed mid-campaign: no close, no last checkpoint


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "--on" in sys.argv[4:])
