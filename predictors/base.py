"""The contract every few-shot latency method follows (ours, the paper's, baselines).

A method is a scikit-learn style estimator: ``__init__`` only stores parameters.

1. ``pretrain(space, train)`` learns from the train devices' tables and returns ``self``.
   ``train`` maps device name -> ``pandas.Series`` of latency_ms indexed by architecture key
   (NB201: int index; FBNet: canonical arch key string). Devices may cover different archs.
2. ``choose(k, candidates, rng)`` names the k architectures to measure on a new device,
   without seeing any of its latencies (strict protocol rule 2). The default draws at random;
   a method that needs fixed reference archs (HELP) returns them here, and they count in k.
3. ``adapt(archs, latency_ms, device=None)`` returns a NEW fitted object (deep copy; the
   pretrained method is never mutated, rule 3) whose ``predict(archs)`` returns a score per
   architecture (ms where the method predicts ms; only the ranking is scored).

``evaluate`` code in ``predictors.protocol`` calls exactly these methods.

The protocol passes ``train`` as a :class:`TrainTables`: the dict itself holds the N archs per
train device drawn for the trial (what a model may fit on), and ``train.full`` the same devices'
whole tables, which a method may use as a *lookup* of known train-device latencies (HWL
encodings, the copy baseline). ``full_tables(train)`` reads it from a plain dict too.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from spaces import fbnet, nb201



class TrainTables(dict):
    """device -> latency Series to pretrain on, plus ``full``: the whole train-device tables.

    Parameters
    ----------
    sample : dict
        device -> ``pandas.Series`` of latency_ms indexed by arch key: the pretraining sample.
    full : dict, optional
        device -> the device's whole table (defaults to ``sample``).
    """

    def __init__(self, sample, full=None):
        super().__init__(sample)
        self.full = dict(sample) if full is None else dict(full)


def train_tables(space: str, train, method: str = "pretrain") -> TrainTables:
    """``train`` as a method pretrains on it: device -> latency Series indexed by ``space``'s keys (``space_keys``),
    its missing values (a wide table's NaN: not measured) left out, a ``TrainTables``' ``full`` kept. A long table
    (``device``, ``latency_ms`` and an arch column, as ``predictors.data`` reads files) is read by device. Anything
    else, or a table of the other space, is one ValueError naming it: a DataFrame was 'The truth value of a DataFrame
    is ambiguous', an FBNet table pretrained an NB201 HWLRidge without a word."""
    if isinstance(train, pd.DataFrame):
        from predictors import data

        train = TrainTables(data.by_device(data.from_frame(train, space, where=f"{method}'s table")))
    if not isinstance(train, dict) or not train:
        raise ValueError(f"{method} needs train devices: a dict device -> latency Series indexed by arch "
                         f"(predictors.data.by_device(table)), or a table with device, latency_ms and an arch column; "
                         f"got {'an empty dict' if isinstance(train, dict) else type(train).__name__}")
    checked: set = set()  # devices share most archs: each key is read once
    full = {d: _device_series(space, d, s, method, checked) for d, s in full_tables(train).items()}
    sample = {d: _device_series(space, d, s, method, checked) for d, s in train.items()}
    return TrainTables(sample, full)


def _device_series(space: str, device, series, method: str, checked: set) -> pd.Series:
    if not isinstance(series, pd.Series):
        raise ValueError(f"{method}: train device {device!r} has a {type(series).__name__}, not a latency Series "
                         "indexed by arch (pandas.Series(latencies, index=archs))")
    if series.isna().any():
        series = series.dropna()
    new = [k for k in series.index.tolist() if k not in checked]
    keys = space_keys(space, new, f"{method}: train device {device!r}")
    if keys != new:  # not all the space's own keys (NB201 arch strings): the whole index through the space
        series = series.set_axis(space_keys(space, series.index))
    checked.update(keys)
    return series


def full_tables(train: dict) -> dict:
    """The whole train-device tables behind ``train`` (``train`` itself for a plain dict)."""
    return getattr(train, "full", train)


def union_keys(series) -> list:
    """Every architecture key of several latency Series, in first-seen order (devices may differ)."""
    index = pd.Index([])
    for s in series:
        index = index.union(s.index, sort=False) if len(index) else s.index
    return list(index)


def space_keys(space: str, archs, where: str = "architectures") -> list:
    """``archs`` as ``space``'s keys: NB201 indices (an arch string is read as its index), canonical FBNet keys.
    One that is not an architecture of ``space`` raises ``ArchError`` naming it (it was an IndexError or a
    KeyError deep in a method, and an NB201 arch string was one too)."""
    archs = list(archs)
    if space == nb201.NAME:
        ints = np.asarray(archs)
        if ints.dtype.kind in "iu" and ints.ndim == 1 and (
                not len(ints) or 0 <= ints.min() <= ints.max() < nb201.N_ARCHS):
            return ints.tolist()
    elif all(type(a) is str and fbnet.is_canonical(a) for a in archs):  # every key of a table and of a sample
        return archs
    from predictors.data import resolve_keys  # the tables' reading of a key, and their message

    return resolve_keys(pd.Series(archs, dtype=object), space, where=where)


def _values_of(space: str, archs: list, keys: list, latency_ms) -> np.ndarray:
    """``latency_ms`` as floats in the order of ``archs`` (whose space's ``keys`` these are): a Series indexed by the
    archs in another order (a ``table[table.index.isin(archs)]``) is read by its index, its keys read as the space
    reads them (an NB201 table's indices for arch strings given, or the other way: compared as given, they were read
    by position); by position it gave archs each other's latency. A Series indexed by no archs of the space is read
    by position; one naming an arch twice, in another order, is refused: which value is whose cannot be told."""
    if isinstance(latency_ms, pd.Series) and len(latency_ms) == len(archs) and list(latency_ms.index) != archs:
        try:
            index = space_keys(space, latency_ms.index)
        except (ValueError, TypeError):  # no arch keys (an FBNet sample's RangeIndex): a sequence in archs' order
            index = keys
        if index != keys and set(index) == set(keys):
            if len(set(index)) != len(index):
                twice = next(a for a, n in pd.Series(index).value_counts().items() if n > 1)
                raise ValueError(f"adapt reads a latency Series by its index, and this one names arch {twice!r} "
                                 "more than once, in another order than the archs given: give each arch once, or "
                                 "the latencies in the order of the archs")
            latency_ms = pd.Series(latency_ms.to_numpy(), index=index).loc[keys]
    y = np.asarray(latency_ms, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"adapt needs one latency per architecture, a 1-d sequence; got an array of shape {y.shape}")
    return y


class UnusableMeasurementsError(ValueError):
    """Measurements of a new device that a method cannot adapt on (HELP without a latency of its reference archs;
    hwl_ridge or an Eq. 1 choice on archs no train table holds): the data's fault, which a caller names with the
    device, not a wrong setting of the method."""


class NotFittedError(ValueError, AttributeError):
    """A method used before ``pretrain``/``adapt``; the message says which to call."""


class FewShotMethod(BaseEstimator):
    """Base class: random ``choose``; subclasses implement ``pretrain`` and ``_adapt``."""

    #: short name used in tables and JSON (``--method NAME``)
    name = "base"
    #: pretraining slow enough (minutes on whole tables) that `hwl onboard` keeps the pretrained method on disk
    cache_pretrained = False

    def pretrain(self, space: str, train: dict) -> "FewShotMethod":
        raise NotImplementedError

    def choose(self, k: int, candidates, rng: np.random.Generator) -> list:
        candidates = list(candidates)
        if k > len(candidates):
            raise ValueError(f"k={k} is larger than the {len(candidates)} candidate architectures")
        picked = rng.choice(len(candidates), size=k, replace=False)
        return [candidates[i] for i in picked]

    def adapt(self, archs, latency_ms, device: str | None = None) -> "FewShotMethod":
        """A fitted copy. ``archs``: keys of the pretrained space (an NB201 arch string is read as its index);
        ``latency_ms``: one finite value per arch, a sequence in their order or a pandas Series indexed by them."""
        if not self._is_pretrained():
            raise NotFittedError(f"{type(self).__name__} is not pretrained: call pretrain(space, train) first")
        archs = list(archs)
        keys = space_keys(self.space_, archs, f"{type(self).__name__}.adapt")
        y = _values_of(self.space_, archs, keys, latency_ms)
        if len(archs) != len(y) or len(archs) == 0:
            raise ValueError(f"adapt needs as many latencies as architectures (got {len(archs)} and {len(y)})")
        bad = ~np.isfinite(y)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"adapt needs a finite latency for every architecture, not NaN or infinity "
                             f"({int(bad.sum())} of {len(y)}; first: arch {archs[first]!r}, {y[first]}): leave failed "
                             "measurements out")
        adapted = copy.deepcopy(self)
        adapted._adapt(keys, y, device)
        adapted.adapted_ = True
        return adapted

    def predict(self, archs) -> np.ndarray:
        """One score per arch (ms for a latency method); ``archs`` as ``adapt`` takes them."""
        if not getattr(self, "adapted_", False):
            raise NotFittedError(f"{type(self).__name__} is not adapted: call adapt(archs, latency_ms) first")
        keys = space_keys(self.space_, archs, f"{type(self).__name__}.predict")
        return np.asarray(self._predict(keys), dtype=np.float64)

    # -- for subclasses -------------------------------------------------------------
    def _is_pretrained(self) -> bool:
        return getattr(self, "space_", None) is not None

    def _adapt(self, archs: list, y: np.ndarray, device: str | None) -> None:
        raise NotImplementedError

    def _predict(self, archs: list) -> np.ndarray:
        raise NotImplementedError
