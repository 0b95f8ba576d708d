"""The onboarding posterior in feature space, for a device the store holds many measurements of.

:class:`~predictors.onboard.posterior.GridPosterior` keeps, per retained grid point, the inverse of
the measured set's k x k covariance: 2 GB a point for a device's whole NB201 table (15,625), and its
grams and cross-covariances as many again, so `hwl onboard` on such a store ran out of memory (2,000
measurements took 1.1 GB). Every grid point is a linear model: in its whitened coefficients u
(``theta = S^(1/2) u``, u ~ N(0, I) a priori; ``Z = X S^(1/2)`` the measured set's columns scaled by
the point's prior weights, a bias column included) the posterior is Gaussian with precision
``A = I + Z^T W Z / s`` and mean ``Z^T K^-1 y``. Means, covariances, leave-one-out residuals and
pathwise draws then need A's Cholesky factor (p x p, p columns) and the measured set's columns only,
at a cost linear in k. The numbers are the kernel form's up to round-off, and :meth:`FeaturePosterior.draws`
reads the random stream in the kernel form's order, so one seed gives the same draws in both forms.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from predictors import grid_primal
from predictors.onboard.bma import GridAverage
from predictors.recommended import BIAS_VARIANCE, GridWeights


@dataclass
class FeaturePosterior(GridAverage):
    """Posterior of every retained grid point on one measured set, in feature space.

    Attributes
    ----------
    x : ndarray
        (k, p) the measured architectures' columns, all groups side by side and a bias column
        (``grid_primal.with_bias``); ``owner`` (p,) each column's group (-1: the bias).
    combos, noise, prob, alpha, sample_weights, y_mean, y_std :
        As in :class:`~predictors.onboard.posterior.GridPosterior`.
    chol : list of ndarray
        Per grid point, the lower Cholesky factor of its posterior precision ``A`` over the columns
        its prior weighs; ``coef`` the posterior mean of those whitened coefficients.
    """

    method: object
    x: np.ndarray
    owner: np.ndarray
    combos: np.ndarray
    noise: np.ndarray
    prob: np.ndarray
    alpha: np.ndarray
    sample_weights: np.ndarray
    y_mean: float
    y_std: float
    chol: list
    coef: list

    def rows_per_chunk(self) -> int:
        return max(1, int(4e6 // (len(self.prob) * self.x.shape[1])))  # bounds the (p, m) blocks

    def _whitened(self, c: int, x: np.ndarray) -> np.ndarray:
        """``x``'s columns that grid point ``c`` weighs, times the square root of their prior weight."""
        scale = grid_primal.column_scales(self.combos[c], self.owner)
        return x[:, scale > 0] * scale[scale > 0]

    def point_mean_var(self, feats) -> tuple[np.ndarray, np.ndarray]:
        """(C, m) posterior mean and variance (noise-free) of every retained grid point."""
        x = _columns(feats)
        mean, var = np.empty((len(self.prob), len(x))), np.empty((len(self.prob), len(x)))
        for c in range(len(self.prob)):
            z = self._whitened(c, x)
            mean[c] = z @ self.coef[c]
            half = solve_triangular(self.chol[c], z.T, lower=True)
            var[c] = np.einsum("ij,ij->j", half, half)
        return mean, np.maximum(var, 0.0)

    def point_cov(self, keep, feats_a, feats_b) -> np.ndarray:
        """(len(keep), a, b) posterior covariance (noise-free) between two sets of rows at grid points ``keep``."""
        xa, xb = _columns(feats_a), _columns(feats_b)
        out = np.empty((len(keep), len(xa), len(xb)))
        for i, c in enumerate(keep):
            half_a = solve_triangular(self.chol[c], self._whitened(c, xa).T, lower=True)
            half_b = solve_triangular(self.chol[c], self._whitened(c, xb).T, lower=True)
            out[i] = half_a.T @ half_b
        return out

    def loo_residuals(self) -> np.ndarray:
        """(k,) leave-one-out residuals of the measured set (standardised units), averaged over grid points:
        ``alpha_i / (K^-1)_ii`` as in the kernel form, the diagonal from ``grid_primal``."""
        diag = np.stack([grid_primal.loo_variance_inverse(self.combos[c], self.x, self.owner, self.noise[c],
                                                          self.sample_weights) for c in range(len(self.prob))])
        return self.prob @ (self.alpha / diag)

    def draws(self, feats, n_draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Functions drawn from the posterior at ``feats``' rows (standardised units, noise-free).

        Returns ``((n_draws, m) draws, (n_draws,) noise standard deviation of each draw's grid point)``.
        Pathwise: a prior draw u and noise eps, moved by ``A^-1 Z^T W (y - Z u - eps) / s``.
        """
        x_new = _columns(feats)
        k = len(self.x)
        which = rng.choice(len(self.prob), size=n_draws, p=self.prob)
        out = np.empty((n_draws, len(x_new)))
        for c in np.unique(which):
            rows = np.flatnonzero(which == c)
            u = self._prior_draws(c, len(rows), rng)
            eps = np.sqrt(self.noise[c] / self.sample_weights)[:, None] * rng.standard_normal((k, len(rows)))
            z = self._whitened(c, self.x)
            pull = z.T @ (self.sample_weights[:, None] * (z @ u + eps)) / self.noise[c]
            # A^-1 Z^T W y / s is the posterior mean ``coef``
            u_post = self.coef[c][:, None] + u - cho_solve((self.chol[c], True), pull)
            out[rows] = (self._whitened(c, x_new) @ u_post).T
        return out, np.sqrt(self.noise[which])

    def _prior_draws(self, c: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """(columns weighed, n) whitened prior coefficients, drawn as ``GridPosterior.draws`` draws
        them (the bias first, then each weighed group's columns), stacked in the columns' order."""
        bias = rng.standard_normal(n)
        groups = [rng.standard_normal((int(np.sum(self.owner == g)), n))
                  for g, w in enumerate(self.combos[c]) if w > 0]
        return np.vstack(groups + [bias[None]])


def _columns(feats) -> np.ndarray:
    return grid_primal.with_bias(list(feats), BIAS_VARIANCE)[0]


def fit_in_feature_space(adapted, grid: GridWeights, keep, prob) -> FeaturePosterior:
    """The posterior of ``adapted``'s ``grid`` (``PhysBayes.fit_grid`` on the measured set) at grid points
    ``keep`` with renormalised weights ``prob``, in feature space."""
    x, owner = grid_primal.with_bias(grid.groups, BIAS_VARIANCE)
    weights = grid.sample_weights
    gram = x.T @ (x * weights[:, None])  # X^T W X, shared by every grid point
    chol, coef = [], []
    for c in keep:
        scale = grid_primal.column_scales(grid.combos[c], owner)
        on = scale > 0
        precision = np.eye(on.sum()) + gram[np.ix_(on, on)] * np.outer(scale[on], scale[on]) / grid.noise[c]
        chol.append(np.linalg.cholesky(precision))
        coef.append((x[:, on] * scale[on]).T @ grid.alpha[c])  # Z^T K^-1 y
    return FeaturePosterior(adapted, x, owner, grid.combos[keep], grid.noise[keep], prob, grid.alpha[keep],
                            weights, grid.y_mean, grid.y_std, chol, coef)


__all__ = ["FeaturePosterior", "fit_in_feature_space"]
