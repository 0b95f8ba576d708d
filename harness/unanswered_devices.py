"""Why a device a store's campaigns measure has no latency in the store's table yet.

The table holds accepted labels only: a device whose jobs all failed, are still queued, or were
measured in the other search space is missing from it, and 'unknown device' would say the store
never heard of it.
"""
from __future__ import annotations

from pathlib import Path

from harness.campaign import resume_command
from harness.campaign_lock import last_run_flags
from harness.errors import UserError
from harness.store import Store


def read_answered(store_path, space: str, devices, read):
    """``read()``, the latency table of ``devices`` (None: every device), refused in one line by
    :func:`check_answered` for a device a campaign of the store at ``store_path`` (None: a table file) measures
    without a label in it; a store with no latency at all yet (a first campaign stopped before its first result)
    said "holds no latencies yet", not what became of the jobs and how to go on."""
    from predictors.data import EmptyStoreError, devices_of

    try:
        table = read()
    except EmptyStoreError:
        check_answered(store_path, space, devices or _measured_devices(store_path), [])
        raise
    if store_path is not None and devices:
        check_answered(store_path, space, devices, devices_of(table))
    return table


def _measured_devices(store_path) -> list[str]:
    with Store(Path(store_path), readonly=True) as store:
        return sorted(store.query("SELECT DISTINCT device FROM jobs")["device"])


def check_answered(store_path, space: str, devices, answered) -> None:
    """Raise a one-line ``UserError`` for the first of ``devices`` not in ``answered`` (the devices of the
    store's ``space`` table) that a campaign of the store measures, saying what became of its jobs."""
    missing = [d for d in devices if d not in set(answered)]
    if not missing:
        return
    with Store(Path(store_path), readonly=True) as store:
        for device in missing:
            jobs = store.query(
                "SELECT c.id AS campaign_id, c.name AS campaign, c.space, d.state AS device_state, j.state, "
                "count(*) AS n FROM jobs j "
                "JOIN campaigns c ON j.campaign_id = c.id JOIN campaign_devices d ON d.campaign_id = j.campaign_id "
                "AND d.device = j.device WHERE j.device = ? GROUP BY c.id, j.state ORDER BY c.id, j.state",
                (device,))
            if jobs.empty:
                continue  # never measured here: the caller's 'unknown device' names the valid ones
            mine = jobs[jobs["space"] == space]
            if mine.empty:
                spaces = ", ".join(sorted(set(jobs["space"])))
                raise UserError(f"store {store_path} measured {device} in {spaces} only, not in {space}")
            parts = []
            for (campaign, device_state), rows in mine.groupby(["campaign", "device_state"], sort=False):
                counts = ", ".join(f"{n} {state}" for state, n in zip(rows["state"], rows["n"]))
                parts.append(f"campaign {campaign}: {counts} (device {device_state})")
            waiting = mine[mine["state"].isin(["queued", "running"])]
            if waiting.empty:
                hint = "every job failed (hwl campaign export lists each attempt's error_message)"
            else:
                resume = resume_command(store_path, waiting["campaign"].iloc[-1],  # as its last run went
                                        last_run_flags(store_path, int(waiting["campaign_id"].iloc[-1])))
                hint = f"once it has some ({resume}, or wait for the coordinator running it), run this again"
            raise UserError(f"store {store_path} holds no accepted {space} latency of {device} "
                            f"({'; '.join(parts)}): {hint}")


__all__ = ["check_answered", "read_answered"]
