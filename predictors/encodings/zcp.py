"""ZCP: zero-cost proxy scores of an architecture, from a proxy table, standardised."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from harness.paths import why_not_a_file
from predictors.data import (ARCH_COLUMNS, LatencyTableError, numeric_columns, one_row_per_arch, paired_keys,
                             read_frame)
from spaces.errors import ArchError

PROXIES = ("epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain",
           "snip", "synflow", "zen")
# A column whose largest magnitude exceeds its median magnitude this many times gets a signed log
# (synflow reaches ~1e35): without it one architecture dominates the standardisation.
HEAVY_TAIL_RATIO = 1e3


def read_proxy_table(path, space: str) -> pd.DataFrame:
    """Proxy scores from a CSV/Parquet file, indexed by canonical arch key, numeric columns only."""
    path = Path(path)
    if why := why_not_a_file(path):
        raise LatencyTableError(f"proxy table {path} {why}")
    raw = read_frame(path, "proxy table")
    arch_col = next((c for c in ARCH_COLUMNS if c in raw.columns), None)
    if arch_col is None:
        raise LatencyTableError(f"proxy table {path} needs one of the columns {', '.join(ARCH_COLUMNS)}")
    keys = paired_keys(raw, arch_col, space, f"proxy table {path}")
    columns = [c for c in raw.columns if c in PROXIES or (c not in ARCH_COLUMNS and c not in ("arch_id", "dataset")
                                                          and pd.api.types.is_numeric_dtype(raw[c]))]
    _check_only_proxies(raw, columns, path)
    table = numeric_columns(raw, columns, f"proxy table {path}")  # missing and infinite scores: fill_nonfinite
    table.index = pd.Index(keys, name="arch")
    return one_row_per_arch(table, f"proxy table {path}", "scores")


def _check_only_proxies(raw: pd.DataFrame, columns: list, path: Path) -> None:
    """Every other numeric column is read as a proxy, so one that holds what a predictor is asked for (NASLib's
    val_accuracy, a latency) would hand it the answer, and a table of several datasets' scores would be read
    for the first dataset of each arch."""
    targets = [c for c in columns if c not in PROXIES and (c == "latency_ms" or str(c).lower().endswith("acc")
                                                            or str(c).lower().endswith("accuracy"))]
    if targets:
        raise LatencyTableError(f"proxy table {path} has column(s) {', '.join(map(str, targets))}, which would be "
                                "read as proxy scores but hold what is predicted (an accuracy or a latency); "
                                "drop them: a proxy table has the arch and one column per proxy")
    datasets = pd.unique(raw["dataset"].dropna()) if "dataset" in raw.columns else []
    if len(datasets) > 1:
        raise LatencyTableError(f"proxy table {path} holds scores of {len(datasets)} datasets "
                                f"({', '.join(map(str, datasets))}); keep one dataset's rows")


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class ZCPEncoder(BaseEstimator, TransformerMixin):
    """Zero-cost proxy vector, log where heavy-tailed, standardised on the fitted (train) archs.

    Parameters
    ----------
    proxies : pandas.DataFrame
        Proxy scores indexed by arch key (see :func:`read_proxy_table`).
    columns : list of str, optional
        Proxies to use (default: every column).
    log : {"auto", True, False}
        Signed log of heavy-tailed columns ("auto"), of all columns, or of none.

    Attributes
    ----------
    columns_ : list of str
    log_columns_ : ndarray of bool
    mean_, scale_ : ndarray
    """

    def __init__(self, proxies=None, columns=None, *, log="auto"):
        self.proxies = proxies
        self.columns = columns
        self.log = log

    def fit(self, X, y=None):
        if self.proxies is None or len(self.proxies) == 0:
            raise LatencyTableError("ZCPEncoder needs a proxy table (proxies=...)")
        columns = list(self.proxies.columns) if self.columns is None else list(self.columns)
        unknown = [c for c in columns if c not in self.proxies.columns]
        if unknown:
            raise LatencyTableError(f"unknown proxies {unknown}; valid: {', '.join(self.proxies.columns)}")
        raw = self._lookup(X, columns)
        if self.log == "auto":
            mags = np.abs(raw)
            log_cols = mags.max(axis=0) > HEAVY_TAIL_RATIO * (np.median(mags, axis=0) + 1e-12)
        else:
            log_cols = np.full(len(columns), bool(self.log))
        values = np.where(log_cols, signed_log(raw), raw)
        self.columns_ = columns
        self.log_columns_ = log_cols
        self.mean_ = values.mean(axis=0)
        std = values.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        raw = self._lookup(X, self.columns_)
        return (np.where(self.log_columns_, signed_log(raw), raw) - self.mean_) / self.scale_

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        return np.array([f"zcp_{c}" for c in self.columns_], dtype=object)

    def _lookup(self, X, columns) -> np.ndarray:
        rows = self.proxies.reindex(list(X))[columns]
        missing = rows.isna().any(axis=1)
        if missing.any():
            first = rows.index[missing.to_numpy()][0]
            raise ArchError(f"no proxy scores for {int(missing.sum())} architecture(s), e.g. {first!r}")
        return rows.to_numpy(np.float64)
