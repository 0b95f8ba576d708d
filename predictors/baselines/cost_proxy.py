"""FLOPs and params baselines: rank architectures by their analytical cost (no learning)."""
from __future__ import annotations

import numpy as np

from predictors.base import FewShotMethod
from spaces import cost, get_space


class FlopsBaseline(FewShotMethod):
    """Predict latency rank by MACs (``spaces.cost.flops_params``); the k samples are unused.

    Parameters
    ----------
    dataset : str, optional
        Dataset the networks are priced for (space default when None).
    """

    name = "flops"
    _column = 0

    def __init__(self, dataset=None):
        self.dataset = dataset

    def pretrain(self, space, train):
        self.space_ = get_space(space).NAME
        return self

    def _adapt(self, archs, y, device):
        self.device_ = device

    def _predict(self, archs):
        return np.asarray(cost.flops_params(self.space_, archs, dataset=self.dataset)[self._column], dtype=np.float64)


class ParamsBaseline(FlopsBaseline):
    """Predict latency rank by parameter count; the k samples are unused."""

    name = "params"
    _column = 1
