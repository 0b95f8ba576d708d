"""The simple reference of ``predictor-protocol.md``: Bayesian linear on the k target samples.

Features are groups (``lat``: train-device log-latencies, ``ops``: op-type counts, ``vec``: the
Vec one-hot, ``cost``: log FLOPs and params); each group's prior weight and the noise are
averaged over a small grid by their evidence on the k samples (``bayes_linear``). Which groups
to use is chosen per k by leave-one-train-device-out on the train devices only: each train
device in turn plays the new device (with the others as ``lat``), k of its pretraining archs
are drawn, and the candidate set with the best mean Spearman on its other archs wins.

The candidates are the full set with and without the ``optional`` groups (default: only
``lat`` is optional). The architecture-intrinsic groups stay in because leaving train devices
out cannot tell which of them a device *unlike* the train devices needs (FBNet GPUs follow op
counts, phones and CPUs FLOPs), while the evidence on the target's own k samples can; a
search over every subset picked latency-heavy sets that failed on such devices.
"""
from __future__ import annotations

import itertools
import logging

import numpy as np
from scipy.stats import spearmanr

from predictors.base import FewShotMethod, full_tables, train_tables, union_keys
from predictors.baselines import bayes_linear
from predictors.baselines.features import GROUPS, GroupScaler, raw_group
from spaces import get_space

log = logging.getLogger(__name__)


def candidate_sets(groups, optional=None) -> list[tuple[str, ...]]:
    """``groups`` without each subset of ``optional`` (default: every non-empty subset), full set last."""
    groups = tuple(groups)
    optional = groups if optional is None else tuple(g for g in groups if g in optional)
    out = []
    for r in range(len(optional), -1, -1):
        for dropped in itertools.combinations(optional, r):
            kept = tuple(g for g in groups if g not in dropped)
            if kept:
                out.append(kept)
    return out


class SimpleReference(FewShotMethod):
    """Evidence-averaged Bayesian linear model fitted on the k target samples alone.

    Parameters
    ----------
    groups : tuple of str
        Feature groups the candidate sets are built from (subsets of ``lat, ops, vec, cost``).
    optional : tuple of str, optional
        Groups the selection may drop (default ``("lat",)``; None: any non-empty subset).
    feature_set : tuple of str, optional
        Use these groups for every k instead of choosing (no selection run).
    select_ks : tuple of int
        k values whose feature set is chosen during ``pretrain`` (others on first use).
    select_repeats : int
        Random k-subsets per train device in the leave-one-device-out selection.
    score_archs : int
        At most this many archs per pseudo-target are scored during the selection.
    weight_grid, noise_grid : tuple of float
        Grids of group prior weights and noise variances (on standardised log-latency).
    random_state : int, optional
        Seed of the selection's draws (the protocol sets the trial seed).

    Attributes
    ----------
    space_ : str
    devices_ : list of str
        Train devices (the ``lat`` group's columns).
    scalers_ : dict
        Group -> fitted ``GroupScaler``.
    feature_sets_ : dict
        k -> chosen tuple of groups, with ``selection_`` holding every candidate's LOO score.
    """

    name = "simple_reference"

    def __init__(self, groups=GROUPS, *, optional=("lat",), feature_set=None, select_ks=(5, 10, 20),
                 select_repeats: int = 3, score_archs: int = 2000,
                 weight_grid=bayes_linear.DEFAULT_WEIGHT_GRID, noise_grid=bayes_linear.DEFAULT_NOISE_GRID,
                 random_state=None):
        self.groups = groups
        self.optional = optional
        self.feature_set = feature_set
        self.select_ks = select_ks
        self.select_repeats = select_repeats
        self.score_archs = score_archs
        self.weight_grid = weight_grid
        self.noise_grid = noise_grid
        self.random_state = random_state

    # -- pretrain: fit scalers, choose feature sets on train devices only ---------------------
    def pretrain(self, space, train):
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise ValueError(f"unknown feature groups {unknown}; valid groups: {', '.join(GROUPS)}")
        self.space_ = get_space(space).NAME
        train = train_tables(self.space_, train, f"{type(self).__name__}.pretrain")
        self.tables_ = full_tables(train)
        self.devices_ = list(self.tables_)
        self.train_ = dict(train)
        keys = union_keys(self.tables_.values())
        self.scalers_ = {g: GroupScaler(raw_group(g, self.space_, keys, self.tables_, self.devices_))
                         for g in self.groups}
        self.feature_sets_, self.selection_ = {}, {}
        for k in self.select_ks:
            self._select(k)
        return self

    def _select(self, k: int) -> tuple[str, ...]:
        """Leave-one-train-device-out choice of the feature set for k samples."""
        if k in self.feature_sets_:
            return self.feature_sets_[k]
        if self.feature_set is not None:
            self.feature_sets_[k] = tuple(self.feature_set)
            return self.feature_sets_[k]
        sets = candidate_sets(self.groups, self.optional)
        if len(self.devices_) < 2 or len(sets) == 1:  # nothing to leave out: use every group
            self.feature_sets_[k] = tuple(self.groups)
            return self.feature_sets_[k]
        rng = np.random.default_rng([0 if self.random_state is None else self.random_state, k])
        scores = np.zeros(len(sets))
        n_runs = 0
        for held_out in self.devices_:
            truth = self.train_[held_out]
            if len(truth) <= k + 1:
                continue
            others = [d for d in self.devices_ if d != held_out]
            keys = list(truth.index)
            if len(keys) > self.score_archs + k:
                keys = [keys[i] for i in rng.choice(len(keys), self.score_archs + k, replace=False)]
            feats = self._features(keys, lat_devices=others)
            y = np.log(truth.loc[keys].to_numpy(np.float64))
            for _ in range(self.select_repeats):
                picked = rng.choice(len(keys), size=k, replace=False)
                rest = np.setdiff1d(np.arange(len(keys)), picked)
                for i, s in enumerate(sets):
                    pred = bayes_linear.fit_predict([feats[g][picked] for g in s], y[picked],
                                                    [feats[g][rest] for g in s], weight_grid=self.weight_grid,
                                                    noise_grid=self.noise_grid)
                    scores[i] += _rho(pred, y[rest])
                n_runs += 1
        if n_runs == 0:
            self.feature_sets_[k] = tuple(self.groups)
            return self.feature_sets_[k]
        scores /= n_runs
        best = int(np.argmax(scores))
        self.feature_sets_[k] = sets[best]
        self.selection_[k] = {"+".join(s): round(float(v), 4) for s, v in zip(sets, scores)}
        log.info("k=%d: feature set %s (LOO rho %.3f)", k, "+".join(sets[best]), scores[best])
        return sets[best]

    def _features(self, keys, *, lat_devices=None) -> dict[str, np.ndarray]:
        """Scaled groups for ``keys``; ``lat_devices`` keeps only those devices' latencies."""
        out = {g: self.scalers_[g](raw_group(g, self.space_, keys, self.tables_, self.devices_)) for g in self.groups}
        if "lat" in out and lat_devices is not None:
            scaler = self.scalers_["lat"]
            kept = [d for d, keep in zip(self.devices_, scaler.keep) if keep]
            cols = [j for j, d in enumerate(kept) if d in set(lat_devices)]
            out["lat"] = out["lat"][:, cols] * scaler.norm / np.sqrt(max(len(cols), 1))
        return out

    # -- adapt / predict ----------------------------------------------------------------------
    def _adapt(self, archs, y, device):
        self.feature_set_ = self._select(len(archs))
        feats = self._features(archs)
        self.coef_, self.intercept_, self.y_mean_, self.y_std_ = bayes_linear.fit(
            [feats[g] for g in self.feature_set_], np.log(y), weight_grid=self.weight_grid, noise_grid=self.noise_grid)
        self.device_ = device

    def _predict(self, archs):
        feats = self._features(archs)
        log_ms = bayes_linear.predict(self.coef_, self.intercept_, self.y_mean_, self.y_std_,
                                      [feats[g] for g in self.feature_set_])
        return np.exp(log_ms)


def _rho(pred, truth) -> float:
    if np.ptp(pred) == 0:
        return 0.0
    return float(spearmanr(pred, truth).statistic)
