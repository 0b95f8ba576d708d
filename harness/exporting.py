"""Export a campaign's results: Parquet (one row per result) and HELP's wide table.

The Parquet file carries ``hwl_format_version``, the code version and the campaign name in its
schema metadata, so a reader can refuse a format it does not know. The HELP-compatible table
has one row per NB201 architecture (``arch_index``, ``arch_str``) and one column per device,
holding the accepted label (median of repeat medians) in milliseconds, like
``nb201_latency_wide.csv.gz``; FBNet tables use ``arch_ops`` instead.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import CampaignError
from harness.latency_columns import named_as_no_latency
from harness.paths import written_whole
from harness.profiles import profile_from_dict
from harness.store import Store, code_version, without_superseded_drift
from spaces import nb201
from spaces.cost import dataset_of

log = logging.getLogger(__name__)

PARQUET_FORMAT_VERSION = "1"


# Results per page of an export: a page takes about 3 kB a result in pandas, so an export of a
# whole-space campaign on 20 devices (312,500 results) stays near the memory of one page.
EXPORT_PAGE_ROWS = 25_000

# the settings columns each result gets from its device's profile (measurement-method rule 1)
SETTINGS_COLUMNS = ("device_class", "host", "runtime", "threads", "cores", "batch_size", "dataset",
                    "measurement_profile", "settings")  # settings: DeviceProfile.identity as JSON, options included


def results_pages(store: Store, campaign_id, *, rows: int = EXPORT_PAGE_ROWS,
                  devices=None) -> Iterator[pd.DataFrame]:
    """The campaign's results (every attempt; ``accepted`` marks the job's answer), ``rows`` at a
    time in result order, each row with its device's identity settings. ``campaign_id`` may be a list
    (one campaign after the other), ``devices`` keeps only theirs."""
    for one in _ids(campaign_id):
        yield from _campaign_pages(store, one, rows=rows, devices=devices)


def _ids(campaign_id) -> list[int]:
    return [campaign_id] if isinstance(campaign_id, int) else list(campaign_id)


def _campaign_pages(store: Store, campaign_id: int, *, rows: int, devices) -> Iterator[pd.DataFrame]:
    settings = _device_settings(store, campaign_id)
    after = 0
    while True:
        df = store.results_frame(campaign_id, after_id=after, limit=rows, devices=devices)
        if df.empty:
            return
        after = int(df["id"].iloc[-1])
        df = df.drop(columns=["id"])
        if (df["space"] == "nb201").all():  # the official index, an int64 as in every other table hwl writes
            df["arch"] = df["arch"].astype("int64")
            df.insert(df.columns.get_loc("arch") + 1, "arch_str", [nb201.to_string(a) for a in df["arch"]])
        df["accepted"] = df["accepted"].astype(bool)
        df["created_at"] = _utc_time(df["created_at"])
        for col in SETTINGS_COLUMNS:
            df[col] = [settings.get(d, {}).get(col) for d in df["device"]]
        yield df


def _utc_time(seconds: pd.Series) -> pd.Series:
    """The store's wall-clock seconds (UTC epoch) as a time a reader sees as one: a float of 1.8e9 said neither
    unit nor zone. Whole microseconds, the schema's resolution (a float second holds no finer one)."""
    return pd.to_datetime((seconds.astype("float64") * 1e6).round().astype("int64"), unit="us", utc=True)


def _device_settings(store: Store, campaign_id: int) -> dict[str, dict]:
    """Per device, the settings that are part of a record's identity."""
    space = store.db.execute("SELECT space FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    settings = {}
    for row in store.devices(campaign_id).itertuples(index=False):
        p = json.loads(row.profile_json)
        settings[row.device] = {"device_class": p["device_class"], "host": p["host"]["name"],
                                "runtime": p["runtime"]["kind"], "threads": p["runtime"]["threads"],
                                "cores": ",".join(map(str, p["runtime"]["cores"] or [])),
                                "batch_size": p["batch_size"],
                                "dataset": dataset_of(space, p["dataset"]).name,
                                "measurement_profile": p["measurement"],
                                "settings": json.dumps(profile_from_dict(p).identity(), sort_keys=True)}
    return settings


_ARROW_OF_SQL = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string()}


def _parquet_schema(store: Store, columns) -> pa.Schema:
    """The export's column types, fixed up front from the store's schema: a page's pandas dtypes
    depend on its rows (an integer column with a missing value reads as float, one with every
    value missing has no type), and every page must write the same schema."""
    types = {name: pa.string() for name in ("campaign", "space", "arch", "arch_str", "device", "device_class",
                                            "host", "runtime", "cores", "dataset", "measurement_profile",
                                            "settings")}
    if "arch_str" in columns:  # NB201 (one space a file): its arch is the index
        types["arch"] = pa.int64()
    types.update(job_id=pa.int64(), accepted=pa.bool_(), threads=pa.int64(), batch_size=pa.int64(),
                 created_at=pa.timestamp("us", tz="UTC"))
    for name, sql_type in store.result_columns(with_types=True).items():
        types.setdefault(name, _ARROW_OF_SQL[sql_type.upper()])
    return pa.schema([(c, types[c]) for c in columns])


def export_parquet(store: Store, campaign_id, path, *, rows: int = EXPORT_PAGE_ROWS, devices=None) -> Path:
    """Write the campaign's results to ``path``, a page at a time; returns the path. ``campaign_id`` may be a
    list, ``devices`` keeps only theirs (``harness.export_selection`` checks they make one setting).

    The file appears only when it is complete (``written_whole``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as target:
        writer = sink = None
        try:
            for df in results_pages(store, campaign_id, rows=rows, devices=devices):
                if writer is None:
                    schema = _parquet_schema(store, df.columns).with_metadata(
                        _export_metadata(_name(store, campaign_id)))
                    # pyarrow's own files ask the OS for their position, which a pipe has not: Python's keeps count
                    sink = open(target, "wb") if target == path else target
                    writer = pq.ParquetWriter(sink, schema)
                writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
            if writer is None:
                raise _nothing_to_export(store, campaign_id, "results")
        finally:
            if writer is not None:
                writer.close()
            if hasattr(sink, "close"):
                sink.close()
    return path


def _name(store: Store, campaign_id) -> str:
    """The campaign's name (names, comma-separated), for an error: a store holds many (each onboarding batch is
    one), and the command may have taken the latest without being told which."""
    names = []
    for one in _ids(campaign_id):
        row = store.db.execute("SELECT name FROM campaigns WHERE id = ?", (one,)).fetchone()
        names.append(row[0] if row else f"#{one}")
    return ", ".join(names)


def _nothing_to_export(store: Store, campaign_id, what: str) -> CampaignError:
    several = len(_ids(campaign_id)) > 1
    return CampaignError(f"campaign{'s' if several else ''} {_name(store, campaign_id)} {'have' if several else 'has'}"
                         f" no {what} yet in {store.path}; nothing to export")


def _export_metadata(campaign: str) -> dict[bytes, bytes]:
    return {b"hwl_format_version": PARQUET_FORMAT_VERSION.encode(),
            b"hwl_code_version": code_version().encode(),
            b"hwl_campaign": str(campaign).encode(),
            b"hwl_columns": json.dumps({"label_ms": "median of repeat medians (ms)",
                                        "accepted": "the result that answers its job",
                                        "created_at": "when the result was stored (UTC)"}).encode()}


def wide_table(store: Store, campaign_id, *, devices=None) -> pd.DataFrame:
    """Accepted labels, one row per architecture and one column per device (ms); an architecture that several
    campaigns measured on a device gets their median, as the store's table reads it (a latency measured while the
    device drifted left out where the arch was measured again cleanly)."""
    pages = [df.loc[df["accepted"] & df["label_ms"].notna(), ["space", "arch", "device", "label_ms", "flags"]]
             for df in results_pages(store, campaign_id, devices=devices)]
    df = pd.concat(pages, ignore_index=True) if pages else pd.DataFrame()
    if df.empty:
        raise _nothing_to_export(store, campaign_id, "accepted results")
    df = without_superseded_drift(df)
    wide = df.pivot_table(index="arch", columns="device", values="label_ms", aggfunc="median")
    wide.columns.name = None
    if (df["space"] == "nb201").all():
        wide.index = wide.index.astype(int)
        wide = wide.sort_index()
        wide.insert(0, "arch_str", [nb201.to_string(i) for i in wide.index])
        wide.index.name = "arch_index"
    else:
        wide.index.name = "arch_ops"
    return wide.reset_index()


def export_help(store: Store, campaign_id, path, *, devices=None) -> Path:
    """Write the wide table as CSV (gzip when ``path`` ends in .gz); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wide = wide_table(store, campaign_id, devices=devices)
    _warn_of_devices_named_as_no_latency([c for c in wide.columns if c not in ("arch_index", "arch_str", "arch_ops")],
                                         path)
    with written_whole(path) as target:
        # any case: LAB.CSV.GZ was written plain, which no reader of a .gz name (ours included) could read back
        wide.to_csv(target, index=False, compression="gzip" if path.suffix.lower() == ".gz" else None)
    return path


def _warn_of_devices_named_as_no_latency(devices: list, path: Path) -> None:
    """A device named like a FLOPs or accuracy column ('npu_acc') is written, for HELP's readers, but hwl's
    readers of a wide table refuse its column (``harness.latency_columns``): say so, and what reads back."""
    named = named_as_no_latency(devices)
    if named:
        log.warning("%s: %s named like a column that holds no latencies, which hwl's readers of a wide table "
                    "(data import --wide, the predictor commands) refuse; give them the Parquet export "
                    "(--out FILE.parquet), which reads back whole", path.name,
                    f"device {named[0]} is" if len(named) == 1 else f"devices {', '.join(named)} are")


def read_parquet_export(path) -> pd.DataFrame:
    """Read an export, refusing a format version newer than this code's."""
    check_export_version(path)
    return pd.read_parquet(path)


def check_export_version(path) -> None:
    """Refuse a Parquet file that is not an hwl export, or one of a format newer than this code's."""
    meta = pq.read_schema(path).metadata or {}
    version = meta.get(b"hwl_format_version", b"").decode()
    if not version:
        raise CampaignError(f"{path} is not an hwl Parquet export (no hwl_format_version)")
    if int(version) > int(PARQUET_FORMAT_VERSION):
        raise CampaignError(f"{path} has export format {version}; this hwl reads up to "
                            f"{PARQUET_FORMAT_VERSION}: upgrade hwl")
