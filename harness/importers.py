"""Import public latency tables into a store, so public and own data live side by side.

Two kinds of input:

* a long table (Parquet or CSV) with ``device``, ``latency_ms`` and an architecture column:
  ``arch_index`` or ``arch_str`` (NB201), ``arch_ops`` or ``op_idx_key`` (FBNet keys: op names, op indices)
  or ``arch`` (either), as in
  ``shared/data/nb201_latency.parquet`` and ``fbnet_latency.parquet``; hwl's own Parquet export
  (``hwl campaign export``: its accepted labels) is read as one, and with ``wide`` a wide table
  (one column per device, as ``hwl campaign export --format help`` and ``shared/data/*_wide.csv.gz``);
* HELP's original ``latency/<device>.pt`` files: a list with one latency (ms) per row, where
  row i is the architecture given by HELP's index mapping: ``str_arch2idx.pt`` (NB201: arch
  string -> row) or ``arch.pt`` (FBNet: a list of 22 op indices per row), found next to the
  file or in its parent folder (HELP's layout) unless given explicitly.

Rows are stored as imported, with their source (the file name). A device's rows that the store holds
already, from a file of any name, are the same import again and left as they are; a file of the same name
with other rows of a device is a new version of it, whose rows replace the earlier ones (a warning says so).
A device name that another file already brought other rows of, or that a campaign of the store measures, is
refused (``check_sources``): the store's median would pool two tables, maybe two machines. A bad row
(architecture, device, a latency that is not a positive number, an arch_index and an arch_str, or an
arch_ops and an op_idx_key, naming different architectures) refuses the whole file, naming the row.
"""
from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.export_tables import (KEY_COLUMNS, accepted_labels, drifted_labels, is_parquet_export,
                                   one_setting_per_device, read_table_frame, refuse_counts_as_latencies, wide_cells)
from harness.model_file import torch_error
from harness.paths import is_sqlite, why_not_a_file
from harness.store import Store
from harness.text import count
from spaces import ArchError, fbnet, nb201
from spaces.columns import PAIRED_COLUMNS, check_same_archs

log = logging.getLogger(__name__)

NB201_MAPPING = "str_arch2idx.pt"
FBNET_MAPPING = "arch.pt"


class TableImportError(UserError):
    """A table that cannot be imported; the message names the file and what is missing."""


def import_file(store: Store, path, *, space: str | None = None, device: str | None = None,
                mapping=None, wide: bool = False) -> tuple[str, int]:
    """Import one file; returns (space, number of rows). See the module docstring."""
    space, rows = read_table_file(path, space=space, device=device, mapping=mapping, wide=wide)
    with store.transaction():  # checked and stored under one write lock (`hwl data import` says why)
        check_sources(store, [(path, space, rows)])
        store_table(store, path, space, rows)
    return space, len(rows)


def read_table_file(path, *, space: str | None = None, device: str | None = None,
                    mapping=None, wide: bool = False) -> tuple[str, list[tuple[str, str, float]]]:
    """(space, rows (arch key, device, ms)) of one latency file, checked; nothing is stored."""
    path = Path(path)
    if device is not None and not device.strip():
        raise TableImportError("the device name (--device) is empty")
    if why := why_not_a_file(path):
        raise TableImportError(f"{path} {why}")
    # lower case: a file named on Windows (LAB.CSV) is the same table; .pq as predictors.data reads it
    suffix = ("".join(path.suffixes[-2:]) if path.suffix.lower() == ".gz" else path.suffix).lower()
    if suffix == ".pt":
        space, rows = read_help_pt(path, space=space, device=device, mapping=mapping)
    elif suffix in (".parquet", ".pq", ".csv", ".csv.gz"):
        parquet = suffix in (".parquet", ".pq")
        try:
            frame = read_table_frame(path, parquet=parquet, error=TableImportError)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid and pandas' ParserError are ValueErrors
            raise TableImportError(f"{path}: not a readable {suffix} table ({type(exc).__name__}: {exc})") from None
        drifted = drifted_labels(frame)
        frame = _as_long_table(frame, path, device=device, wide=wide)
        space, rows = rows_from_long_table(frame, source=path.name, space=space, device=device)
        if drifted and device is not None:  # a one-device table stored under --device's name
            drifted = {device: sum(drifted.values())}
        _warn_drift_not_kept(drifted, path)  # once its rows passed: a refused file gets its one line alone
    else:
        store = is_sqlite(path)  # a store's campaigns go to another as their export (hwl campaign export)
        raise TableImportError(f"{path}: unknown table format {suffix!r}; valid: .parquet, .csv, .csv.gz, HELP .pt"
                               + (" (it is an SQLite file, an hwl store: export its campaigns with hwl campaign "
                                  "export, and import that file)" if store else ""))
    if not rows:  # an empty or header-only file, an export without accepted labels, a wide table of empty cells
        raise TableImportError(f"{path}: holds no latencies; nothing imported")
    return space, rows


def store_table(store: Store, path, space: str, rows) -> dict[str, str]:
    """Store the rows ``read_table_file`` read from ``path``, once ``check_sources`` passed them (the caller checks,
    so that a command of several files checks all before it stores any); returns device -> source of the devices
    whose rows the store held already, from a file of any name (the same table again), which are left as they are.
    A file of the same name holding other rows of a device is a new version of it: its rows replace the earlier
    ones."""
    path = Path(path)
    by_device = _rows_by_device(rows)
    same = {d: src for d in by_device if (src := _stored_as(store, space, d, by_device[d]))}
    new = [row for row in rows if row[1] not in same]
    n, replaced = store.add_imported(space, new, source=path.name) if new else (0, 0)
    if same:
        log.info("%s: the %s rows of %s are already in the store (imported from %s); left as they are", path,
                 space, _some(sorted(same)), ", ".join(sorted(set(same.values()))))
    if replaced:  # same name, other rows: a new version of that file
        log.warning("%s: a new version of the file %s imported earlier: its %d %s rows of %s replaced by %d", path,
                    path.name, replaced, space, _some(sorted({d for _, d, _ in new})), n)
    log.info("imported %s from %s", count(n, f"{space} row", f"{space} rows"), path)
    return same


def _rows_by_device(rows) -> dict[str, list[tuple[str, float]]]:
    """device -> its (arch, latency_ms) rows, sorted: a table's content, whatever its row order."""
    out: dict[str, list[tuple[str, float]]] = {}
    for arch, device, ms in rows:
        out.setdefault(device, []).append((str(arch), float(ms)))
    return {d: sorted(r) for d, r in out.items()}


def _stored_as(store: Store, space: str, device: str, content: list[tuple[str, float]]) -> str | None:
    """The source (file name) the store holds exactly ``content`` of ``device`` from, if any."""
    stored: dict[str, list[tuple[str, float]]] = {}
    for source, arch, ms in store.db.execute("SELECT source, arch, latency_ms FROM imported WHERE space = ? AND "
                                             "device = ?", (space, device)):
        stored.setdefault(source, []).append((arch, float(ms)))
    return next((src for src, got in stored.items() if len(got) == len(content) and sorted(got) == content), None)


_IN_COMMAND = " (earlier in this command)"


def check_sources(store: Store | None, tables) -> None:
    """Refuse a table (path, space, rows) naming a device that the store, or an earlier table of ``tables``,
    holds from a file of another name, or that a campaign of the store measures: the predictor commands take one
    median per (arch, device), which would pool the two tables (other settings, another lab). A file of the same
    name replaces its rows instead, and the same rows of a device under any name are the same table again."""
    given: dict[tuple[str, str], tuple[str, list]] = {}  # (space, device) -> (source, rows) of earlier tables
    for path, space, rows in tables:
        source = Path(path).name
        by_device = _rows_by_device(rows)
        clashes = []
        for device, content in by_device.items():
            earlier, theirs = given.get((space, device), (source, content))
            if earlier != source and theirs != content:
                clashes.append((device, earlier + _IN_COMMAND, len(theirs)))
        if store is not None:
            _check_not_measured(store, source, space, list(by_device))
            stored = store.query("SELECT device, source, count(*) AS n FROM imported WHERE space = ? AND source != ? "
                                 "GROUP BY device, source ORDER BY min(rowid)", (space, source))
            stored = stored[stored["device"].isin(list(by_device))]
            held = {d: _stored_as(store, space, d, by_device[d]) for d in set(stored["device"])}  # same rows?
            clashes += [(d, src, int(n)) for d, src, n in stored.itertuples(index=False) if held[d] is None]
        if clashes:
            raise TableImportError(_clash_message(source, space, clashes))
        given.update({(space, d): (source, content) for d, content in by_device.items()})


def _check_not_measured(store: Store, source: str, space: str, devices: list[str]) -> None:
    """Refuse a table naming a device that a campaign of the store measures: an imported table carries no
    settings, so the predictor commands would take one median over both (and refuse the store then)."""
    planned = store.query(
        "SELECT d.device, c.name, (SELECT count(*) FROM results r JOIN jobs j ON r.job_id = j.id WHERE "
        "j.campaign_id = c.id AND j.device = d.device AND r.accepted = 1 AND r.label_ms IS NOT NULL) AS n "
        "FROM campaign_devices d JOIN campaigns c ON c.id = d.campaign_id WHERE c.space = ? ORDER BY c.id",
        (space,))
    planned = planned[planned["device"].isin(devices)]
    if planned.empty:
        return
    device = planned["device"].iloc[0]  # the first one named; the others' campaigns are listed with it
    mine = planned[planned["device"] == device]
    campaigns = ", ".join(f"{name} ({n} {space} latenc{'y' if n == 1 else 'ies'})"
                          for name, n in zip(mine["name"], mine["n"]))
    others = sorted(set(planned["device"]) - {device})
    also = f" (so are {_some(others)})" if others else ""
    raise TableImportError(
        f"{source}: device {device} is measured by campaign{'s' if len(mine) > 1 else ''} {campaigns} in this "
        f"store{also}; an imported table carries no settings, so the predictor commands would pool its latencies "
        f"with the measured ones: import it under another device name (--device NAME names a one-device table's "
        f"rows, e.g. --device {device}-imported); nothing imported")


def _clash_message(source: str, space: str, clashes: list[tuple[str, str, int]]) -> str:
    by_file: dict[str, tuple[list[str], int]] = {}  # earlier file -> (its devices this table names, their rows)
    for device, earlier, n in clashes:
        devices, total = by_file.get(earlier, ([], 0))
        by_file[earlier] = (devices + [device], total + n)
    all_devices = list(dict.fromkeys(d for d, _, _ in clashes))
    subject = f"device {all_devices[0]} is" if len(all_devices) == 1 else f"{len(all_devices)} devices are"
    files = " and ".join(
        f"{earlier} ({'' if len(all_devices) == 1 else _some(devices) + ': '}{n} {space} "
        f"latenc{'y' if n == 1 else 'ies'})" for earlier, (devices, n) in by_file.items())
    stored = any(not earlier.endswith(_IN_COMMAND) for earlier in by_file)  # a stored file may be replaced
    replace = ", or give it the earlier file's name to replace that file's rows" if stored else ""
    return (f"{source}: {subject} already imported from {files}; their latencies would be pooled into one median "
            f"per architecture, so import it under another device name (--device NAME names a one-device table's "
            f"rows){replace}; nothing imported")


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _as_long_table(frame: pd.DataFrame, path: Path, *, device: str | None, wide: bool) -> pd.DataFrame:
    """hwl's own exports as long tables (``harness.export_tables``): a Parquet export gives its accepted
    labels; with ``wide``, a wide table (``hwl campaign export --format help``, HELP's ``*_wide.csv.gz``)
    one row per filled cell. Any other table is returned as it is."""
    if is_parquet_export(frame):
        return accepted_labels(frame, path, error=TableImportError)
    if not wide:  # a table of one's own may carry the export's settings columns (batch_size) too
        one_setting_per_device(frame if device is None else frame.assign(device=device), path.name, TableImportError)
        return frame
    # A wide table looks like an accuracy or proxy table (arch columns, then numbers), hence the flag.
    if set(frame.columns) & {"device", "latency_ms"}:
        raise TableImportError(f"{path.name}: --wide takes a table with one latency column per device; this one "
                               "has a 'device' or 'latency_ms' column: leave out --wide")
    long = wide_cells(frame, path.name, error=TableImportError)
    named = list(dict.fromkeys(long["device"].astype(str)))
    if device is not None and len(named) > 1:  # --device renames a one-device table's column, as a long table's
        shown = ", ".join(named[:5]) + (", ..." if len(named) > 5 else "")
        raise TableImportError(f"{path.name}: it has {len(named)} device columns ({shown}) and --device {device} "
                               "would merge them into one; import it without --device, or one device's column at "
                               "a time")
    return long


def _warn_drift_not_kept(counts: dict[str, int], path: Path) -> None:
    """An export's ``canary_drift`` latencies lose their flag in the store (an imported table keeps latencies alone),
    so the predictor commands' warning about them (``predictors.data.warn_drifted``) is said here, once."""
    if counts:
        log.warning("%s: %s measured while the device drifted (canary_drift: its drift canary was off its "
                    "baseline): %s; the store keeps no flags of an imported table, so nothing reading it will say so "
                    "again; measure those archs again for a clean table", path.name,
                    count(sum(counts.values()), "latency was", "latencies were"),
                    ", ".join(f"{d} {n}" for d, n in counts.items()))


def rows_from_long_table(frame: pd.DataFrame, *, source: str, space: str | None = None,
                         device: str | None = None) -> tuple[str, list[tuple[str, str, float]]]:
    """(space, [(arch key, device, latency_ms)]) from a long table."""
    cols = set(frame.columns)
    if "latency_ms" not in cols:
        from predictors.data import misnamed_columns  # as the predictor commands say it: a file split by ';'

        hint = ("; a wide table (one column per device) needs --wide" if "device" not in cols and device is None
                and cols & set(KEY_COLUMNS) else misnamed_columns(frame.columns))
        raise TableImportError(f"{source}: no 'latency_ms' column (columns: {', '.join(map(str, frame.columns))})"
                               + hint)
    if "device" not in cols and device is None:
        raise TableImportError(f"{source}: no 'device' column; name the device with --device")
    if space is None:
        space = _space_of(frame, source)
    if space == "nb201":
        if "arch_index" in cols:
            keys = _keys(frame["arch_index"], lambda i: str(nb201.check_index(_whole_number(i))), source, "arch_index")
            _check_paired_column(space, keys, frame, source)
        elif "arch_str" in cols:
            keys = _keys(frame["arch_str"].astype(str), lambda a: str(nb201.to_index(a)), source, "arch_str")
        elif "arch" in cols:
            keys = _keys(frame["arch"], lambda a: str(nb201.resolve(a)), source, "arch")
        else:
            raise TableImportError(f"{source}: an nb201 table needs an 'arch_index', 'arch_str' or 'arch' column "
                                   f"(columns: {', '.join(map(str, frame.columns))})")
    elif space == "fbnet":
        column = next((c for c in ("arch_ops", "op_idx_key", "arch") if c in cols), None)
        if column is None:
            raise TableImportError(f"{source}: an fbnet table needs an 'arch_ops', 'op_idx_key' or 'arch' column")
        keys = _keys(frame[column].astype(str), functools.lru_cache(maxsize=None)(fbnet.canonical), source, column)
        if column == "arch_ops":
            _check_paired_column(space, keys, frame, source)
    else:
        raise TableImportError(f"unknown search space {space!r}; valid: nb201, fbnet")
    if device is not None:
        _check_one_device(frame, device, source)
        devices = [device] * len(frame)
    else:
        names = frame["device"]
        blank = names.isna() | (names.astype(str).str.strip() == "")
        if blank.any():
            raise TableImportError(f"{source}: {count(int(blank.sum()), 'row has', 'rows have')} no device (first at "
                                   f"data row {_row(frame, blank)}); fill the device column or name it with --device")
        devices = names.astype(str).str.strip().tolist()  # 'pi ,' names pi too
    latencies = pd.to_numeric(frame["latency_ms"], errors="coerce")
    bad = ~(latencies > 0) | ~np.isfinite(latencies)
    if bad.any():  # one would break every later read of the store
        value = frame["latency_ms"][bad].iloc[0]
        what = count(int(bad.sum()), "latency_ms value is", "latency_ms values are")
        raise TableImportError(f"{source}: {what} missing, not a number or not positive (first at data row "
                               f"{_row(frame, bad)}: "
                               f"{repr(value) if isinstance(value, str) else value})")
    refuse_counts_as_latencies(devices, latencies, source, TableImportError)
    seen: dict[tuple[str, str], int] = {}
    for row, pair in enumerate(zip(keys, devices), start=1):
        if pair in seen:  # which one to keep is the user's call
            raise TableImportError(f"{source}: data rows {seen[pair]} and {row} both give arch {pair[0]} on device "
                                   f"{pair[1]!r}; keep one")
        seen[pair] = row
    return space, list(zip(keys, devices, latencies.astype(float).tolist()))


def _check_one_device(frame: pd.DataFrame, device: str, source: str) -> None:
    """--device names every row: over a device column of several devices it would merge their latencies."""
    if "device" not in frame.columns:
        return
    names = frame["device"].dropna().astype(str).str.strip()
    named = sorted(set(names[names != ""]))  # empty cells are the ones --device fills
    if len(named) > 1:
        shown = ", ".join(named[:5]) + (", ..." if len(named) > 5 else "")
        raise TableImportError(f"{source}: its device column holds {len(named)} devices ({shown}) and --device "
                               f"{device} would merge them into one; import it without --device, or one device's "
                               "rows at a time")


def _space_of(frame: pd.DataFrame, source: str) -> str:
    """The space a table's architecture column names. A lone ``arch`` column may hold either space's keys:
    its first entry decides (an NB201 index or arch string is no FBNet key)."""
    cols = set(frame.columns)
    if cols & {"arch_index", "arch_str"}:
        return "nb201"
    if cols & {"arch_ops", "op_idx_key"}:
        return "fbnet"
    if "arch" in cols:
        first = frame["arch"].iloc[0] if len(frame) else None
        try:
            nb201.resolve(first.item() if isinstance(first, np.generic) else first)
            return "nb201"
        except (ArchError, ValueError, TypeError):
            return "fbnet"
    raise TableImportError(f"{source}: no architecture column; expected arch_index or arch_str "
                           "(nb201), arch_ops, op_idx_key or arch (fbnet)")


def _check_paired_column(space: str, keys: list[str], frame: pd.DataFrame, source: str) -> None:
    """A second column naming the architectures (arch_str beside arch_index, op_idx_key beside arch_ops) must
    name the same ones as ``keys``."""
    second = PAIRED_COLUMNS[space][1]
    if second in frame.columns:
        try:
            check_same_archs(space, keys, frame[second].astype(str))
        except ArchError as exc:
            raise TableImportError(f"{source}: {exc}") from None


def _keys(values: pd.Series, convert, source: str, column: str) -> list[str]:
    """Architecture keys of a column, an error naming the row of the first bad one."""
    keys = []
    for row, value in enumerate(values, start=1):
        if pd.isna(value) or (isinstance(value, str) and not value.strip()):  # pandas 3: NaN, printed as nan
            raise TableImportError(f"{source}: data row {row}: {column} is empty; fill it or remove the row")
        try:
            keys.append(convert(value))
        except (ArchError, ValueError, TypeError) as exc:
            raise TableImportError(f"{source}: data row {row}: {column} {value!r}: {exc}") from None
    return keys


def _whole_number(value) -> int:
    number = float(value)  # ValueError for text, as "x"
    if not number.is_integer():  # also NaN: an empty cell
        raise ValueError("not a whole number")
    return int(number)


def _row(frame: pd.DataFrame, mask: pd.Series) -> int:
    """The data row (from 1, not counting a header) of the first true entry of ``mask``."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def read_help_pt(path: Path, *, space: str | None = None, device: str | None = None,
                 mapping=None) -> tuple[str, list[tuple[str, str, float]]]:
    """Rows of one HELP ``latency/<device>.pt`` file (device name = file stem)."""
    import torch  # only the importer of HELP files needs torch

    latencies = _load_pt(torch, path)
    if not isinstance(latencies, (list, tuple)) or not all(isinstance(v, (int, float)) for v in latencies):
        raise TableImportError(f"{path}: a HELP latency file holds a list of numbers, got {type(latencies).__name__}")
    bad = [i for i, v in enumerate(latencies, start=1) if not (math.isfinite(v) and v > 0)]
    if bad:  # one would break every later read of the store
        what = count(len(bad), "latency is not a positive number", "latencies are not positive numbers")
        raise TableImportError(f"{path}: {what} (first at row {bad[0]}: {latencies[bad[0] - 1]!r})")
    device = device or path.stem
    if space is None:
        space = "nb201" if len(latencies) == nb201.N_ARCHS else "fbnet"
    mapping_path = Path(mapping) if mapping else _find_mapping(path, space)
    if space == "nb201":
        keys = _nb201_rows(torch, mapping_path, len(latencies), path)
    elif space == "fbnet":
        if mapping_path is None:
            raise TableImportError(f"{path}: {len(latencies)} rows (not {nb201.N_ARCHS}, so not NB201); an FBNet "
                               f"file needs HELP's {FBNET_MAPPING} next to it or in its parent folder, or --mapping")
        keys = _fbnet_rows(torch, mapping_path, len(latencies), path)
    else:
        raise TableImportError(f"unknown search space {space!r}; valid: nb201, fbnet")
    return space, [(k, device, float(v)) for k, v in zip(keys, latencies)]


def _load_pt(torch, path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated classes for a bad file
        raise TableImportError(f"{path}: not a readable HELP .pt file ({torch_error(exc)})") from None


def _find_mapping(path: Path, space: str) -> Path | None:
    name = NB201_MAPPING if space == "nb201" else FBNET_MAPPING
    for folder in (path.parent, path.parent.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def _nb201_rows(torch, mapping_path: Path | None, n: int, path: Path) -> list[str]:
    if mapping_path is None:
        # HELP's NB201 row order is the official index (verified against HW-NAS-Bench), so a
        # full-length file without its mapping is still unambiguous.
        if n != nb201.N_ARCHS:
            raise TableImportError(f"{path}: {n} rows; without {NB201_MAPPING} only a full {nb201.N_ARCHS}-row "
                               "file can be mapped to NB201 indices")
        log.info("%s: no %s found; taking row i as NB201 index i", path, NB201_MAPPING)
        return [str(i) for i in range(n)]
    str2idx = _load_pt(torch, mapping_path)
    if not isinstance(str2idx, dict):
        raise TableImportError(f"{mapping_path}: expected a dict of arch string -> row, got {type(str2idx).__name__}")
    row_to_key: dict[int, str] = {}
    for arch_str, row in str2idx.items():
        try:
            row_to_key[int(row)] = str(nb201.to_index(arch_str))
        except ArchError as exc:
            raise TableImportError(f"{mapping_path}: {exc}") from None
    missing = [i for i in range(n) if i not in row_to_key]
    if missing:
        raise TableImportError(f"{mapping_path} maps no architecture to row(s) {missing[:5]} of {path} ({n} rows)")
    return [row_to_key[i] for i in range(n)]


def _fbnet_rows(torch, mapping_path: Path, n: int, path: Path) -> list[str]:
    archs = _load_pt(torch, mapping_path)
    if not isinstance(archs, (list, tuple)) or len(archs) < n:
        raise TableImportError(f"{mapping_path}: expected a list of at least {n} architectures (22 op indices each)")
    keys = []
    for row, ops in enumerate(archs[:n]):
        if not isinstance(ops, (list, tuple)) or len(ops) != fbnet.N_LAYERS:
            raise TableImportError(f"{mapping_path}: row {row} is not a list of {fbnet.N_LAYERS} op indices")
        try:
            keys.append(fbnet.to_key([fbnet.OPS[int(i)] for i in ops]))
        except (IndexError, ValueError):
            raise TableImportError(f"{mapping_path}: row {row} has an op index outside "
                                  f"0..{len(fbnet.OPS) - 1}") from None
    return keys
