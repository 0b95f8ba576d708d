"""hwl's own Parquet export (``hwl campaign export``, one row per result) read as a latency table.

Its answer for each job is the accepted result's ``label_ms``; retries and refused attempts are
rows too, so a reader of latencies keeps only the accepted labels. ``hwl data import`` and the
predictor commands (``--measurements``, ``--test-table``, ``--table``) read it the same way.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import UserError


def is_results_export(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` has the shape of a Parquet export (a label per result, no latency column)."""
    cols = set(frame.columns)
    return {"label_ms", "accepted", "device"} <= cols and "latency_ms" not in cols


def accepted_labels(frame: pd.DataFrame, path, error=UserError) -> pd.DataFrame:
    """The export's accepted labels, ``label_ms`` renamed ``latency_ms``; an export format newer than
    this code reads is refused (as ``error``)."""
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        from harness.errors import CampaignError
        from harness.exporting import read_parquet_export
        try:
            read_parquet_export(path)
        except CampaignError as exc:
            raise error(str(exc)) from None
    answered = frame[frame["accepted"].astype(bool) & frame["label_ms"].notna()]
    return answered.rename(columns={"label_ms": "latency_ms"})
