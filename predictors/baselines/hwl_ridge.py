"""HWL ridge: ridge regression on the k samples from the train devices' min-max-scaled latencies."""
from __future__ import annotations

import logging

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from predictors.base import FewShotMethod, UnusableMeasurementsError, full_tables, train_tables
from predictors.encodings.hwl import HWLEncoder, latency_matrix
from spaces import get_space

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


class HWLRidge(FewShotMethod):
    """Ridge on HWL features (train devices' latencies, min-max scaled on train archs).

    Parameters
    ----------
    alpha : float, optional
        Ridge penalty; None chooses it per k from ``alphas`` by leave-one-train-device-out.
    alphas : tuple of float
        Candidates for that choice.
    select_ks : tuple of int
        k values whose alpha is chosen during ``pretrain`` (others on first use).
    select_repeats : int
        Random k-subsets per held-out train device.
    random_state : int, optional
        Seed of the selection's draws.

    Attributes
    ----------
    encoder_ : HWLEncoder
    alphas_ : dict
        k -> chosen alpha.
    model_ : sklearn.linear_model.Ridge
        Fitted on the k samples by ``adapt``.
    """

    name = "hwl_ridge"

    def __init__(self, alpha=None, *, alphas=DEFAULT_ALPHAS, select_ks=(5, 10, 20), select_repeats: int = 3,
                 random_state=None):
        self.alpha = alpha
        self.alphas = alphas
        self.select_ks = select_ks
        self.select_repeats = select_repeats
        self.random_state = random_state

    def pretrain(self, space, train):
        self.space_ = get_space(space).NAME
        train = train_tables(self.space_, train, f"{type(self).__name__}.pretrain")
        self.tables_ = full_tables(train)
        self.train_ = dict(train)
        fit_archs = sorted({a for s in train.values() for a in s.index}, key=str)
        self.encoder_ = HWLEncoder(self.tables_).fit(fit_archs)
        self.alphas_ = {}
        if self.alpha is None:
            for k in self.select_ks:
                self._alpha_for(k)
        return self

    def _alpha_for(self, k: int) -> float:
        if self.alpha is not None:
            return float(self.alpha)
        if k in self.alphas_:
            return self.alphas_[k]
        devices = list(self.tables_)
        if len(devices) < 2:
            self.alphas_[k] = 1.0
            return 1.0
        rng = np.random.default_rng([0 if self.random_state is None else self.random_state, k, 1])
        scores = np.zeros(len(self.alphas))
        for j, held_out in enumerate(devices):
            truth = self.train_[held_out]
            if len(truth) <= k + 1:
                continue
            keys = list(truth.index)
            if len(keys) > 2000 + k:
                keys = [keys[i] for i in rng.choice(len(keys), 2000 + k, replace=False)]
            X = np.delete(self.encoder_.transform(keys), j, axis=1)
            y = np.log(truth.loc[keys].to_numpy(np.float64))
            for _ in range(self.select_repeats):
                picked = rng.choice(len(keys), size=k, replace=False)
                rest = np.setdiff1d(np.arange(len(keys)), picked)
                for i, a in enumerate(self.alphas):
                    pred = Ridge(alpha=a).fit(X[picked], y[picked]).predict(X[rest])
                    scores[i] += spearmanr(pred, y[rest]).statistic if np.ptp(pred) > 0 else 0.0
        self.alphas_[k] = float(self.alphas[int(np.argmax(scores))])
        log.info("hwl_ridge k=%d: alpha %g", k, self.alphas_[k])
        return self.alphas_[k]

    def _adapt(self, archs, y, device):
        if self._in_no_table(archs).all():  # every feature is the fill value: the fit is a constant
            raise UnusableMeasurementsError(
                f"hwl_ridge predicts from the train devices' latencies of an architecture, and none of the "
                f"{len(archs)} measured ones is in a train device's table, so it would predict one latency for every "
                "architecture; measure architectures the train tables hold, or use phys_bayes (its physical costs "
                "need no table)")
        self.model_ = Ridge(alpha=self._alpha_for(len(archs))).fit(self.encoder_.transform(archs), np.log(y))
        self.device_ = device

    def _in_no_table(self, archs) -> np.ndarray:
        """Per arch, whether no train device's table holds it (its HWL features are the encoder's fill)."""
        return np.isnan(latency_matrix(self.tables_, self.encoder_.devices_, archs)).all(axis=1)

    def _predict(self, archs):
        unknown = int(self._in_no_table(archs).sum())
        if unknown > 1:
            log.warning("hwl_ridge: %d of the %d architectures are in no train device's table: it predicts one and "
                        "the same latency for all of them", unknown, len(archs))
        return np.exp(self.model_.predict(self.encoder_.transform(archs)))
