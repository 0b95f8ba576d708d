"""The closed-form posterior of the recommended method, for choosing and for estimating rho.

``phys_bayes`` (:class:`predictors.recommended.PhysBayes`) is a Bayesian linear model averaged
over a grid of group weights x noise levels with Student-t sample weights. Its posterior is
known exactly, so the onboarding needs no ensemble of refits and no cross-validation:

- :func:`fit_posterior` takes the method's grid weighting on the measured set
  (:func:`predictors.recommended.grid_weights`) and keeps the most probable grid points
  (``mass`` of the weight);
- above ``recommended.PRIMAL_ABOVE`` measurements (``recommended.in_feature_space``) the same
  posterior is held in feature space (:class:`~predictors.onboard.feature_posterior.FeaturePosterior`:
  p x p matrices, memory and time linear in k; the k x k form of a device's whole table would
  not fit in memory), with the same methods and, up to round-off, the same numbers;
- :meth:`GridPosterior.mean_var` gives the averaged (BMA) predictive mean and variance of any
  architectures: within-point posterior variance plus the disagreement between grid points;
- :meth:`GridPosterior.draws` draws whole latency functions over a set of architectures (a grid
  point by its probability, then the function by pathwise conditioning: a prior draw corrected
  by the posterior's linear map) plus the fitted noise;
- :func:`model_rho` is the model's own estimate of the Spearman rho of its mean against the
  truth on the unmeasured architectures: the average over draws, with draw quantiles as the
  interval;
- :func:`expected_log_error` is the root mean square log error the model expects of one
  predicted latency.

Everything is in the method's standardised response units (ms or log-ms, ``PhysBayes.response``;
:meth:`GridPosterior.log_ms_mean_sd` converts); Spearman is scale-free.
:func:`supports` tells whether an adapted method has this structure (other methods fall back
to the ensemble and cross-validation of ``ensemble`` and ``estimate``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from predictors import recommended
from predictors.onboard.bma import GridAverage
from predictors.onboard.feature_posterior import FeaturePosterior, fit_in_feature_space

BIAS_VARIANCE = recommended.BIAS_VARIANCE


def supports(method) -> bool:
    """True for a (pretrained or adapted) evidence-averaged linear method like ``phys_bayes``."""
    return isinstance(method, recommended.PhysBayes) and hasattr(method, "scalers_")


@dataclass
class GridPosterior(GridAverage):
    """Posterior of every retained grid point on one measured set, on the k x k kernels of the measured set.

    Attributes
    ----------
    train : list of ndarray
        Per group, the (k, p_g) features of the measured architectures.
    combos : ndarray
        (C, G) group prior weights of the retained grid points; ``noise`` (C,) their noise
        variance; ``prob`` (C,) their renormalised evidence weight.
    kinv : ndarray
        (C, k, k) inverse prior+noise covariance of the measured set; ``alpha`` (C, k) ``K^-1 y``.
    sample_weights : ndarray
        (k,) relative-noise times Student-t weights (noise of sample i is ``noise / w_i``).
    y_mean, y_std : float
        Standardisation of the measured latencies in the method's response units.
    """

    method: object
    train: list
    combos: np.ndarray
    noise: np.ndarray
    prob: np.ndarray
    kinv: np.ndarray
    alpha: np.ndarray
    sample_weights: np.ndarray
    y_mean: float
    y_std: float

    def rows_per_chunk(self) -> int:
        return max(1, int(4e6 // (len(self.prob) * self.train[0].shape[0])))  # bounds the (C, k, m) blocks

    def _cross(self, feats) -> np.ndarray:
        """(C, k, m) prior covariance between the measured set and ``feats``' rows."""
        grams = np.stack([t @ f.T for t, f in zip(self.train, feats)])                # (G, k, m)
        return np.einsum("cg,gkm->ckm", self.combos, grams) + BIAS_VARIANCE

    def _prior_var(self, feats) -> np.ndarray:
        norms = np.stack([np.einsum("ij,ij->i", f, f) for f in feats])                # (G, m)
        return self.combos @ norms + BIAS_VARIANCE                                    # (C, m)

    def point_mean_var(self, feats) -> tuple[np.ndarray, np.ndarray]:
        """(C, m) posterior mean and variance (noise-free) of every retained grid point."""
        cross = self._cross(feats)
        mean = np.einsum("ck,ckm->cm", self.alpha, cross)
        var = self._prior_var(feats) - np.einsum("ckm,ckm->cm", cross, self.kinv @ cross)
        return mean, np.maximum(var, 0.0)

    def point_cov(self, keep, feats_a, feats_b) -> np.ndarray:
        """(len(keep), a, b) posterior covariance (noise-free) between two sets of rows at grid points ``keep``."""
        cross_a = np.einsum("cg,gka->cka", self.combos[keep], np.stack([t @ f.T for t, f in zip(self.train, feats_a)]))
        cross_b = np.einsum("cg,gkb->ckb", self.combos[keep], np.stack([t @ f.T for t, f in zip(self.train, feats_b)]))
        cross_a += BIAS_VARIANCE
        cross_b += BIAS_VARIANCE
        prior = np.einsum("cg,gab->cab", self.combos[keep], np.stack([fa @ fb.T for fa, fb in zip(feats_a, feats_b)]))
        return prior + BIAS_VARIANCE - np.einsum("cka,ckb->cab", cross_a, self.kinv[keep] @ cross_b)

    def loo_residuals(self) -> np.ndarray:
        """(k,) leave-one-out residuals of the measured set (standardised units), averaged over grid points.

        Closed form per grid point: ``alpha_i / (K^-1)_ii``; heavy-tailed where the device's
        measurements are (the Student-t weights inflate an outlier's noise, not its residual).
        """
        return self.prob @ (self.alpha / np.diagonal(self.kinv, axis1=1, axis2=2))

    def draws(self, feats, n_draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Functions drawn from the posterior at ``feats``' rows (standardised units, noise-free).

        Returns ``((n_draws, m) draws, (n_draws,) noise standard deviation of each draw's grid point)``.
        """
        m = feats[0].shape[0]
        k = self.train[0].shape[0]
        which = rng.choice(len(self.prob), size=n_draws, p=self.prob)
        out = np.empty((n_draws, m))
        for c in np.unique(which):
            rows = np.flatnonzero(which == c)
            n = len(rows)
            w = self.combos[c]
            f_tr = np.sqrt(BIAS_VARIANCE) * np.broadcast_to(rng.standard_normal(n), (k, n)).copy()
            f_te = np.sqrt(BIAS_VARIANCE) * np.broadcast_to(f_tr[0], (m, n)).copy()
            for g, (t, f) in enumerate(zip(self.train, feats)):
                if w[g] > 0:
                    theta = np.sqrt(w[g]) * rng.standard_normal((t.shape[1], n))
                    f_tr += t @ theta
                    f_te += f @ theta
            eps = np.sqrt(self.noise[c] / self.sample_weights)[:, None] * rng.standard_normal((k, n))
            cross = np.einsum("g,gkm->km", w, np.stack([t @ f.T for t, f in zip(self.train, feats)])) + BIAS_VARIANCE
            mu = cross.T @ self.alpha[c]
            out[rows] = (mu[:, None] + f_te - cross.T @ (self.kinv[c] @ (f_tr + eps))).T
        return out, np.sqrt(self.noise[which])


Posterior = GridPosterior | FeaturePosterior  # the two forms of one posterior (kernel, feature space)


def fit_posterior(adapted, archs, latency_ms, *, mass: float = 0.999, max_points: int = 512) -> Posterior | None:
    """The posterior of ``adapted`` (a ``phys_bayes`` adapted on ``archs``), or None when undefined.

    Takes the method's own grid weighting (``PhysBayes.measured_fit``: relative noise and Student-t
    reweighting, then the evidence of every grid point) and keeps the most probable
    grid points holding ``mass`` of the weight (at most ``max_points``). None with fewer than 2
    measurements or equal latencies (the method then predicts a constant). In feature space where
    the grid's evidence is (``recommended.in_feature_space``: many measurements), else on k x k kernels.
    """
    if not supports(adapted):
        raise ValueError(f"{type(adapted).__name__} has no closed-form grid posterior (phys_bayes has)")
    archs = list(archs)
    train, grid = adapted.measured_fit(archs, latency_ms)
    if grid is None:
        return None
    p = grid.prob
    order = np.argsort(-p)
    keep = order[:max(1, min(max_points, int(np.searchsorted(np.cumsum(p[order]), mass)) + 1))]
    prob = p[keep] / p[keep].sum()
    if recommended.in_feature_space(train, len(archs)):
        return fit_in_feature_space(adapted, grid, keep, prob)
    kinv = np.linalg.inv(grid.covariances(keep))
    return GridPosterior(adapted, train, grid.combos[keep], grid.noise[keep], prob, kinv, grid.alpha[keep],
                         grid.sample_weights, grid.y_mean, grid.y_std)


def spearman_rows(ref: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Spearman rho of ``ref`` against each row of ``draws``."""
    r = rankdata(ref)
    r = (r - r.mean()) / r.std()
    d = rankdata(draws, axis=1)
    d = (d - d.mean(axis=1, keepdims=True)) / d.std(axis=1, keepdims=True)
    return d @ r / len(r)


def model_rho(post: Posterior, pred, feats, *, rng: np.random.Generator, n_draws: int = 64,
              confidence: float = 0.9, noise_dof: float | None = None, temperature: float = 1.0,
              loo_scale: float | None = None):
    """Model-based estimate of the rho of ``pred`` against the truth at ``feats``' rows.

    ``pred`` is the adapted method's prediction in its response units (``predict_response``).
    Each draw is ``pred + temperature * (f - pred) + noise``: ``f`` a posterior function draw
    (temperature 1: the posterior as it is), the noise Gaussian with the draw's grid-point
    variance (Student-t with ``noise_dof`` degrees of freedom when given).
    Returns ``(point, low, high)``: the mean over draws of the Spearman rho and the draws'
    ``confidence`` interval.
    """
    return model_rho_at(post, pred, feats, [temperature], rng=rng, n_draws=n_draws, confidence=confidence,
                        noise_dof=noise_dof, loo_scale=loo_scale)[0]


def model_rho_at(post: Posterior, pred, feats, temperatures, *, rng: np.random.Generator,
                 n_draws: int = 64, confidence: float = 0.9, noise_dof: float | None = None,
                 loo_scale: float | None = None) -> list[tuple]:
    """:func:`model_rho` at several temperatures, on the same draws (to calibrate the temperature).

    ``loo_scale``: the noise is resampled from the measured set's leave-one-out residuals
    (:meth:`GridPosterior.loo_residuals`, centred) times ``loo_scale`` instead of drawn from the
    fitted noise level.
    """
    pred = np.asarray(pred, dtype=np.float64)
    if len(pred) < 2 or np.ptp(pred) == 0:
        return [(0.0, -1.0, 1.0)] * len(temperatures)
    funcs, noise_sd = post.draws(feats, n_draws, rng)
    if loo_scale is not None:
        loo = post.loo_residuals()
        z = rng.choice(loo_scale * (loo - loo.mean()), size=funcs.shape)
        noise_sd = np.ones(len(funcs))
    else:
        z = rng.standard_normal(funcs.shape)
    if noise_dof and loo_scale is None:
        z /= np.sqrt(rng.chisquare(noise_dof, size=funcs.shape) / noise_dof)
    predn = (pred - post.y_mean) / post.y_std
    # the rho draws keep one noise level per draw, as the estimate's calibration was fitted on
    alpha = (1.0 - confidence) / 2.0
    out = []
    for t in temperatures:
        draws = predn + t * (funcs - predn) + noise_sd[:, None] * z
        rhos = spearman_rows(pred, draws)
        low, high = np.quantile(rhos, [alpha, 1.0 - alpha])
        point = float(rhos.mean())
        out.append((point, float(min(low, point)), float(max(high, point))))
    return out


def expected_log_error(post: Posterior, feats, latency_ms, *, mean_weight: float = 1.0, tails: bool = True) -> float:
    """The root mean square log-ms error the model expects of one predicted latency of ``feats``' rows.

    Per arch, the posterior variance of its mean (times ``mean_weight``) plus the noise of a new latency, as a
    log-normal of that variance about the prediction (``log(1 + (sd / ms) ** 2)``: an ms model's spread read
    as relative to first order, which a first-order ``sd / ms`` overstates without bound on NB201's near-empty
    cells predicted at a fraction of a millisecond); the root of their mean over the rows. ``tails``: the noise
    is what the fit gave the measured latencies (``latency_ms``, the posterior's), outliers included
    (:func:`measured_noise_factor`), not the inliers' level the Student-t reweighting fits.
    """
    mean, var = post.mean_var(feats=feats)
    noise = post.noise_var(mean) * (measured_noise_factor(post, latency_ms) if tails else 1.0)
    relative_var = (mean_weight * var + noise) * post.method.log_ms_slope(mean) ** 2
    return float(np.sqrt(np.mean(np.log1p(relative_var))))


def measured_noise_factor(post: Posterior, latency_ms) -> float:
    """The mean, over the measured latencies, of the Student-t inflation of their noise (1: no outlier)."""
    relative = post.method.noise_weights(latency_ms)
    robust = post.sample_weights / (1.0 if relative is None else relative)
    return float(np.mean(1.0 / robust))


__all__ = ["FeaturePosterior", "GridPosterior", "Posterior", "expected_log_error", "fit_posterior",
           "measured_noise_factor", "model_rho", "model_rho_at",
           "spearman_rows", "supports"]
