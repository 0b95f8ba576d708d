"""What both forms of the onboarding posterior share: averaging the grid points' predictions.

A posterior (:class:`~predictors.onboard.posterior.GridPosterior` on k x k kernels,
:class:`~predictors.onboard.feature_posterior.FeaturePosterior` in feature space for many
measurements) gives every retained grid point's mean and variance (``point_mean_var``); the
onboarding reads their Bayesian model average (BMA) in the method's response units.
"""
from __future__ import annotations

import numpy as np


class GridAverage:
    """The BMA of a posterior's grid points; subclasses hold ``method``, ``prob``, ``y_mean``, ``y_std``
    and give ``point_mean_var(feats)`` and ``rows_per_chunk()`` (rows whose (C, ..., m) blocks fit)."""

    def features(self, archs) -> list[np.ndarray]:
        return self.method.model_features(archs)

    def mean_var(self, archs=None, *, feats=None) -> tuple[np.ndarray, np.ndarray]:
        """BMA predictive mean and variance (noise-free) of ``archs`` in the method's response units.

        Variance = average within-point variance + variance of the grid points' means.
        """
        feats = self.features(archs) if feats is None else feats
        m = feats[0].shape[0]
        chunk = self.rows_per_chunk()
        mean, var = np.empty(m), np.empty(m)
        for start in range(0, m, chunk):
            part = [f[start:start + chunk] for f in feats]
            mu, v = self.point_mean_var(part)
            avg = self.prob @ mu
            mean[start:start + chunk] = avg
            var[start:start + chunk] = self.prob @ v + self.prob @ (mu - avg) ** 2
        return self.y_mean + self.y_std * mean, self.y_std ** 2 * var

    def noise_var(self, mean) -> np.ndarray:
        """The fitted noise variance at model values ``mean`` (response units), averaged over the grid points:
        what the model cannot explain of a latency beside its unsure mean (relative to the latency for an ms
        model with relative noise)."""
        return self.y_std ** 2 * float(self.prob @ self.noise) * self.method.noise_sd_factor(mean) ** 2

    def log_ms_mean_sd(self, archs=None, *, feats=None, with_noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`mean_var` as log-ms mean and standard deviation (for an ms model: the log of the
        positive mean, and the standard deviation relative to it, as +-5 % reads 0.05 in log-ms).
        ``with_noise``: of a latency (the predictive spread, :meth:`noise_var` added), not of the mean."""
        mean, var = self.mean_var(archs, feats=feats)
        if with_noise:
            var = var + self.noise_var(mean)
        return np.log(self.method.from_response(mean)), np.sqrt(var) * self.method.log_ms_slope(mean)


__all__ = ["GridAverage"]
