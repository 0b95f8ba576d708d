"""Where to measure next with a closed-form model: D-optimal designs and posterior-variance batches.

Three pickers, all deterministic given ``rng``:

- :func:`design_picks`: the method's own D-optimal design (``PhysBayes.choose``: greedy largest
  posterior variance of a linear model on rank-gauss ``phys`` + ``lat`` columns), continued from
  the architectures already measured (their rows update the posterior first), so it reads no
  target latency and a resumed onboarding extends the same kind of design;
- :func:`variance_picks`: the largest BMA predictive variance of the fitted model
  (:class:`~predictors.onboard.posterior.GridPosterior`, or ``FeaturePosterior`` for many
  measurements: within-grid-point variance plus the
  grid points' disagreement), times a focus weight; after each pick of a batch every grid
  point's variance is conditioned on it (no latency needed for that);
- :func:`integrated_picks`: the largest expected reduction of the (focus-weighted) predictive
  variance summed over a reference sample of the pool (integrated variance, "ALC"): favours
  representative architectures over the extreme ones plain variance chases.
"""
from __future__ import annotations

import numpy as np

from predictors.onboard.posterior import Posterior
from predictors.recommended import DESIGN_POOL, d_optimal


def design_matrix(method, candidates) -> np.ndarray | None:
    """The method's design columns of ``candidates`` (None for a method without a D-optimal design)."""
    if not getattr(method, "design_groups", None) or not hasattr(method, "design_matrix"):
        return None
    return method.design_matrix(list(candidates))


def design_picks(design: np.ndarray, n: int, taken, rng: np.random.Generator, *,
                 pool: int | None = DESIGN_POOL) -> list[int]:
    """``n`` rows of ``design`` by the method's greedy D-optimality, conditioned on the ``taken`` rows."""
    return [int(i) for i in d_optimal(design, n, rng, pool=pool, taken=taken)]


def _top(post: Posterior, max_points: int):
    keep = np.argsort(-post.prob)[:max_points]
    return keep, post.prob[keep] / post.prob[keep].sum()


def variance_picks(post: Posterior, feats, n: int, *, weights=None, max_points: int = 64) -> list[int]:
    """``n`` rows of ``feats`` (per-group pool features) by greedy focus-weighted BMA variance."""
    m = feats[0].shape[0]
    weights = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    keep, prob = _top(post, max_points)
    mu, var = post.point_mean_var(feats)
    mu, var = mu[keep], var[keep]
    between = prob @ (mu - prob @ mu) ** 2
    noise = post.noise[keep]
    picked: list[int] = []
    updates: list = []
    for _ in range(min(n, m)):
        score = weights * (prob @ var + between)
        score[picked] = -np.inf
        j = int(np.argmax(score))
        picked.append(j)
        col = _conditioned_col(post, keep, feats, j, updates)
        updates.append(col / np.sqrt(var[:, j:j + 1] + noise[:, None]))
        var = np.maximum(var - updates[-1] ** 2, 0.0)
        between = between.copy()
        between[j] = 0.0
    return picked


def _conditioned_col(post, keep, feats, j: int, updates: list) -> np.ndarray:
    """(C, m) posterior covariance of every row with row ``j``, given the batch's earlier picks too.

    ``updates`` holds one (C, m) vector per earlier pick: ``cov(:, p) / sqrt(var(p) + noise)``.
    """
    col = post.point_cov(keep, feats, [f[j:j + 1] for f in feats])[..., 0]
    for u in updates:
        col = col - u * u[:, j:j + 1]
    return col


def integrated_picks(post: Posterior, feats, n: int, rng: np.random.Generator, *, weights=None,
                     n_reference: int = 200, max_points: int = 32) -> list[int]:
    """``n`` rows of ``feats`` by greedy expected reduction of the summed variance of a reference set.

    The reference set is a random ``n_reference`` rows of the pool, each weighted by ``weights``.
    """
    m = feats[0].shape[0]
    weights = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    keep, prob = _top(post, max_points)
    ref = np.sort(rng.choice(m, size=min(n_reference, m), replace=False))
    cov = post.point_cov(keep, [f[ref] for f in feats], feats)                          # (C, R, m)
    w_ref = weights[ref]
    return greedy_reference_picks(post, keep, prob, feats, cov, n,
                                  lambda cov: np.einsum("r,crm->cm", w_ref, cov ** 2))


def greedy_reference_picks(post: Posterior, keep, prob, feats, cov: np.ndarray, n: int, reduction) -> list[int]:
    """``n`` rows of ``feats``, each the one whose measurement most reduces a quantity of a reference set.

    ``cov`` (C, R, m): the reference rows' covariance with every row, per kept grid point (``keep``, weights
    ``prob``); it is conditioned on each pick in turn. ``reduction(cov)`` (C, m): what measuring each row would
    take off the quantity, times that row's variance plus noise (the summed squared covariances for the
    summed variance, say).
    """
    var = np.maximum(post.point_mean_var(feats)[1][keep], 0.0)                          # (C, m)
    noise = post.noise[keep]
    picked: list[int] = []
    updates: list = []
    for _ in range(min(n, feats[0].shape[0])):
        gain = prob @ (reduction(cov) / (var + noise[:, None]))
        gain[picked] = -np.inf
        j = int(np.argmax(gain))
        picked.append(j)
        col = _conditioned_col(post, keep, feats, j, updates)
        scale = 1.0 / (var[:, j] + noise)
        cov = cov - np.einsum("cr,cm->crm", cov[:, :, j] * scale[:, None], col)
        updates.append(col * np.sqrt(scale)[:, None])
        var = np.maximum(var - updates[-1] ** 2, 0.0)
    return picked


__all__ = ["design_matrix", "design_picks", "greedy_reference_picks", "integrated_picks", "variance_picks"]
