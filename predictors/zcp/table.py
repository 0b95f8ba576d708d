"""Our proxy scores as the table the ZCP encodings take, and the Parquet file ``hwl zcp --out`` writes.

``predictors.encodings.ZCPEncoder(proxies=...)`` takes a frame indexed by canonical arch key
with one column per proxy; :func:`proxy_frame` builds it from a store (``hwl zcp --store``) or a
file (``hwl zcp --out``). A proxy that was not finite for some architecture (a degenerate network,
see ``predictors.zcp.proxies``) is given the column's worst finite value, so every predictor can
use every architecture.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.paths import written_whole
from predictors.zcp.errors import ZCPError
from predictors.zcp.run import results_long, wide_table
from spaces import get_space, nb201

log = logging.getLogger(__name__)

FORMAT = "hwl-zcp/1"
KEY_COLUMNS = ("arch_index", "arch_str", "arch_ops", "op_idx_key")


def fill_nonfinite(frame: pd.DataFrame, *, where: str = "proxy scores", fix: str = "leave it out") -> pd.DataFrame:
    """NaN / -inf -> the column's smallest finite value, +inf -> its largest (worst/best case). A column without
    a finite score is refused naming ``where`` the scores come from and ``fix``, what the user can do about it."""
    out = frame.astype(np.float64).copy()
    for col in out.columns:
        values = out[col].to_numpy()
        finite = np.isfinite(values)
        if finite.all():
            continue
        if not finite.any():
            raise ZCPError(f"{where}: proxy {col!r} has no finite score at all; {fix}")
        lo, hi = values[finite].min(), values[finite].max()
        out[col] = np.where(np.isposinf(values), hi, np.where(finite, values, lo))
    return out


def write_parquet(wide: pd.DataFrame, path, *, space: str, dataset: str, input_key: str) -> Path:
    """Write a wide proxy table with its format version and provenance in the file metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(wide, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update({b"hwl_format": FORMAT.encode(), b"space": space.encode(), b"dataset": dataset.encode(),
                 b"input_key": input_key.encode()})
    with written_whole(path) as target:  # a killed run or a full disk leaves the old table whole
        pq.write_table(table.replace_schema_metadata(meta), target)
    return path


def read_parquet_meta(path) -> dict:
    """The hwl metadata of a proxy Parquet file (empty for a foreign file)."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k in (b"hwl_format", b"space", b"dataset",
                                                                      b"input_key")}


def proxy_frame(space: str, *, store=None, path=None, dataset: str | None = None, input_key: str | None = None,
                proxies=None) -> pd.DataFrame:
    """Proxy scores indexed by canonical arch key, one column per proxy, all finite.

    Parameters
    ----------
    space : {"nb201", "fbnet"}
    store : str or Path, optional
        An hwl store that ``hwl zcp --store`` wrote to.
    path : str or Path, optional
        A proxy table (``hwl zcp --out`` Parquet, or any CSV/Parquet with an arch column).
    dataset, input_key : str, optional
        Which stored run to read when the store holds several.
    proxies : sequence of str, optional
        Columns to keep (default: every proxy present).

    Raises
    ------
    ZCPError
        Neither or both sources given, nothing stored, several runs and none chosen, unknown proxy.
    """
    if (store is None) == (path is None):
        raise ZCPError("give exactly one proxy source: a store (--zcp-store) or a table file (--zcp-table)")
    space = get_space(space).NAME
    if path is not None:
        from predictors.encodings.zcp import read_proxy_table

        frame = read_proxy_table(path, space)
        frame = frame.drop(columns=[c for c in frame.columns if c in KEY_COLUMNS], errors="ignore")
        scored = None
    else:
        frame, scored = _store_frame(space, store, dataset, input_key)
    if proxies is not None:
        unknown = [p for p in proxies if p not in frame.columns]
        if unknown:
            raise ZCPError(f"proxies {unknown} are not in the table; it has {', '.join(frame.columns)}")
        frame = frame[list(proxies)]
    if scored is not None:
        frame = _fully_scored(frame, scored[frame.columns], store)
    # hwl search has no --proxies (the hint was hwl zcp's): name what fixes the source the scores came from
    if path is not None:
        return fill_nonfinite(frame, where=f"proxy table {path}", fix="drop that column")
    return fill_nonfinite(frame, where=f"store {store}", fix="score the architectures again without it "
                                                            "(hwl zcp --proxies) into another store")


def run_table(space: str, archs, report, store, dataset: str, input_key: str, proxies) -> pd.DataFrame:
    """Wide table of the asked ``archs`` after a run: from the store when there is one (so archs
    done by earlier runs are included), else from the run's results. Failed archs are left out."""
    if store is not None:
        long = store.scores(space, dataset, input_key)
    else:
        long = results_long(space, report.results)
    long = long[long["proxy"].isin(list(proxies))]
    # every asked proxy, as the store counts an arch done: one that failed now, with some proxies from an earlier
    # run of other --proxies, was written with empty cells, which a reader fills with the column's worst score
    counts = long.groupby(long["arch"].astype(str))["proxy"].nunique()
    have = set(counts.index[counts == len(set(proxies))])
    return wide_table(space, long, [a for a in archs if str(a) in have])[[*_keys(space), *proxies]]


def _keys(space: str) -> list[str]:
    return ["arch_index", "arch_str"] if get_space(space) is nb201 else ["arch_ops", "op_idx_key"]


def _store_frame(space: str, store, dataset, input_key) -> pd.DataFrame:
    from predictors.zcp.store import ProxyStore

    if not Path(store).is_file():
        raise ZCPError(f"store {store} does not exist")
    with ProxyStore(store, readonly=True) as ps:
        long = ps.scores(space, dataset, input_key)
        every = ps.scores(space) if len(long) == 0 and (dataset or input_key) else long
    if len(long) == 0:
        held = "; it holds " + _run_list(every) if len(every) else ": run `hwl zcp` first"
        raise ZCPError(f"store {store} holds no {space} proxy scores"
                       + (f" of run {run_name(dataset, input_key)!r}" if dataset or input_key else "") + held)
    runs = long[["dataset", "input_key"]].drop_duplicates()
    if len(runs) > 1:
        raise ZCPError(f"store {store} holds several {space} proxy runs: {_run_list(long)}; choose one "
                       "(hwl search --zcp-run RUN)")
    wide = wide_table(space, long)
    keys = wide["arch_index"].astype(np.int64).tolist() if space == nb201.NAME else wide["arch_ops"].tolist()
    frame = wide.drop(columns=[c for c in KEY_COLUMNS if c in wide.columns])
    frame.index = pd.Index(keys, name="arch")
    # which (arch, proxy) the store holds a row of: a missing row is a score never computed, where a NULL score is
    # one that was not finite (fill_nonfinite's worst value is meant for those alone)
    scored = long.groupby(["arch", "proxy"]).size().unstack(fill_value=0).gt(0)
    scored = scored.reindex(index=[str(k) for k in keys], columns=frame.columns, fill_value=False)
    scored.index = frame.index
    return frame, scored


def _fully_scored(frame: pd.DataFrame, scored: pd.DataFrame, store) -> pd.DataFrame:
    """The architectures the store holds a score of every proxy of ``frame`` for. Runs of `hwl zcp` with other
    --proxies into one store leave some without some proxies, and those were filled with the column's worst score
    as if computed: an arch scored for params alone got the lowest snip of the store."""
    complete = scored.all(axis=1).to_numpy()
    if complete.all():
        return frame
    if not complete.any():
        raise ZCPError(f"store {store}: no architecture has a score of every proxy ({', '.join(frame.columns)}); "
                       "score them with the same --proxies (hwl zcp --store)")
    first = frame.index[~complete][0]
    lacking = [c for c in frame.columns if not scored.loc[first, c]]
    log.warning("store %s: %d of %d architectures lack a score of some proxy (arch %s: no %s) and are left out; "
                "score them with every proxy (hwl zcp --store) to use them", store, int((~complete).sum()),
                len(frame), first, ", ".join(lacking))
    return frame[complete]




def run_name(dataset: str | None, input_key: str | None) -> str:
    """A stored proxy run as one word, ``DATASET|INPUT_KEY`` (``hwl search --zcp-run``)."""
    return f"{dataset or '*'}|{input_key or '*'}"


def parse_run_name(name: str) -> tuple[str, str]:
    """(dataset, input_key) of :func:`run_name`'s word; the key itself holds '|'."""
    dataset, sep, input_key = name.partition("|")
    if not sep or not dataset or not input_key:
        raise ZCPError(f"proxy run {name!r}: expected DATASET|INPUT_KEY, as the error listing a store's runs "
                       "names them (for example 'cifar10|synthetic|bs=64|seed=0')")
    return dataset, input_key


def _run_list(long: pd.DataFrame) -> str:
    runs = long[["dataset", "input_key"]].drop_duplicates().itertuples(index=False)
    return ", ".join(repr(run_name(d, k)) for d, k in runs)


__all__ = ["FORMAT", "fill_nonfinite", "parse_run_name", "proxy_frame", "read_parquet_meta", "run_name", "run_table",
           "write_parquet"]
