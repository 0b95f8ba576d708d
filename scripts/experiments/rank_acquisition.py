#!/usr/bin/env python
"""Onboarding replay with a ranking-targeted acquisition (research, not the product).

The loop's ``variance`` and ``integrated`` acquisitions reduce the posterior variance of single
latencies. A rank score is hurt by pairs of archs whose predicted order is unsure, so here the
next pick is the one whose measurement most reduces the variance of the *differences* of such
pairs (:func:`rank_picks`). For a reference sample ``R`` of the pool, pair ``(a, b)`` weighs
``w_a w_b phi(d_ab / s_ab) / s_ab ** 2`` (``d``, ``s``: the BMA mean and standard deviation of
``f_a - f_b``; ``w``: the loop's latency focus): close, unsure pairs in the range NAS uses count
most. A pick ``x`` cuts ``var(f_a - f_b)`` by ``(c_ax - c_bx) ** 2 / (var_x + noise)``, so its
summed gain is the Laplacian form ``c_x' L c_x / (var_x + noise)`` of the pair weights (one
``R x R`` product per grid point, no loop over pairs).

It stands in for ``design.integrated_picks`` (``loop/acquisition=integrated``) and then runs
``scripts/bench_onboard`` with the same arguments::

    scripts/experiments/rank_acquisition.py --mode family --tasks F0 --strategies "loop/acquisition=integrated"

Not better than the posterior variance on train replay; numbers in ``variants.py``'s docstring
(onboarding picks).
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from predictors.onboard import design  # noqa: E402
from predictors.onboard.design import _top  # noqa: E402


def pair_laplacian(mean: np.ndarray, cov: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R, R) Laplacian of the pair weights ``w_a w_b phi(d / s) / s ** 2`` (see module doc).

    ``mean``: (R,) BMA mean; ``cov``: (R, R) BMA covariance of the reference rows.
    """
    diag = np.diag(cov)
    var = np.maximum(diag[:, None] + diag[None, :] - 2.0 * cov, 1e-12)
    diff = mean[:, None] - mean[None, :]
    pair = np.outer(weights, weights) * norm.pdf(diff / np.sqrt(var)) / var
    np.fill_diagonal(pair, 0.0)
    return np.diag(pair.sum(axis=1)) - pair


def rank_picks(post, feats, n: int, rng: np.random.Generator, *, weights=None, n_reference: int = 150,
               max_points: int = 16) -> list[int]:
    """``n`` rows of ``feats`` by greedy reduction of the weighted variance of unsure pairs' differences."""
    m = feats[0].shape[0]
    weights = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    keep, prob = _top(post, max_points)
    ref = np.sort(rng.choice(m, size=min(n_reference, m), replace=False))
    ref_feats = [f[ref] for f in feats]
    mu_ref = post.point_mean_var(ref_feats)[0][keep]                                 # (C, R)
    mean = prob @ mu_ref
    cov_rr = np.einsum("c,crs->rs", prob, post.point_cov(keep, ref_feats, ref_feats))
    spread = mu_ref - mean
    cov_rr += np.einsum("c,cr,cs->rs", prob, spread, spread)                         # grid points' disagreement
    lap = pair_laplacian(mean, cov_rr, weights[ref])
    cov = post.point_cov(keep, ref_feats, feats)                                     # (C, R, m)
    return design.greedy_reference_picks(post, keep, prob, feats, cov, n,
                                         lambda cov: np.einsum("crm,crm->cm", cov, np.matmul(lap, cov)))

if __name__ == "__main__":
    design.integrated_picks = rank_picks  # the loop looks it up on the module at each round
    sys.argv[0] = str(ROOT / "scripts" / "bench_onboard")
    runpy.run_path(sys.argv[0], run_name="__main__")
