"""hwl's own campaign exports read back as long latency tables (``device``, ``latency_ms``, an arch column).

`hwl data import` and the predictor commands' table files (``--measurements``, ``--table``,
``--test-table``) read them alike: a Parquet export (one row per attempt) gives each job's accepted
label, a wide table (``--format help``: one column per device) one row per filled cell.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from harness.campaign import differing_keys, dotted_value
from harness.errors import CampaignError, UserError
from harness.exporting import SETTINGS_COLUMNS, check_export_version
from harness.latency_columns import named_as_no_latency
from harness.store import drift_flagged, without_superseded_drift
from harness.text import count

log = logging.getLogger(__name__)

# The columns that name an architecture (arch_id: HELP's FBNet row id); in a wide table every other one is a device.
KEY_COLUMNS = ("arch_index", "arch_str", "arch_ops", "op_idx_key", "arch", "arch_id")
# How pandas reads a column whose header cell is empty: the row numbers `DataFrame.to_csv` writes without index=False.
_NO_HEADER = re.compile(r"Unnamed: \d+")
# A count this large is no latency in ms (over 16 minutes per inference) but FLOPs, params or a time in ns.
_COUNT_FLOOR = 1e6


def is_parquet_export(frame: pd.DataFrame) -> bool:
    """One row per result, as `hwl campaign export` writes: labels in ``label_ms``, the job's answer ``accepted``."""
    return {"label_ms", "accepted", "device"} <= set(frame.columns) and "latency_ms" not in frame.columns


def looks_wide(frame: pd.DataFrame) -> bool:
    """Architecture columns, other columns, none named ``device`` or ``latency_ms``: one latency column per device."""
    cols = set(frame.columns)
    return not cols & {"device", "latency_ms"} and bool(cols & set(KEY_COLUMNS)) and bool(cols - set(KEY_COLUMNS))


def accepted_labels(frame: pd.DataFrame, path: Path, error=UserError) -> pd.DataFrame:
    """The export's accepted labels as ``latency_ms`` rows, one per (device, arch); ``error`` (a ``UserError``
    class) for a newer export format, or a device measured with two settings (the file joins two campaigns'
    exports)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            check_export_version(path)
        except CampaignError as exc:
            raise error(str(exc)) from None
    answered = frame[frame["accepted"].astype(bool) & frame["label_ms"].notna()]
    one_setting_per_device(answered, path.name, error)
    answered = _measured_cleanly_if_again(answered)
    if "arch" in answered.columns and answered.duplicated(["device", "arch"]).any():
        # an export of several campaigns (one setting) that each measured the arch: their median, as the store reads
        median = answered.groupby(["device", "arch"])["label_ms"].transform("median")
        answered = answered.assign(label_ms=median).drop_duplicates(["device", "arch"])
    return answered.rename(columns={"label_ms": "latency_ms"})


def drifted_labels(frame: pd.DataFrame) -> dict[str, int]:
    """device -> how many of a Parquet export's accepted labels carry ``canary_drift``, as
    ``Store.latency_labels`` flags them in a store: the file keeps the flag, so its readers can say so too."""
    if not is_parquet_export(frame) or "flags" not in frame.columns:
        return {}
    answered = _measured_cleanly_if_again(frame[frame["accepted"].astype(bool) & frame["label_ms"].notna()])
    counts = answered.loc[drift_flagged(answered["flags"]).to_numpy(bool), "device"].astype(str).value_counts()
    return {device: int(counts[device]) for device in sorted(counts.index)}


def _measured_cleanly_if_again(answered: pd.DataFrame) -> pd.DataFrame:
    """The export's accepted labels less the drifted ones of an arch measured again cleanly, as the store reads
    them (``Store.latency_table``); an export from before the ``flags`` column keeps them all."""
    if not {"flags", "arch"} <= set(answered.columns):
        return answered
    return without_superseded_drift(answered)


def one_setting_per_device(rows: pd.DataFrame, source: str, error) -> None:
    """Refuse a device whose latencies come from two settings (an export's settings columns, which a table of
    one's own may carry too, e.g. ``batch_size``): their median is neither."""
    # the settings JSON where every row has it (an export from before it was added has none); a missing value
    # is a value: pandas 3 keeps NaN through astype(str) and groupby left those rows out of every setting
    settings = [c for c in SETTINGS_COLUMNS if c in rows.columns and (c != "settings" or rows[c].notna().all())]
    if not settings or rows.empty or "device" not in rows.columns:
        return
    keyed = rows.assign(**{c: rows[c].astype(object).fillna("(none)").astype(str) for c in settings})
    for device, group in keyed.groupby("device", sort=False):
        kinds = group.groupby(settings, sort=False)
        if kinds.ngroups < 2:
            continue
        parts = []
        described = _describe(list(kinds), settings)
        for (_, part), values in zip(kinds, described):
            campaigns = (f" (campaign {', '.join(pd.unique(part['campaign']))})"
                         if "campaign" in part.columns else "")
            parts.append(f"{len(part)} with {values}{campaigns}")
        fix = (f"give an export of one setting's campaigns (hwl campaign export --name CAMPAIGN [--name CAMPAIGN "
               f"...] --device {device})" if "campaign" in rows.columns
               else "keep one setting's rows, or give each setting its own device name")
        raise error(f"{source} holds {device}'s latencies measured with {kinds.ngroups} different settings: "
                    f"{'; '.join(parts)}; their median would mix them, so {fix}")


def _describe(kinds, settings: list[str]) -> list[str]:
    """Per setting, 'key = value' of what differs: the identity's dotted keys when the export has its
    JSON (runtime options too), else the settings columns."""
    if "settings" in settings:
        identities = [json.loads(part["settings"].iloc[0]) for _, part in kinds]
        keys = sorted({k for other in identities[1:] for k in differing_keys(identities[0], other)})
        return [", ".join(f"{k} = {dotted_value(identity, k)}" for k in keys) for identity in identities]
    varying = [c for c in settings if len({part[c].iloc[0] for _, part in kinds}) > 1]
    return [", ".join(f"{c} = {part[c].iloc[0]}" for c in varying) for _, part in kinds]


def wide_cells(frame: pd.DataFrame, source: str, error=UserError) -> pd.DataFrame:
    """One row (arch columns, ``device``, ``latency_ms``) per filled cell of a wide table."""
    archs = [c for c in frame.columns if c in KEY_COLUMNS and c != "arch_id"]  # HELP's FBNet row id: no key
    unnamed = [c for c in frame.columns if c not in KEY_COLUMNS and _has_no_header(c)]
    devices = [c for c in frame.columns if c not in KEY_COLUMNS and c not in unnamed]
    if not archs or not devices:
        raise error(f"{source}: a wide table needs an architecture column (arch_index, arch_str, arch_ops, "
                    f"op_idx_key or arch) and device columns; columns: {', '.join(map(str, frame.columns))}")
    if unnamed:  # it was read as a device of latencies 0, 1, 2, ... and refused as 'latency_ms' 0 in row 1
        log.warning("%s: %s without a header (%s) names no device: read as a row index (pandas' to_csv writes one "
                    "unless index=False), not as latencies", source, count(len(unnamed), "column", "columns"),
                    ", ".join(map(repr, unnamed)))
    _refuse_non_latency_columns(devices, source, error)
    for device in devices:
        _check_latency_column(frame[device], device, source, error)
    long = frame.melt(id_vars=archs, value_vars=devices, var_name="device", value_name="latency_ms")
    return long[~_blank(long["latency_ms"])].reset_index(drop=True)  # an empty cell: no latency for the arch


def _refuse_non_latency_columns(devices: list, source: str, error) -> None:
    named = named_as_no_latency(devices)
    if named:
        raise error(f"{source}: {count(len(named), 'column', 'columns')} of a wide table would be read as devices' "
                    f"latencies, but {'its name says' if len(named) == 1 else 'their names say'} otherwise: "
                    f"{', '.join(named)}; drop {'it' if len(named) == 1 else 'them'} from the file, or give a long "
                    "table (device and latency_ms columns)")


def _has_no_header(column) -> bool:
    return column is None or str(column).strip() == "" or bool(_NO_HEADER.fullmatch(str(column)))


def _blank(cells: pd.Series) -> pd.Series:
    return cells.isna() | (cells.astype(str).str.strip() == "")


def _check_latency_column(cells: pd.Series, device, source: str, error) -> None:
    """Refuse a device column with a filled cell that is not a positive number, naming the column and the file's
    row: the long table made of it numbers its rows column after column, so its errors named neither."""
    blank = _blank(cells).to_numpy()
    latency = pd.to_numeric(cells, errors="coerce").to_numpy(np.float64)
    bad = ~blank & ~(np.isfinite(latency) & (latency > 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = cells.iloc[row].item() if isinstance(cells.iloc[row], np.generic) else cells.iloc[row]
        what = count(int(bad.sum()), "value is not a positive number", "values are not positive numbers")
        raise error(f"{source}: column {device!r} is read as a device's latencies (a wide table: one column per "
                    f"device), but {what} (first at data row {row + 1}: {value!r}); remove a column that holds no "
                    "latencies")
    if _whole_numbers_past_any_latency(latency[~blank]):  # every filled cell is a positive number by now
        raise error(f"{source}: column {device!r} is read as a device's latencies (a wide table: one column per "
                    f"device), but it holds whole numbers up to {latency[~blank].max():,.0f}, no latencies in ms (a "
                    "count such as FLOPs or params, or a time in ns); drop it from the file, or give latencies in ms")


def refuse_counts_as_latencies(devices, latency_ms, source: str, error) -> None:
    """Refuse a long table's device whose latencies are whole numbers reaching a million, as ``wide_cells`` refuses
    such a column: a time in ns (or a count) was stored as ms, over 16 minutes per inference."""
    frame = pd.DataFrame({"device": np.asarray(devices, dtype=object), "latency_ms": np.asarray(latency_ms, float)})
    for device, values in frame.groupby("device", sort=False)["latency_ms"]:
        if _whole_numbers_past_any_latency(values.to_numpy()):
            raise error(f"{source}: device {device!r} has latency_ms values that are whole numbers up to "
                        f"{values.max():,.0f}, no latencies in ms (a time in ns, or a count such as FLOPs); give "
                        "latencies in ms")


def read_table_frame(path: Path, *, parquet: bool, error) -> pd.DataFrame:
    """A latency table file as `hwl data import` and the predictor commands both read it, its header checked first
    (:func:`refuse_repeated_columns`). keep_default_na=False: a device named NA or nan is a name (empty cells are
    still caught); skipinitialspace: a lab script's '0, pi, 1.5' rows named a device ' pi' beside its 'pi'."""
    refuse_repeated_columns(path, error)
    if parquet:
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, skipinitialspace=True)


def refuse_repeated_columns(path: Path, error) -> None:
    """Refuse a table file whose header names a column twice: pandas read a CSV's second 'pi' as a device 'pi.1'
    and left a second latency_ms unread, and pyarrow's refusal of a Parquet file's ran over many lines."""
    names = [str(name) for name in _header(Path(path)) if str(name).strip()]  # unnamed columns are warned of
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise error(f"{Path(path).name}: its header names {', '.join(map(repr, repeated))} twice; rename or drop "
                    "the repeated column")


def _header(path: Path) -> list:
    """A table file's column names as written: pandas renames a CSV's repeated ones."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    return pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                       skipinitialspace=True).iloc[0].tolist()


def _whole_numbers_past_any_latency(values: np.ndarray) -> bool:
    return values.size > 0 and bool((values == np.round(values)).all()) and values.max() >= _COUNT_FLOOR


__all__ = ["KEY_COLUMNS", "accepted_labels", "drifted_labels", "is_parquet_export", "looks_wide",
           "one_setting_per_device", "read_table_frame", "refuse_counts_as_latencies", "refuse_repeated_columns",
           "wide_cells"]
