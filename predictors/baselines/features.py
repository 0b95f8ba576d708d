"""Feature groups of an architecture for the linear baselines.

- ``lat``: log-latencies on the train devices (looked up in their whole tables),
- ``ops``: how often each op type occurs (NB201 edges / FBNet layers); for NB201 also whether
  the cell output is cut off from its input (HW-NAS-Bench devices report ~0 ms for those),
- ``vec``: the Vec one-hot,
- ``cost``: log FLOPs (MACs) and log parameter count, analytically (``spaces.cost``).

Each group is standardised per column over the architectures it is built for (no latency of
a target device is involved) and divided by sqrt(width), so a group's prior weight does not
grow with its number of columns.
"""
from __future__ import annotations

import numpy as np

from spaces import cost, get_space, nb201

GROUPS = ("lat", "ops", "vec", "cost")


def op_counts(space: str, keys) -> np.ndarray:
    """(n, number of op types) counts of each op in each architecture."""
    mod = get_space(space)
    codes = mod.op_codes(list(keys)).astype(np.int64)
    counts = np.zeros((len(codes), len(mod.OPS)))
    for op in range(len(mod.OPS)):
        counts[:, op] = (codes == op).sum(axis=1)
    return counts


def op_features(space: str, keys) -> np.ndarray:
    """The ``ops`` group: op counts, plus (NB201) a column marking output-disconnected cells."""
    counts = op_counts(space, keys)
    if get_space(space).NAME != "nb201":
        return counts
    disconnected = nb201.disconnected_indices()
    flag = np.array([[float(int(k) in disconnected)] for k in keys]).reshape(len(counts), 1)
    return np.hstack([counts, flag])


def log_cost(space: str, keys) -> np.ndarray:
    """(n, 2) log MACs and log params."""
    flops, params = cost.flops_params(space, list(keys))
    return np.log(np.column_stack([flops, params]).astype(np.float64))


def log_latencies(tables: dict, devices, keys) -> np.ndarray:
    """(n, devices) log latency_ms; NaN where a device has no latency for an arch."""
    return np.log(np.column_stack([tables[d].reindex(list(keys)).to_numpy(np.float64) for d in devices]))


def raw_group(name: str, space: str, keys, tables: dict, devices) -> np.ndarray:
    if name == "lat":
        return log_latencies(tables, devices, keys)
    if name == "ops":
        return op_features(space, keys)
    if name == "vec":
        return get_space(space).vec_encoding(list(keys)).astype(np.float64)
    if name == "cost":
        return log_cost(space, keys)
    raise ValueError(f"unknown feature group {name!r}; valid groups: {', '.join(GROUPS)}")


class GroupScaler:
    """Per-column standardisation of one feature group, NaN (unknown latency) -> 0 (the mean)."""

    def __init__(self, raw: np.ndarray):
        self.mean = np.nanmean(raw, axis=0)
        std = np.nanstd(raw, axis=0)
        self.keep = std > 0  # constant columns (an op nobody uses) carry no information
        self.std = np.where(self.keep, std, 1.0)
        self.norm = np.sqrt(max(int(self.keep.sum()), 1))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        z = (raw - self.mean) / self.std
        return np.nan_to_num(z[:, self.keep], nan=0.0) / self.norm
