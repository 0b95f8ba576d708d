"""Export a campaign's results: Parquet (one row per result) and HELP's wide table.

The Parquet file carries ``hwl_format_version``, the code version and the campaign name in its
schema metadata, so a reader can refuse a format it does not know. The HELP-compatible table
has one row per NB201 architecture (``arch_index``, ``arch_str``) and one column per device,
holding the accepted label (median of repeat medians) in milliseconds, like
``nb201_latency_wide.csv.gz``; FBNet tables use ``arch_ops`` instead.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import CampaignError
from harness.store import Store, code_version
from spaces import nb201
from spaces.cost import dataset_of

PARQUET_FORMAT_VERSION = "1"


def results_table(store: Store, campaign_id: int) -> pd.DataFrame:
    """One row per result of a campaign (every attempt; ``accepted`` marks the job's answer)."""
    df = store.results_frame(campaign_id).drop(columns=["id"])
    if len(df) and (df["space"] == "nb201").all():
        df.insert(df.columns.get_loc("arch") + 1, "arch_str",
                  [nb201.to_string(int(a)) for a in df["arch"]])
    df["accepted"] = df["accepted"].astype(bool)
    # the device settings that are part of a record's identity (measurement-method rule 1)
    settings = {}
    space = df["space"].iloc[0] if len(df) else "nb201"
    for row in store.devices(campaign_id).itertuples(index=False):
        p = json.loads(row.profile_json)
        settings[row.device] = {"device_class": p["device_class"], "host": p["host"]["name"],
                                "runtime": p["runtime"]["kind"], "threads": p["runtime"]["threads"],
                                "cores": ",".join(map(str, p["runtime"]["cores"] or [])),
                                "batch_size": p["batch_size"],
                                "dataset": dataset_of(space, p["dataset"]).name,
                                "measurement_profile": p["measurement"]}
    for col in ("device_class", "host", "runtime", "threads", "cores", "batch_size", "dataset",
                "measurement_profile"):
        df[col] = [settings.get(d, {}).get(col) for d in df["device"]]
    return df


def export_parquet(store: Store, campaign_id: int, path) -> Path:
    """Write the campaign's results to ``path``; returns the path."""
    df = results_table(store, campaign_id)
    if df.empty:
        raise CampaignError(f"campaign has no results yet in {store.path}; nothing to export")
    name = df["campaign"].iloc[0]
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update({b"hwl_format_version": PARQUET_FORMAT_VERSION.encode(),
                 b"hwl_code_version": code_version().encode(),
                 b"hwl_campaign": str(name).encode(),
                 b"hwl_columns": json.dumps({"label_ms": "median of repeat medians (ms)",
                                             "accepted": "the result that answers its job"}).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def wide_table(store: Store, campaign_id: int) -> pd.DataFrame:
    """Accepted labels, one row per architecture and one column per device (ms)."""
    df = results_table(store, campaign_id)
    df = df[df["accepted"] & df["label_ms"].notna()]
    if df.empty:
        raise CampaignError(f"campaign has no accepted results yet in {store.path}; nothing to export")
    wide = df.pivot_table(index="arch", columns="device", values="label_ms", aggfunc="first")
    wide.columns.name = None
    if (df["space"] == "nb201").all():
        wide.index = wide.index.astype(int)
        wide = wide.sort_index()
        wide.insert(0, "arch_str", [nb201.to_string(i) for i in wide.index])
        wide.index.name = "arch_index"
    else:
        wide.index.name = "arch_ops"
    return wide.reset_index()


def export_help(store: Store, campaign_id: int, path) -> Path:
    """Write the wide table as CSV (gzip when ``path`` ends in .gz); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wide_table(store, campaign_id).to_csv(path, index=False)
    return path


def read_parquet_export(path) -> pd.DataFrame:
    """Read an export, refusing a format version newer than this code's."""
    meta = pq.read_schema(path).metadata or {}
    version = meta.get(b"hwl_format_version", b"").decode()
    if not version:
        raise CampaignError(f"{path} is not an hwl Parquet export (no hwl_format_version)")
    if int(version) > int(PARQUET_FORMAT_VERSION):
        raise CampaignError(f"{path} has export format {version}; this hwl reads up to "
                            f"{PARQUET_FORMAT_VERSION}: upgrade hwl")
    return pd.read_parquet(path)
