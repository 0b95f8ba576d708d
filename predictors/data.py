"""Latency tables in one shape: columns ``arch``, ``device``, ``latency_ms`` (+ ``source``).

``arch`` is the search space's key: the official NB201 index (int) or the canonical FBNet key
(the 22 op names comma-joined, str). A table may come from

- the HELP tables shipped in ``predictors/data/`` (:func:`help_table`),
- a user's or an exported CSV / Parquet file (:func:`read_table`) with a ``device`` and a
  ``latency_ms`` column and one of ``arch_index``, ``arch_str``, ``arch``, ``arch_ops``,
  ``op_idx_key`` (:data:`ARCH_COLUMNS`),
- a harness store (:func:`store_table`, ``harness.store.Store(path).latency_table(space)``),

and :func:`load_table` picks one of them from CLI-style arguments. Devices may cover different
architectures. Repeated (arch, device) rows are reduced to their median.
"""
from __future__ import annotations

import functools
import logging
import unicodedata
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from harness.paths import is_sqlite, why_not_a_file
from harness.text import count
from predictors.table_errors import LatencyTableError
from spaces import fbnet, get_space, nb201
from spaces.columns import PAIRED_COLUMNS, check_same_archs
from spaces.errors import ArchError

log = logging.getLogger(__name__)

COLUMNS = ("arch", "device", "latency_ms", "source")
# Accepted architecture columns of a user's table, in order of preference.
ARCH_COLUMNS = ("arch_index", "arch_str", "arch", "arch_ops", "op_idx_key")


# `hwl adapt --measurements lab.db` was told only "unknown format; use .csv, .csv.gz or .parquet"
_STORE_AS_TABLE = " (it is an SQLite file, an hwl store: give it as --store)"


class EmptyStoreError(LatencyTableError):
    """A store with no latency of the space yet (a first campaign stopped before its first result, say)."""


def help_table(space: str) -> pd.DataFrame:
    """HELP's latency table of ``space`` (27 devices), shipped with hwl; a fresh copy."""
    return _help_table_cached(get_space(space).NAME).copy()


@functools.lru_cache(maxsize=2)
def _help_table_cached(space: str) -> pd.DataFrame:
    path = resources.files("predictors").joinpath(f"data/{space}_latency.parquet")
    with resources.as_file(path) as file:
        raw = pd.read_parquet(file)
    # The shipped keys are known good: map them without re-parsing every row.
    if space == "nb201":
        arch = raw["arch_index"].astype(np.int64)
    else:
        arch = raw["arch_ops"].astype(str)
    table = pd.DataFrame({"arch": arch.to_numpy(), "device": raw["device"].astype(str).to_numpy(),
                          "latency_ms": raw["latency_ms"].to_numpy(np.float64)})
    table["source"] = "help"
    return table


def help_devices(space: str) -> pd.DataFrame:
    """Rows of the shipped ``devices.csv`` for ``space`` (family, batch size, origin, ...)."""
    name = get_space(space).NAME
    with resources.as_file(resources.files("predictors").joinpath("data/devices.csv")) as file:
        devices = pd.read_csv(file)
    return devices[devices["space"] == name].reset_index(drop=True)


def read_frame(path: Path, what: str, error=LatencyTableError) -> pd.DataFrame:
    """A side table (accuracies, proxy scores) as pandas reads it: Parquet for .parquet and .pq (the
    names ``hwl zcp --out`` writes), else CSV; a file that is neither is one line naming it."""
    parquet = path.suffix.lower() in (".parquet", ".pq")  # ACC.PARQUET too, as a latency table's name is read
    try:
        return pd.read_parquet(path) if parquet else pd.read_csv(path)
    except (OSError, ValueError) as exc:  # pandas' ParserError, a UnicodeDecodeError, pyarrow's ArrowInvalid
        raise error(f"{what} {path}: not a readable {'Parquet' if parquet else 'CSV'} table "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def numeric_columns(raw: pd.DataFrame, columns: list, where: str, error=LatencyTableError, *,
                    finite: bool = False) -> pd.DataFrame:
    """``columns`` of ``raw`` as float64; an empty cell stays missing, any other value that is not a
    number (or, with ``finite``, an infinity) is refused naming the column and its first data row."""
    table = raw[columns].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    bad = table.isna() & raw[columns].notna()
    if finite:
        bad |= np.isinf(table)
    for col in bad.columns[bad.any().to_numpy()]:
        row = int(np.flatnonzero(bad[col].to_numpy())[0])
        raise error(f"{where}: {int(bad[col].sum())} {col} value(s) are not numbers "
                    f"(first at data row {row + 1}: {_cell(raw[col].iloc[row])!r})")
    return table


def _cell(value):
    """A table cell as the user wrote it: numpy 2's repr of a number read from a CSV is np.float64(0.0)."""
    return value.item() if isinstance(value, np.generic) else value


def read_table(path, space: str, *, source: str | None = None, device: str | None = None,
               devices=None) -> pd.DataFrame:
    """A latency table from a CSV or Parquet file, keys resolved in ``space``.

    ``device`` names the device of a one-device file without a ``device`` column; ``devices``: those the
    caller reads (default all), so the drift warning of an export names no device the command leaves alone.

    Raises
    ------
    LatencyTableError
        The file is missing, unreadable, lacks a column, or has no rows.
    spaces.errors.ArchError
        An architecture key does not belong to ``space``.
    """
    path = Path(path)
    if why := why_not_a_file(path):
        raise LatencyTableError(f"latency table {path} {why}")
    from harness.export_tables import drifted_labels, one_setting_per_device, read_table_frame, \
        refuse_counts_as_latencies

    suffixes = "".join(path.suffixes).lower()
    try:
        parquet = suffixes.endswith(".parquet") or suffixes.endswith(".pq")
        if not parquet and ".csv" not in suffixes:
            raise LatencyTableError(f"latency table {path}: unknown format; use .csv, .csv.gz or .parquet"
                                    + (_STORE_AS_TABLE if is_sqlite(path) else ""))
        raw = read_table_frame(path, parquet=parquet, error=LatencyTableError)  # read as `hwl data import` reads it
    except (OSError, ValueError) as exc:
        if isinstance(exc, LatencyTableError):
            raise
        raise LatencyTableError(f"cannot read latency table {path}: {exc}") from exc
    drifted = drifted_labels(raw)  # the export keeps the flag a store's table is warned of (store_table)
    raw = _own_export_as_long(raw, path, device)
    if "device" not in raw.columns and device is not None:
        raw = raw.assign(device=device)
    one_setting_per_device(raw, path.name, LatencyTableError)  # a table of one's own with batch_size 1 and 8 rows
    table = from_frame(raw, space, source=source or path.name, where=str(path), warn_repeats=True)
    refuse_counts_as_latencies(table["device"], table["latency_ms"], str(path), LatencyTableError)
    warn_drifted(drifted, str(path), devices)  # once the table passed: a refused one gets its one line alone
    return table


def _own_export_as_long(raw: pd.DataFrame, path: Path, device: str | None = None) -> pd.DataFrame:
    """`hwl campaign export`'s files as long tables: a Parquet export's accepted labels (one device setting
    each), a wide table's filled cells (arch columns and one column per device, none named device or latency_ms)."""
    from harness.export_tables import accepted_labels, is_parquet_export, looks_wide, wide_cells

    if is_parquet_export(raw):
        answered = accepted_labels(raw, path, error=LatencyTableError)
        if device is not None and device not in set(answered["device"]) and device in set(raw["device"]):
            tried = raw.loc[raw["device"] == device, "outcome"] if "outcome" in raw.columns else raw["device"]
            outcomes = ", ".join(f"{n} {o}" for o, n in tried.value_counts().items())
            raise LatencyTableError(f"{path} holds {len(tried)} attempts of {device}, none accepted ({outcomes}): "
                                    "its campaign has no latency of it yet (hwl campaign status says why)")
        if answered.empty:  # else 'has no rows', of a file with rows
            raise LatencyTableError(f"{path}: an hwl export whose {len(raw)} results include no accepted latency "
                                    "(every job failed or is not done yet)")
        return answered
    if looks_wide(raw):
        long = wide_cells(raw, str(path), error=LatencyTableError)
        if device is not None and device not in set(long["device"]):  # likely a one-device table's misnamed column
            raise LatencyTableError(f"{path} has no device or latency_ms column, so it reads as one latency column "
                                    f"per device ({', '.join(map(str, pd.unique(long['device'])))}), and none is "
                                    f"{device}: name a one-device table's latency column latency_ms")
        return long
    return raw


def from_frame(raw: pd.DataFrame, space: str, *, source: str = "table", where: str = "table",
               warn_repeats: bool = False) -> pd.DataFrame:
    """Normalise any frame with a device, a latency and an architecture column (see module doc);
    ``warn_repeats`` says in a warning how many archs a device has on more than one row."""
    missing = [c for c in ("device", "latency_ms") if c not in raw.columns]
    arch_col = next((c for c in ARCH_COLUMNS if c in raw.columns), None)
    if arch_col is None:
        missing.append(" or ".join(ARCH_COLUMNS))
    if missing:
        raise LatencyTableError(f"{where} lacks column(s) {', '.join(missing)}; it has "
                                f"{', '.join(map(str, raw.columns)) or 'none'}{misnamed_columns(raw.columns)}")
    if len(raw) == 0:
        raise LatencyTableError(f"{where} has no rows")
    blank = raw["device"].isna() | (raw["device"].astype(object).astype(str).str.strip() == "")
    if blank.any():  # pandas keeps a missing cell missing through astype(str): a device named nan, then a traceback
        raise LatencyTableError(f"{where}: {int(blank.sum())} row(s) have no device (first at data row "
                                f"{int(np.flatnonzero(blank.to_numpy())[0]) + 1}); fill the device column")
    arch = paired_keys(raw, arch_col, space, where)
    latency = pd.to_numeric(raw["latency_ms"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(latency) | (latency <= 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LatencyTableError(
            f"{where}: {int(bad.sum())} latency_ms value(s) are not positive numbers "
            f"(first at data row {row + 1}: {_cell(raw['latency_ms'].iloc[row])!r})")
    table = pd.DataFrame({"arch": arch, "device": raw["device"].astype(str).str.strip().to_numpy(),
                          "latency_ms": latency})
    table["source"] = raw["source"].astype(str).to_numpy() if "source" in raw.columns else source
    return _reduce_repeats(table, where if warn_repeats else None)


def misnamed_columns(columns) -> str:
    """Why columns the file has were not found: a file separated by ';' or tabs (a spreadsheet's export) reads as
    one column, and a name's case or a space around it does not show in the list of columns."""
    names = [str(c) for c in columns]
    for sep, what in ((";", "semicolons"), ("\t", "tabs")):
        if any(sep in name for name in names):
            return f" (a file separated by {what}? hwl reads comma-separated CSV)"
    wanted = {"device", "latency_ms", *ARCH_COLUMNS}
    near = [repr(name) for name in names if name not in wanted and name.strip().lower() in wanted]
    return f" ({', '.join(near)}: rename to the lower-case name without spaces)" if near else ""


def resolve_keys(keys: pd.Series, space: str, *, where: str = "table") -> list:
    """Canonical keys of ``space`` for a column of indices, arch strings or FBNet keys."""
    mod = get_space(space)
    resolve = nb201.resolve if mod is nb201 else fbnet.canonical
    empty = keys.isna() | (keys.astype(object).astype(str).str.strip() == "")
    if empty.any():  # pandas 3 keeps a missing cell missing: it was named as the architecture nan
        raise ArchError(f"{where}: {int(empty.sum())} row(s) have no architecture (first at data row "
                        f"{int(np.flatnonzero(empty.to_numpy())[0]) + 1}); fill the column or remove the row")
    uniques = pd.unique(keys.astype(object))
    mapping = {}
    for key in uniques:
        try:
            mapping[key] = resolve(_whole(key.item() if isinstance(key, np.generic) else key))
        except ArchError as exc:
            other = "fbnet" if mod is nb201 else "nb201"
            hint = f" (it looks like a {other} architecture)" if _belongs_to(key, other) else ""
            raise ArchError(f"{where}: {key!r} is not a {mod.NAME} architecture{hint}: {exc}") from None
    return [mapping[k] for k in keys.astype(object)]


def paired_keys(raw: pd.DataFrame, arch_col: str, space: str, where: str, error=LatencyTableError) -> list:
    """``resolve_keys`` of ``raw[arch_col]``; a table that names each architecture twice (an arch_index beside its
    arch_str) must name one architecture in both columns in every row (accuracy and proxy tables were read by
    their index alone: a string column one row off went unseen, and each arch got its neighbour's accuracy)."""
    arch = resolve_keys(raw[arch_col], space, where=f"{where}, column {arch_col}")
    first, second = PAIRED_COLUMNS[get_space(space).NAME]
    if arch_col == first and second in raw.columns:
        try:
            check_same_archs(get_space(space).NAME, arch, raw[second])
        except ArchError as exc:
            raise error(f"{where}: {exc}") from None
    return arch


def one_row_per_arch(table: pd.DataFrame, where: str, what: str, error=LatencyTableError) -> pd.DataFrame:
    """``table`` (indexed by arch) with a repeated row dropped; an arch given in rows of different values (``what``:
    accuracies, scores) is refused: which one is right is the user's call, and keeping the first (as proxy tables
    did) would depend on the row order."""
    repeated = table[table.index.duplicated(keep=False)]
    if len(repeated):
        differ = repeated.groupby(level=0).nunique(dropna=False).gt(1).any(axis=1)
        if differ.any():
            arch = differ[differ].index[0]
            raise error(f"{where}: {int(differ.sum())} architecture(s) appear in rows with different {what} "
                        f"(first: arch {arch}: {repeated.loc[[arch]].to_dict('records')}); keep one row each")
    return table[~table.index.duplicated()]


def _whole(key):
    """An index column that held an empty cell (or was written as floats) reads as floats: 1.0 is index 1."""
    return int(key) if isinstance(key, float) and key.is_integer() else key


def _belongs_to(key, space: str) -> bool:
    try:
        (nb201.resolve if space == "nb201" else fbnet.canonical)(key)
        return True
    except (ArchError, TypeError, ValueError):
        return False


def _reduce_repeats(table: pd.DataFrame, where: str | None = None) -> pd.DataFrame:
    repeated = table.duplicated(["arch", "device"])
    if not repeated.any():
        return table.reset_index(drop=True)
    if where is None:  # a store's table: an arch measured again (after a drift, by a later campaign) is expected
        log.info("reducing repeated (arch, device) rows to their median latency")
    else:  # a file's: two campaigns' export, or a table pasted twice; fewer measurements than rows either way
        archs = table[repeated].drop_duplicates(["arch", "device"])["device"].value_counts(sort=False)
        log.warning("%s: %d architectures appear on more than one row of a device (%s); each is taken at the median "
                    "of its rows' latencies", where, int(archs.sum()), ", ".join(f"{d} {n}" for d, n in archs.items()))
    return (table.groupby(["arch", "device"], sort=False, as_index=False)
            .agg(latency_ms=("latency_ms", "median"), source=("source", "first")))


def store_table(path, space: str, devices=None) -> pd.DataFrame:
    """The latencies a harness store holds for ``space`` (works while a campaign writes)."""
    path = Path(path)
    if why := why_not_a_file(path):  # a folder was said not to exist, which sent the user looking for a typo
        raise LatencyTableError(f"store {path} {why}")
    from harness.store import Store, drifted_counts  # imported here: predictors work without the harness store

    store = Store(path, readonly=True)  # read-only: safe while a campaign is still writing
    try:
        labels = store.latency_labels(space)
    finally:
        getattr(store, "close", lambda: None)()
    if labels is None or len(labels) == 0:
        raise EmptyStoreError(f"store {path} holds no {space} latencies yet")
    warn_drifted(drifted_counts(labels), f"store {path}", devices)
    return from_frame(labels.drop(columns="drifted"), space, source=f"store:{path.name}", where=f"store {path}")


def warn_drifted(counts: dict, where: str, devices=None) -> None:
    """Warn that ``counts`` (device -> latencies flagged ``canary_drift``, ``harness.store.drifted_counts``) are used
    as they are: only `hwl onboard` can measure them again, a table is read as it stands."""
    counts = {d: n for d, n in counts.items() if devices is None or d in devices}
    if counts:
        log.warning("%s: %s measured while the device drifted (canary_drift: its drift canary was "
                    "off its baseline), read as measured: %s; measure those archs again for a clean table",
                    where, count(sum(counts.values()), "latency was", "latencies were"),
                    ", ".join(f"{d} {n}" for d, n in counts.items()))


def load_table(space: str, *, path=None, store=None, device: str | None = None, devices=None) -> pd.DataFrame:
    """A table from a file, a store, or (neither given) the shipped HELP table. ``devices``: those the caller
    reads (default all), so a store's drift warning names no device the command leaves alone."""
    if path is not None and store is not None:
        raise LatencyTableError("give a table file or --store, not both")
    if path is not None:
        return read_table(path, space, device=device, devices=devices)
    if store is not None:
        return store_table(store, space, devices)
    return help_table(space)


def devices_of(table: pd.DataFrame) -> list[str]:
    """Device names of a table, in order of first appearance."""
    return list(pd.unique(table["device"]))


def check_devices(table: pd.DataFrame, devices, *, what: str = "device") -> list[str]:
    """``devices`` as a list, each present in ``table`` and named once; raises naming the valid ones."""
    devices = [devices] if isinstance(devices, str) else list(devices)
    if not devices:
        raise LatencyTableError(f"no {what}s given")
    twice = next((d for i, d in enumerate(devices) if d in devices[:i]), None)
    if twice is not None:  # a table keyed by device would silently keep one of them
        raise LatencyTableError(f"{what} {twice!r} is named twice")
    valid = devices_of(table)
    unknown = [d for d in devices if d not in set(valid)]
    if unknown:
        alike = [f"{v!a} differs from {d!r} only in case, spaces or Unicode form (give it as the table has it)"
                 for d in unknown for v in valid if _plain_name(v) == _plain_name(d)]
        raise LatencyTableError(
            f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            + (f"the table's {'; '.join(alike)}" if alike else f"valid devices: {', '.join(sorted(valid))}"))
    return devices


def _plain_name(name) -> str:
    """A device name as a person reads it: a name typed in NFC and a file's NFD (macOS) or a stray
    space look the same on screen, and the error must say which one the table holds."""
    return unicodedata.normalize("NFC", str(name)).strip().casefold()


def select_devices(table: pd.DataFrame, devices) -> pd.DataFrame:
    """Rows of ``devices`` only (checked)."""
    devices = check_devices(table, devices)
    return table[table["device"].isin(devices)].reset_index(drop=True)


def by_device(table: pd.DataFrame, devices=None) -> dict[str, pd.Series]:
    """device -> ``Series`` of latency_ms indexed by arch (the shape methods take), in canonical arch
    order (:func:`canonical_order`): seeded picks go by position, so the same data in another row
    order (a shuffled file, a store) must give the same Series."""
    missing = [c for c in ("arch", "device", "latency_ms") if c not in table.columns]
    if missing:  # a file's own columns (arch_index, arch_str): KeyError 'arch'
        raise LatencyTableError(f"by_device reads a table in hwl's shape (arch, device, latency_ms), and this one "
                                f"lacks {', '.join(missing)}; it has {', '.join(map(str, table.columns))}: read the "
                                "file with read_table(path, space), or the frame with from_frame(frame, space), first")
    devices = devices_of(table) if devices is None else check_devices(table, devices)
    if len(table) == 0:
        raise LatencyTableError("the latency table is empty")
    out = {}
    for device, rows in table[table["device"].isin(devices)].groupby("device", sort=False, observed=True):
        rows = rows.iloc[canonical_order(rows["arch"])]
        out[str(device)] = pd.Series(rows["latency_ms"].to_numpy(np.float64), index=pd.Index(rows["arch"].tolist()),
                                     name=str(device))
    return {d: out[d] for d in devices}


def canonical_order(archs) -> np.ndarray:
    """Positions that put ``archs`` in the canonical order: NB201 by index; FBNet by HELP's arch id
    (the shipped table's row order, so results on it stay as they were), keys HELP lacks after those, sorted."""
    keys = pd.Index(archs)
    if pd.api.types.infer_dtype(keys, skipna=False) == "integer":  # NB201 indices, even in an object column
        return np.argsort(keys.to_numpy(np.int64), kind="stable")
    ids = _help_fbnet_ids()
    keys = keys.astype(str)
    rank = ids.reindex(keys).to_numpy(np.float64, copy=True)
    other = np.isnan(rank)
    if other.any():  # after HELP's ids, in sorted key order
        rank[other] = len(ids) + np.unique(keys[other].to_numpy(), return_inverse=True)[1]
    return np.argsort(rank, kind="stable")


@functools.lru_cache(maxsize=1)
def _help_fbnet_ids() -> pd.Series:
    """HELP's arch id (row of HELP's FBNet tables) by FBNet key, from the shipped table."""
    with resources.as_file(resources.files("predictors").joinpath("data/fbnet_latency.parquet")) as file:
        ids = pd.read_parquet(file, columns=["arch_id", "arch_ops"]).drop_duplicates("arch_id")
    return pd.Series(ids["arch_id"].to_numpy(np.int64), index=ids["arch_ops"].astype(str).to_numpy())


__all__ = ["ARCH_COLUMNS", "COLUMNS", "EmptyStoreError", "LatencyTableError", "by_device", "canonical_order",
           "check_devices", "devices_of", "from_frame", "help_devices", "help_table", "load_table", "misnamed_columns",
           "one_row_per_arch", "paired_keys", "read_table", "resolve_keys", "select_devices", "store_table",
           "warn_drifted"]
