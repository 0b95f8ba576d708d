"""The evidence grid of ``recommended.grid_weights`` in feature space, for many samples.

The sample covariance of a grid point is ``K = X S X^T + s D`` (``X`` the groups' columns and a
bias column, ``S`` their prior weights, ``D = diag(1 / w)`` the samples' relative noise). Its
k x k form costs k^3 per grid point and k^2 memory per group, which ended ``hwl adapt`` on a
whole campaign's table in an out-of-memory kill (15,625 measurements; 2,000 took 5 minutes).
With Woodbury's identity the same evidence, ``K^-1 y`` and leave-one-out variances need only
p x p matrices (p columns, a few hundred at most): the same numbers, at a cost linear in k.
"""
from __future__ import annotations

import numpy as np


def with_bias(groups: list[np.ndarray], bias_variance: float) -> tuple[np.ndarray, np.ndarray]:
    """(k, p) all groups' columns side by side plus a bias column, and (p,) each column's group
    (-1 for the bias), so a grid point's prior weight of every column can be read off."""
    k = len(groups[0])
    x = np.hstack([*groups, np.full((k, 1), np.sqrt(bias_variance))])
    owner = np.concatenate([np.full(g.shape[1], j) for j, g in enumerate(groups)] + [np.array([-1])])
    return x, owner


def column_scales(combo: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """sqrt of each column's prior weight at grid point ``combo`` (the bias column's is 1)."""
    return np.sqrt(np.where(owner < 0, 1.0, combo[np.maximum(owner, 0)]))


def grid_evidence(combos, x, owner, noise, weights, yn) -> tuple[np.ndarray, np.ndarray]:
    """(log evidence, K^-1 y) of every (combo, noise) grid point, noise varying fastest: the values
    of ``recommended._grid_evidence`` (up to round-off), computed in feature space."""
    noise = np.asarray(noise, dtype=np.float64)
    wx = x * weights[:, None]
    gram, xty = x.T @ wx, wx.T @ yn          # X^T W X and X^T W y, shared by every grid point
    yty = float(yn @ (weights * yn))
    const = -0.5 * (len(yn) * np.log(noise) - np.log(weights).sum())   # -log det(s D) / 2 per noise level
    log_ev, alpha = [], []
    for combo in combos:
        scale = column_scales(combo, owner)
        on = scale > 0
        xs = x[:, on] * scale[on]            # X S^(1/2), once per combo for every noise level
        sg = gram[np.ix_(on, on)] * np.outer(scale[on], scale[on])
        sb = xty[on] * scale[on]
        for j, s in enumerate(noise):
            chol = np.linalg.cholesky(np.eye(on.sum()) + sg / s)
            t = _cho_solve(chol, sb / s)
            log_ev.append(const[j] - 0.5 * (yty - sb @ t) / s - np.log(np.diagonal(chol)).sum())
            alpha.append(weights * (yn - xs @ t) / s)
    return np.array(log_ev), np.array(alpha)


def loo_variance_inverse(combo, x, owner, noise: float, weights) -> np.ndarray:
    """(k,) diagonal of ``K^-1`` at one grid point (``recommended`` divides ``K^-1 y`` by it for the
    leave-one-out residuals), without forming K."""
    scale = column_scales(combo, owner)
    on = scale > 0
    xs = x[:, on] * scale[on]                              # X S^(1/2)
    z = xs * weights[:, None]                              # W X S^(1/2)
    chol = np.linalg.cholesky(np.eye(on.sum()) + z.T @ xs / noise)
    half = np.linalg.solve(chol, z.T).T                    # rows: L^-1 (W X S^(1/2))_i
    return weights / noise - (half ** 2).sum(axis=1) / noise ** 2


def _cho_solve(chol: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.solve(chol.T, np.linalg.solve(chol, b))
