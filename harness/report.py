"""Tables for people: live campaign progress, status, per-device medians and correlations.

Library code builds ``rich`` renderables; only the CLI prints them.
"""
from __future__ import annotations

import pandas as pd
from rich.table import Table


def _eta(seconds) -> str:
    """``seconds`` with its units (``1h02m``, ``5m12s``, ``9s``): a bare '5:12' read as hours as well as minutes."""
    if seconds is None:
        return "-"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_table(snapshot: dict, *, title: str = "campaign") -> Table:
    """Live view of :meth:`Coordinator.snapshot`: per device done / failed / running, ETA. Done and failed count
    the campaign's jobs, earlier runs' too: a resume showed 'done 4' for a 30-job campaign with nothing queued."""
    table = Table(title=title)
    for col in ("device", "state", "done", "failed", "running", "queued", "ETA"):
        table.add_column(col, justify="left" if col in ("device", "state") else "right", no_wrap=col == "device")
    for name, d in snapshot.items():
        state = d["state"] if not d.get("error") else f"{d['state']}: {d['error'][:60]}"
        style = "red" if d["state"] == "quarantined" else None
        done, failed = (d[k] + d.get(f"{k}_before", 0) for k in ("done", "failed"))
        table.add_row(name, state, str(done), str(failed), str(d["running"]), str(d["queued"]),
                      _eta(d.get("eta_s")), style=style)
    return table


def status_table(status: pd.DataFrame, *, title: str) -> Table:
    """``Store.status`` as a table (device state, jobs per state, failed attempts in a row; the errors are
    :func:`status_errors`, under it).

    ``failed`` counts jobs given up on, ``failed in a row`` the device's latest failed attempts: an
    attempt lost with the device charges no job, so a device can show 0 and 4 (see STATUS_LEGEND)."""
    table = Table(title=title)
    counts = ("queued", "running", "done", "failed", "failed in a row")
    for col in ("device", "state", *counts):
        # names and states are never cut: at 80 columns (a pipe, a log) local-ort-1t and -2t both read local-ort…
        table.add_column(col, justify="right" if col in counts else "left", no_wrap=col in ("device", "state"))
    for row in status.itertuples(index=False):
        table.add_row(row.device, row.state, str(int(row.queued)), str(int(row.running)), str(int(row.done)),
                      str(int(row.failed)), str(int(row.consecutive_failures)),
                      style="red" if row.state == "quarantined" else None)
    return table


def status_errors(status: pd.DataFrame) -> list[str]:
    """Each device's error in full, one line each, for under the status table (a column cut them to a few
    letters a line, and at 80 characters, before the part that says what to do)."""
    return [f"{row.device}: {row.error}" for row in status.itertuples(index=False) if row.error]


STATUS_LEGEND = ("failed: jobs given up on (3 attempts failed on the model); failed in a row: the device's latest "
                 "failed attempts (for a quarantined device, the run that quarantined it), attempts lost with the "
                 "device included, which charge no job")


def medians_table(wide: pd.DataFrame, devices: list[str], *, title: str = "per-device latency (ms)") -> Table:
    """Median, min and max of each device's labels in a wide table."""
    table = Table(title=title)
    for col in ("device", "archs", "min", "median", "max"):
        table.add_column(col, justify="left" if col == "device" else "right")
    for d in devices:
        v = wide[d].dropna()
        table.add_row(d, str(len(v)), f"{v.min():.3f}", f"{v.median():.3f}", f"{v.max():.3f}")
    return table


def spearman_table(wide: pd.DataFrame, devices: list[str], *, title: str = "Spearman rho between devices") -> Table:
    """Pairwise Spearman rank correlation of the devices' labels (archs both measured)."""
    rho = wide[devices].corr(method="spearman")
    table = Table(title=title)
    table.add_column("")
    for d in devices:
        table.add_column(d, justify="right")
    for a in devices:
        table.add_row(a, *[f"{rho.loc[a, b]:.3f}" for b in devices])
    return table
