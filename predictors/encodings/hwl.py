"""HWL: an architecture's min-max-normalised latencies on chosen reference devices."""
from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from predictors.data import LatencyTableError

log = logging.getLogger(__name__)


def latency_matrix(tables: dict, devices, archs) -> np.ndarray:
    """(len(archs), len(devices)) latencies looked up in ``tables``; NaN where unknown."""
    return np.column_stack([tables[d].reindex(list(archs)).to_numpy(np.float64) for d in devices])


class HWLEncoder(BaseEstimator, TransformerMixin):
    """Latencies on reference devices, min-max scaled with the fitted (train) archs only.

    Parameters
    ----------
    tables : dict
        device -> ``pandas.Series`` of latency_ms indexed by arch key (the reference devices'
        known latencies, e.g. ``predictors.data.by_device(table)``).
    devices : list of str, optional
        Reference devices, in column order (default: every device of ``tables``).
    log : bool
        Scale log-latencies instead of latencies.

    Attributes
    ----------
    devices_ : list of str
    min_, max_ : ndarray
        Per-device range over the fitted architectures.
    fill_ : ndarray
        Value used for an architecture a reference device has no latency for (fitted mean).
    """

    def __init__(self, tables=None, devices=None, *, log: bool = False):
        self.tables = tables
        self.devices = devices
        self.log = log

    def fit(self, X, y=None):
        if not self.tables:
            raise LatencyTableError("HWLEncoder needs reference device tables (tables=...)")
        devices = list(self.tables) if self.devices is None else list(self.devices)
        unknown = [d for d in devices if d not in self.tables]
        if unknown:
            raise LatencyTableError(f"unknown reference device(s) {unknown}; valid: {', '.join(self.tables)}")
        raw = self._raw(devices, X)
        if np.isnan(raw).all(axis=0).any():
            empty = [d for d, e in zip(devices, np.isnan(raw).all(axis=0)) if e]
            raise LatencyTableError(f"reference device(s) {empty} know none of the fitted architectures")
        self.devices_ = devices
        self.min_ = np.nanmin(raw, axis=0)
        self.max_ = np.nanmax(raw, axis=0)
        self.fill_ = np.nanmean(self._scale(raw), axis=0)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        scaled = self._scale(self._raw(self.devices_, X))
        missing = np.isnan(scaled)
        if missing.any():
            log.warning("%d reference latencies unknown; filled with the fitted mean", int(missing.sum()))
            scaled = np.where(missing, self.fill_, scaled)
        return scaled

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        return np.array([f"hwl_{d}" for d in self.devices_], dtype=object)

    def _raw(self, devices, X) -> np.ndarray:
        raw = latency_matrix(self.tables, devices, X)
        return np.log(raw) if self.log else raw

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        span = np.where(self.max_ > self.min_, self.max_ - self.min_, 1.0)
        return (raw - self.min_) / span
