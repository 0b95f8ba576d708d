"""A device's latency table as a sum of per-layer op costs: its additive fit.

FBNet networks are chains of 22 layers, one op each, and several HW-NAS-Bench devices time them
exactly as the sum of their layers (a ridge fit on the Vec one-hot ranks eyeriss, fpga, pixel3
and raspi4 at 1.000). A train device's latency column used as a regressor for a new device
carries its own timing noise into that regression, which with 5-10 samples is fitted as if it
were signal (the whole-ms phones: samsung_s7, essential_ph_1). The additive fit of each train
device (one cost per layer and op, ridge over its pretraining sample) keeps what the layers
explain and leaves the noise out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spaces import get_space

# Ridge penalty per sample: 1e-3 and 1e-2 gave the same rho (leave-one-train-device-out, FBNet).
RIDGE = 1e-3


def layer_design(space: str, keys) -> np.ndarray:
    """(n, 1 + columns) intercept and the Vec one-hot of ``keys``: what :class:`LayerCosts` multiplies."""
    onehot = get_space(space).vec_encoding(list(keys)).astype(np.float64)
    return np.hstack([np.ones((len(onehot), 1)), onehot])


@dataclass(frozen=True)
class LayerCosts:
    """One device's intercept and per-(layer, op) costs in ms (``costs``) in ``space``; ``floor`` is half
    its smallest measured latency, below which a prediction is clipped (a column the model takes
    the log of must stay positive)."""

    space: str
    costs: np.ndarray
    floor: float

    def latency(self, keys, design=None) -> np.ndarray:
        """(n,) additive latency in ms of ``keys``; ``design``, when given, is their :func:`layer_design`
        (computed once for many devices)."""
        design = layer_design(self.space, keys) if design is None else design
        return np.maximum(design @ self.costs, self.floor)


def fit_layer_costs(space: str, latency_ms: pd.Series, ridge: float = RIDGE) -> LayerCosts | None:
    """The additive fit of ``latency_ms`` (indexed by arch key), or None when the series has fewer
    than twice as many samples as costs (the fit would be noise)."""
    x = layer_design(space, latency_ms.index)
    if len(x) < 2 * x.shape[1]:
        return None
    y = latency_ms.to_numpy(np.float64)
    gram = x.T @ x + ridge * len(x) * np.eye(x.shape[1])
    return LayerCosts(space, np.linalg.solve(gram, x.T @ y), 0.5 * float(y.min()))


__all__ = ["RIDGE", "LayerCosts", "fit_layer_costs", "layer_design"]
