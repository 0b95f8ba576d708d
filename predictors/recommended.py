"""Our recommended few-shot latency method: physical costs + evidence-weighted Bayesian groups.

Why it works with 10-20 measurements
------------------------------------
- **Feature groups with a prior weight each**, averaged by their evidence on the k samples
  (``predictors.baselines.bayes_linear``): the train devices' latencies (``lat``, looked up
  in their whole tables; on FBNet each device's additive fit, which leaves its timing noise
  out: ``ADDITIVE_LAT``), op-type counts (``ops``), the Vec one-hot (``vec``), FLOPs and params
  (``cost``) and **physical costs** (``phys``, :mod:`predictors.phys_features`:
  pointwise/depthwise MACs, activation traffic, weights, kernel launches; for NB201 op counts
  on the edges a runtime keeps, whether it prunes what the cell input never reaches or only
  what the output does not need). ``phys`` has 6-11 columns yet ranks GPUs (launch bound),
  CPUs and phones (MAC bound) close to what the 198-column one-hot reaches with thousands of
  samples, so it is the group the evidence leans on when the new device is unlike every train
  device.
- **Group priors learned from the train devices** (:func:`group_prior_root`): each train
  device's pretraining sample is fitted on every group, and the group's prior covariance is
  the average of those coefficients' outer products plus a little of the isotropic prior. With
  10 samples the model then looks first along the directions devices actually use (which
  ops, costs and train devices matter) rather than anywhere in a 198-column span. Every group
  is in the model twice, under the isotropic and under the learned prior, and the evidence
  weighs the two blocks: a device unlike every train device falls back to the isotropic one.
- **Latency in ms, every group a sum over layers** (``response="ms"``): a network's latency is
  close to the sum of its layers' times, and HW-NAS-Bench's FBNet tables on several devices are
  exactly that (a ridge fit of the ms on 200 samples of the Vec one-hot ranks eyeriss, fpga,
  pixel3 and raspi4 at 1.000; of the log-ms at 0.94-0.98). So the model fits the ms, not their
  log, on groups that add up over layers too: the train devices' latencies in ms, the physical
  costs and FLOPs/params as counts, the one-hot and the op counts. Predictions below half the
  smallest measured latency are squeezed monotonically above zero (:func:`positive_ms`).
- **Relative noise** (``relative_noise``): an ms model with one noise level for every sample
  lets the largest archs dominate the fit, while a rank score weighs every arch alike and the
  small ones sit closest together. Each sample's noise variance grows with its latency,
  ``(y / mean y) ** 2 + RELATIVE_NOISE_FLOOR ** 2`` (the floor keeps NB201's ~0 ms cells from
  an unbounded weight): an additive mean with a relative-error likelihood.
- The weight grid contains 0, so a group can be switched off, and the average is over every
  combination of group weights and noise levels (Bayesian model averaging, no selection).
- **Robust likelihood**: phones measured in whole milliseconds (samsung_s7, samsung_a50) have
  heavy-tailed residuals (14 % beyond 3 MAD). Each sample's noise variance is inflated by a
  Student-t weight computed from its leave-one-out residual under the most probable
  hyper-parameters (``robust_iters`` rounds of iterative reweighting), so one outlier among
  10 samples no longer bends the fit.
- **choose()** spreads the k measurements: a greedy D-optimal design (most informative point
  under the current posterior of a linear model on the ``phys`` + ``lat`` columns) inside a
  random pool of candidates. It reads encodings and train-device latencies only, never the new
  device's. The design columns are rank-gauss transformed and drawn from a random pool, which
  keeps the design away from outliers and extreme archs (noisy phones punish those) and makes
  trials differ.

Hyper-parameters (groups, grids, pool size, design columns) were chosen on leave-one-train-
device-out runs and on the per-feature analysis of train-device tables, not on test scores.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from predictors import grid_primal
from predictors.base import FewShotMethod, full_tables, train_tables, union_keys
from predictors.baselines import bayes_linear
from predictors.baselines.features import GroupScaler, raw_group
from predictors.layer_costs import RIDGE, fit_layer_costs, layer_design
from predictors.phys_features import DESIGN_COLUMNS, phys_features
from spaces import get_space

log = logging.getLogger(__name__)

GROUPS = ("lat", "ops", "vec", "cost", "phys")
# FBNet's op-type counts are spanned by its one-hot and its physical costs; on 20 noisy phone
# samples the evidence could still pick them alone, a 9-column fit that does not generalise
# (leave-one-train-device-out: samsung_s7 in F3 fell to rho 0.32 on one draw). NB201's counts
# carry the disconnected-cell flag and stay.
DEFAULT_GROUPS = {"nb201": GROUPS, "fbnet": ("lat", "vec", "cost", "phys")}
DESIGN_GROUPS = ("phys", "lat")
# Candidates per design draw. Leave-one-train-device-out picks of k at once (5 trials, N0 and
# F0-F5) gave mean rho 0.864 / 0.908 / 0.920 at k = 5 / 10 / 20 with 500, 0.873 / 0.913 / 0.922
# with 200; but the onboarding's design continued in batches of 2 (train-device replay, 2
# trials) fell from 0.917 to 0.898 at 10 measurements with 200. One default serves both: 500.
DESIGN_POOL = 500
WEIGHT_GRID = (0.0, 0.1, 1.0, 10.0)
NOISE_GRID = (1e-3, 1e-2, 0.1, 0.5)
BIAS_VARIANCE = 1.0
# Share of the isotropic prior kept in each group's learned prior covariance (group_prior_root).
# The model holds every group twice, under the isotropic and under the learned prior, and the
# evidence weighs the two blocks. Mean rho at k = 5 / 10 / 20, 3 trials, leave-one-train-device-
# out over the 7 tasks: isotropic only 0.861 / 0.907 / 0.920, both 0.873 / 0.911 / 0.923; with
# the held device's family left out too (N0, F0-F4): 0.840 / 0.888 / 0.906 and 0.840 / 0.890 /
# 0.907. The learned prior alone did better on the first (0.877 / 0.914 / 0.923) but lost on the
# second at k = 5 (0.835): it misleads on a device unlike the train devices, which the evidence
# then notices. Blends 0-0.8 and groups: ``scripts/experiments/variants.py``.
PRIOR_BLEND = 0.1
# What the linear model fits: "ms" (latency, additive over layers) or "log" (log-latency, the
# model before). Leave-one-train-device-out, 6 trials, mean rho over the 7 tasks at k = 5 / 10 /
# 20: log 0.876 / 0.913 / 0.923, ms 0.878 / 0.917 / 0.925 (3 trials: N0 0.926 / 0.948 / 0.956 ->
# 0.938 / 0.963 / 0.965, no task lower by more than 0.003); with the held device's family left
# out too (N0, F0-F4, 3 trials): 0.840 / 0.890 / 0.907 -> 0.848 / 0.895 / 0.911.
RESPONSES = ("ms", "log")
DEFAULT_RESPONSE = "ms"
# Noise variance of an ms model's sample ~ (y / mean y) ** 2 + floor ** 2 (``PhysBayes.noise_weights``).
# Leave-one-train-device-out, 3 trials, mean rho over the 7 tasks at k = 5 / 10 / 20: one noise
# level 0.876 / 0.915 / 0.925, relative 0.879 / 0.919 / 0.926 (floor 0: the same but N0 at k = 20
# -0.001; floor 0.5: F3 at k = 10 -0.002). What moves by more than 0.01 are the phones timed in
# whole ms: samsung_s7 in F3 at k = 10 0.553 -> 0.707, in F4 at k = 5 0.478 -> 0.523, samsung_a50
# in F0 at k = 5 0.732 -> 0.795; essential_ph_1 in F1 at k = 10 lost 0.724 -> 0.700. N0 and
# F0-F4, 5 trials: 0.860 / 0.904 / 0.915 -> 0.865 / 0.908 / 0.916; with the held device's family
# left out too 0.848 / 0.898 / 0.911 -> 0.851 / 0.899 / 0.911.
RELATIVE_NOISE_FLOOR = 0.2
# Groups built as logarithms (``features.raw_group``, ``phys_features``) and how the ms model
# undoes that, so they add up over layers like the latency does.
_UNLOG = {"lat": np.exp, "cost": np.exp, "phys": np.expm1}
# Whether the ``lat`` columns are each train device's additive fit (``predictors.layer_costs``)
# instead of its table. FBNet tasks, k = 5 / 10 / 20 (3 trials) against the tables: each train
# device held out in turn 0.8686 / 0.9118 / 0.9195 -> 0.8880 / 0.9136 / 0.9211, with its family
# left out too (F0, F1, F4) 0.8147 / 0.9038 / 0.9155 -> 0.8508 / 0.9095 / 0.9152. Onboarding replay
# (2 trials), after 5 / 10 / 20 measurements: train 0.8954 / 0.9174 / 0.9226 -> 0.9075 / 0.9198 /
# 0.9215, family 0.8509 / 0.8973 / 0.9031 -> 0.8583 / 0.8978 / 0.9030. On NB201 (a fit on the
# one-hot, physical costs and op counts) pixel3 lost 0.930 -> 0.903 at k = 10: NB201 keeps its tables.
ADDITIVE_LAT = {"nb201": False, "fbnet": True}
COARSE_ABOVE = 100  # samples beyond which each group weight is only on/off (see robust_bma_fit)
PRIMAL_ABOVE = COARSE_ABOVE  # samples beyond which the grid's evidence is computed in feature space (grid_primal)


@dataclass(frozen=True)
class GridWeights:
    """The grid of :func:`robust_bma_fit` after reweighting: what its averaged posterior is made of.

    ``combos`` (C, G) group prior weights and ``noise`` (C,) noise variance of every grid point,
    ``prob`` (C,) their normalised evidence, ``alpha`` (C, k) ``K^-1 y``, ``sample_weights`` (k,)
    the base weights times the Student-t weights (sample i has noise ``noise / w_i``), ``groups``
    the groups' (k, p_g) columns on the samples, and the standardisation ``y_mean``, ``y_std`` of ``y``.
    """

    combos: np.ndarray
    noise: np.ndarray
    prob: np.ndarray
    alpha: np.ndarray
    sample_weights: np.ndarray
    groups: list
    y_mean: float
    y_std: float

    @property
    def grams(self) -> np.ndarray:
        """(G, k, k) the groups' linear kernels on the samples."""
        return np.stack([g @ g.T for g in self.groups])

    def covariances(self, points) -> np.ndarray:
        """(len(points), k, k) prior + noise covariance of the samples at grid points ``points``."""
        points = np.asarray(points)
        kern = np.einsum("wg,gij->wij", self.combos[points], self.grams) + BIAS_VARIANCE
        return kern + self.noise[points][:, None, None] * np.diag(1.0 / self.sample_weights)


def grid_weights(groups: list[np.ndarray], y: np.ndarray, *, weight_grid=WEIGHT_GRID, noise_grid=NOISE_GRID,
                 robust_iters: int = 2, nu: float = 2.0, coarse_above: int = COARSE_ABOVE,
                 shapes: int = 1, base_weights=None, combos=None) -> GridWeights | None:
    """The evidence-weighted grid of :func:`robust_bma_fit`; None when ``y`` is too short or constant.

    With ``shapes`` > 1, ``groups`` is that many consecutive blocks of the same groups under
    different priors, and every grid point switches on the groups of one block only.
    ``base_weights`` (k,) are the samples' noise precisions before the Student-t weights
    multiply them (None: all 1). ``combos`` (C, len(groups)), when given, are the group weights
    to average over instead of that grid.
    """
    y = np.asarray(y, dtype=np.float64)
    k = len(y)
    y_mean, y_std = float(y.mean()), float(y.std())
    if k < 2 or y_std == 0 or not groups:
        return None
    if k > coarse_above:
        weight_grid = (0.0, 1.0)
    yn = (y - y_mean) / y_std
    evidence, loo_inverse = _evidence_functions(groups, k)
    if combos is None:
        combos = np.array([c for c in itertools.product(weight_grid, repeat=len(groups) // shapes) if sum(c) > 0])
        combos = np.kron(np.eye(shapes), combos)
    noise = np.asarray(noise_grid, dtype=np.float64)
    base = np.ones(k) if base_weights is None else np.asarray(base_weights, dtype=np.float64)
    weights = base
    for round_ in range(robust_iters + 1):
        log_ev, alpha = evidence(combos, noise, weights, yn)
        if round_ == robust_iters:
            break
        best = int(np.argmax(log_ev))
        z2 = alpha[best] ** 2 / loo_inverse(combos[best // len(noise)], noise[best % len(noise)], weights)
        weights = base * (nu + 1.0) / (nu + z2)                                      # z2: LOO residual^2 / variance
    p = np.exp(log_ev - log_ev.max())
    p /= p.sum()
    return GridWeights(np.repeat(combos, len(noise), axis=0), np.tile(noise, len(combos)), p, alpha, weights,
                       list(groups), y_mean, y_std)


def in_feature_space(groups: list[np.ndarray], k: int) -> bool:
    """Whether the grid of ``k`` samples of ``groups`` is computed in feature space (``grid_primal``): once k
    passes ``PRIMAL_ABOVE`` and the groups' column count (below either, the k x k kernels are the smaller)."""
    return k > max(PRIMAL_ABOVE, sum(g.shape[1] for g in groups))


def _evidence_functions(groups: list[np.ndarray], k: int):
    """(grid evidence, diagonal of K^-1 at one grid point) for ``k`` samples of ``groups``: on the
    k x k kernels while k is small (the numbers every replay and test was made with), in feature space
    (``grid_primal``: the same values, memory and time linear in k) once k passes ``PRIMAL_ABOVE``."""
    if in_feature_space(groups, k):
        x, owner = grid_primal.with_bias(groups, BIAS_VARIANCE)
        return (lambda combos, noise, weights, yn: grid_primal.grid_evidence(combos, x, owner, noise, weights, yn),
                lambda combo, noise, weights: grid_primal.loo_variance_inverse(combo, x, owner, noise, weights))
    grams = np.stack([g @ g.T for g in groups])

    def loo_inverse(combo, noise, weights):
        return np.diagonal(np.linalg.inv(_cov(combo[None], grams, np.array([noise]), weights)[0]))
    return (lambda combos, noise, weights, yn: _grid_evidence(combos, grams, noise, weights, yn)), loo_inverse


def robust_bma_fit(groups: list[np.ndarray], y: np.ndarray, *, weight_grid=WEIGHT_GRID, noise_grid=NOISE_GRID,
                   robust_iters: int = 2, nu: float = 2.0, coarse_above: int = COARSE_ABOVE, shapes: int = 1,
                   base_weights=None):
    """Evidence-averaged Bayesian linear model with Student-t reweighting of the samples.

    Same model and return value as ``predictors.baselines.bayes_linear.fit`` (sum of linear
    kernels, one prior weight per group, BMA over ``weight_grid`` x ``noise_grid``), except that
    sample i has noise ``s / w_i``: after each round, ``w_i = b_i (nu + 1) / (nu + z_i^2)`` with
    ``z_i`` the standardised leave-one-out residual under the most probable grid point and ``b_i``
    the ``base_weights`` (default 1).

    The grid is evaluated in chunks (memory stays bounded); above ``coarse_above`` samples the
    evidence is sharp and each group weight is only switched on or off (weights 0 and 1), and above
    ``PRIMAL_ABOVE`` it is computed in feature space, so ``hwl adapt`` takes a whole campaign.
    """
    grid = grid_weights(groups, y, weight_grid=weight_grid, noise_grid=noise_grid, robust_iters=robust_iters, nu=nu,
                        coarse_above=coarse_above, shapes=shapes, base_weights=base_weights)
    return grid_coefficients(grid, groups, y)


def grid_coefficients(grid: GridWeights | None, groups: list[np.ndarray], y: np.ndarray):
    """``(coef per group, intercept, y_mean, y_std)``: the posterior mean averaged over ``grid``
    (fitted on ``groups`` and ``y``); a constant ``mean(y)`` when the grid is None."""
    if grid is None:
        y = np.asarray(y, dtype=np.float64)
        return [np.zeros(g.shape[1]) for g in groups], 0.0, float(y.mean()) if len(y) else 0.0, 1.0
    coef = [g.T @ ((grid.prob * grid.combos[:, j]) @ grid.alpha) for j, g in enumerate(groups)]
    intercept = BIAS_VARIANCE * float(grid.prob @ grid.alpha.sum(axis=1))
    return coef, intercept, grid.y_mean, grid.y_std


def _cov(combos, grams, noise, weights) -> np.ndarray:
    """(len(combos) * len(noise), k, k) prior + noise covariances, noise varying fastest."""
    k = len(weights)
    kern = np.einsum("wg,gij->wij", combos, grams) + BIAS_VARIANCE
    return (kern[:, None] + noise[None, :, None, None] * np.diag(1.0 / weights)).reshape(-1, k, k)


def _grid_evidence(combos, grams, noise, weights, yn, max_floats: float = 4e6):
    """(log evidence, K^-1 y) of every (combo, noise) grid point, chunked to bound memory."""
    k = len(yn)
    step = max(1, int(max_floats // (len(noise) * k * k)))
    log_ev, alpha = [], []
    for start in range(0, len(combos), step):
        cov = _cov(combos[start:start + step], grams, noise, weights)
        chol = np.linalg.cholesky(cov)
        a = np.linalg.solve(cov, np.broadcast_to(yn, (len(cov), k))[..., None])[..., 0]
        log_ev.append(-0.5 * a @ yn - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1))
        alpha.append(a)
    return np.concatenate(log_ev), np.concatenate(alpha)


def group_prior_root(fits: list[tuple[np.ndarray, np.ndarray]], blend: float = PRIOR_BLEND,
                     min_samples: int = 50) -> np.ndarray | None:
    """Square root of a group's prior covariance learned from the train devices, or None.

    ``fits`` holds each train device's (n, p) group columns and standardised latency (in the
    model's response units) on its pretraining sample. A ridge fit per device gives coefficients
    ``w``; the prior covariance is ``(1 - blend) * E[w w^T] + blend * I``, the first term scaled
    so the prior variance of the function equals that of ``I``. A new device's coefficients then
    start where the train devices' lie (which ops, costs and devices matter) instead of anywhere
    in the group's span. Devices with fewer than ``max(min_samples, 2 p)`` samples are skipped, as their
    fit would be noise; None (keep the isotropic prior) when none is left or ``blend`` >= 1.
    """
    if blend >= 1.0:
        return None
    second, grams = [], []
    for x, y in fits:
        if len(y) < max(min_samples, 2 * x.shape[1]):
            continue
        gram = x.T @ x / len(y)
        w = np.linalg.solve(gram + 1e-4 * np.eye(len(gram)), x.T @ y / len(y))
        second.append(np.outer(w, w))
        grams.append(gram)
    if not second:
        return None
    second, gram = np.mean(second, axis=0), np.mean(grams, axis=0)
    scale = np.trace(second @ gram)
    if scale <= 1e-12:
        return None
    return sqrt_psd((1.0 - blend) * second * (np.trace(gram) / scale) + blend * np.eye(len(gram)))


def sqrt_psd(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (round-off negatives -> 0)."""
    val, vec = np.linalg.eigh(cov)
    return (vec * np.sqrt(np.maximum(val, 0.0))) @ vec.T


def d_optimal(design: np.ndarray, k: int, rng: np.random.Generator, *, pool: int | None = DESIGN_POOL,
              prior_var: float = 1.0, taken=()) -> np.ndarray:
    """Rows of ``design`` picked greedily for the largest posterior variance (D-optimal).

    Starts from an isotropic prior ``prior_var * I`` on the coefficients of a linear model in
    the columns of ``design``, conditioned on the rows already ``taken`` (measured: they are
    never picked again); each step takes the candidate whose prediction is most uncertain and
    updates the posterior with it (rank one). Candidates are a random ``pool`` of the free rows
    (all of them when ``pool`` is None or k exceeds it). Returns row indices.
    """
    taken = np.asarray(list(taken), dtype=np.int64)
    free = np.setdiff1d(np.arange(len(design)), taken)
    if k > len(free):
        raise ValueError(f"k={k} is larger than the {len(free)} candidate architectures left")
    cand = free if pool is None or pool >= len(free) or k > pool else np.sort(rng.choice(free, pool, replace=False))
    cov = np.eye(design.shape[1]) * prior_var
    for row in design[taken]:
        cx = cov @ row
        cov -= np.outer(cx, cx) / (1.0 + row @ cx)
    x = design[cand]
    picked: list[int] = []
    jitter = 1e-9 * rng.random(len(cand))  # breaks ties at random
    for _ in range(k):
        var = np.einsum("ij,jk,ik->i", x, cov, x) + jitter
        var[picked] = -np.inf
        i = int(np.argmax(var))
        picked.append(i)
        cx = cov @ x[i]
        cov -= np.outer(cx, cx) / (1.0 + x[i] @ cx)
    return cand[picked]


def positive_ms(values: np.ndarray, floor: float) -> np.ndarray:
    """``values`` with everything below ``floor`` (> 0) squeezed into (0, floor), order kept.

    A linear model of the ms can predict below zero for the smallest archs; ``floor ** 2 / (2 *
    floor - v)`` there is positive, increasing, meets ``v`` smoothly at ``floor`` (slope 1) and,
    unlike an exponential, never underflows to 0 (a log-ms report and rank ties would follow).
    """
    values = np.asarray(values, dtype=np.float64)
    return np.where(values >= floor, values, floor ** 2 / (2.0 * floor - np.minimum(values, floor)))


def _relative_variance(latency_ms, mean: float, norm: float) -> np.ndarray:
    """A sample's noise variance under relative noise, ``((y / mean) ** 2 + floor ** 2) / norm``."""
    return ((np.asarray(latency_ms, dtype=np.float64) / mean) ** 2 + RELATIVE_NOISE_FLOOR ** 2) / norm


def rank_gauss(x: np.ndarray) -> np.ndarray:
    """Columns replaced by the normal scores of their ranks, scaled by 1/sqrt(width).

    The design must not chase outliers: HW-NAS-Bench devices report ~0 ms for some degenerate
    NB201 cells, which are 10 standard deviations away in log-latency and would be picked first.
    """
    ranks = rankdata(x, axis=0)
    return norm.ppf((ranks - 0.5) / len(x)) / np.sqrt(max(x.shape[1], 1))


class PhysBayes(FewShotMethod):
    """Evidence-averaged Bayesian linear model over physical-cost, latency and encoding groups.

    Parameters
    ----------
    groups : tuple of str, optional
        Feature groups (subset of ``lat, ops, vec, cost, phys``); None: ``DEFAULT_GROUPS`` of the
        space (chosen by leave-one-train-device-out, ``scripts/experiments/loto.py``).
    design_groups : tuple of str, optional
        Groups whose columns the ``choose`` design spreads over; empty or None: random choice.
    pool : int, optional
        Size of the random candidate pool of the design (None: every candidate).
    weight_grid, noise_grid : tuple of float
        Group prior weights and noise variances averaged over (standardised response units).
    robust_iters : int
        Rounds of Student-t reweighting (0: plain Gaussian likelihood).
    nu : float
        Degrees of freedom of the Student-t weights.
    prior_blend : float, optional
        Share of the isotropic prior in each group's prior covariance, the rest learned from the
        train devices (:func:`group_prior_root`); None or 1: isotropic priors only.
    response : {"ms", "log"}
        What the linear model fits: latency in ms with the groups as sums over layers, or
        log-latency with the groups in logs (see ``RESPONSES``).
    relative_noise : bool
        An ms model's sample noise grows with the latency (:meth:`noise_weights`); a log model's
        noise is relative already and ignores it.
    additive_lat : bool, optional
        The ``lat`` columns are each train device's additive fit on its pretraining sample
        (:mod:`predictors.layer_costs`; a device with too few samples keeps its table); None:
        ``ADDITIVE_LAT`` of the space.
    random_state : int, optional
        Unused by the fit (deterministic); kept so the protocol can seed every method alike.

    Attributes
    ----------
    space_ : str
    groups_ : tuple of str
        The groups in use.
    devices_ : list of str
        Train devices (columns of ``lat``).
    lat_costs_ : dict
        Train device -> its :class:`~predictors.layer_costs.LayerCosts` (the ``lat`` column), for
        the devices fitted (empty: every column is the device's table).
    scalers_ : dict
        Group -> fitted ``GroupScaler`` (standardisation over the train tables' archs).
    prior_roots_ : dict
        Group -> square root of its learned prior covariance (None: none learned). Empty: the
        model has the isotropic block only; else ``model_features`` appends the learned block
        (the scaled group columns times the root).
    coef_, intercept_, y_mean_, y_std_ :
        The averaged posterior mean after ``adapt``, in ``response`` units.
    floor_ : float
        Below this many ms an ms model's predictions are squeezed above zero (:func:`positive_ms`).
    """

    name = "phys_bayes"
    # groups with one column per train device (each one's own column is left out of its prior fit)
    device_groups = ("lat",)
    # what a predictor saved before these existed fits (instances set their own)
    response = "log"
    relative_noise = False
    additive_lat = False
    lat_ridge = RIDGE  # ridge penalty per sample of the additive lat fits (``layer_costs.RIDGE``)

    def __init__(self, groups=None, *, design_groups=DESIGN_GROUPS, pool: int | None = DESIGN_POOL,
                 weight_grid=WEIGHT_GRID, noise_grid=NOISE_GRID, robust_iters: int = 2, nu: float = 2.0,
                 prior_blend: float | None = PRIOR_BLEND, response: str = DEFAULT_RESPONSE, relative_noise: bool = True,
                 additive_lat: bool | None = None, random_state=None):
        self.groups = groups
        self.design_groups = design_groups
        self.pool = pool
        self.weight_grid = weight_grid
        self.noise_grid = noise_grid
        self.robust_iters = robust_iters
        self.nu = nu
        self.prior_blend = prior_blend
        self.response = response
        self.relative_noise = relative_noise
        self.additive_lat = additive_lat
        self.random_state = random_state

    def pretrain(self, space, train):
        unknown = [g for g in tuple(self.groups or ()) + tuple(self.design_groups or ()) if g not in GROUPS]
        if unknown or (self.groups is not None and not self.groups):
            raise ValueError(f"unknown feature groups {unknown}; valid groups: {', '.join(GROUPS)}")
        if self.prior_blend is not None and not 0.0 <= self.prior_blend <= 1.0:
            raise ValueError(f"prior_blend must be between 0 and 1 (or None), got {self.prior_blend}")
        if self.response not in RESPONSES:
            raise ValueError(f"unknown response {self.response!r}; valid responses: {', '.join(RESPONSES)}")
        self.space_ = get_space(space).NAME
        train = train_tables(self.space_, train, f"{type(self).__name__}.pretrain")
        self.tables_ = full_tables(train)
        if not self.tables_:
            raise ValueError(f"{type(self).__name__} needs at least one train device")
        self.devices_ = list(self.tables_)
        keys = union_keys(self.tables_.values())
        self.groups_ = tuple(self.groups) if self.groups is not None else DEFAULT_GROUPS[self.space_]
        used = dict.fromkeys(self.groups_ + tuple(self.design_groups or ()))
        additive = ADDITIVE_LAT[self.space_] if self.additive_lat is None else self.additive_lat
        self.lat_costs_ = self._lat_fits(train) if additive and "lat" in used else {}
        self.scalers_ = {}  # a fresh pretraining reads every column (``_phys``)
        raws = {g: self._raw(g, keys) for g in used}
        self.scalers_ = {g: GroupScaler(raw) for g, raw in raws.items()}
        self.prior_roots_ = self._group_priors(train, keys, raws)
        return self

    def _group_priors(self, train, keys, raws) -> dict:
        """Group -> square root of its prior covariance learned from ``train`` (None: isotropic)."""
        if self.prior_blend is None:
            return {}
        row_of = pd.Index(keys)
        samples = []  # (device, rows of its sample in ``keys``, standardised response)
        for device, series in train.items():
            rows = row_of.get_indexer(series.index)
            y = self.to_response(series[rows >= 0].to_numpy(dtype=np.float64))  # outside the whole tables: no columns
            if len(y) > 1 and y.std() > 0:
                samples.append((device, rows[rows >= 0], (y - y.mean()) / y.std()))
        roots = {}
        for g in self.groups_:
            fits = []
            for device, rows, y in samples:
                x = self.scalers_[g](raws[g][rows])
                if g in self.device_groups:  # a device explains itself perfectly; fit it on the others
                    own = np.flatnonzero(np.flatnonzero(self.scalers_[g].keep) == self.devices_.index(device))
                    x[:, own] = 0.0
                fits.append((x, y))
            roots[g] = group_prior_root(fits, self.prior_blend)
        return roots if any(root is not None for root in roots.values()) else {}

    def _raw(self, group, keys):
        if group == "lat":
            return self._lat(keys)
        raw = self._phys(keys) if group == "phys" else raw_group(group, self.space_, keys, self.tables_, self.devices_)
        return _UNLOG[group](raw) if self.response == "ms" and group in _UNLOG else raw

    def _lat_fits(self, train) -> dict:
        """Train device -> its additive fit on its pretraining sample, for the devices with enough samples."""
        fits = {device: fit_layer_costs(self.space_, series, self.lat_ridge) for device, series in train.items()}
        return {device: fit for device, fit in fits.items() if fit is not None}

    def _lat(self, keys) -> np.ndarray:
        """The train devices' latencies of ``keys`` in the model's units: a device's additive fit where
        it has one (``lat_costs_``), else its table (NaN where the table lacks an arch)."""
        fits = getattr(self, "lat_costs_", {})  # saved before additive fits: none
        tabled = [j for j, d in enumerate(self.devices_) if d not in fits]
        ms = np.empty((len(keys), len(self.devices_)))
        if tabled:
            devices = [self.devices_[j] for j in tabled]
            ms[:, tabled] = np.exp(raw_group("lat", self.space_, keys, self.tables_, devices))
        if fits:
            design = layer_design(self.space_, keys)  # once for every fitted device
            for j, device in enumerate(self.devices_):
                if device in fits:
                    ms[:, j] = fits[device].latency(keys, design)
        return ms if self.response == "ms" else np.log(ms)

    def _phys(self, keys) -> np.ndarray:
        """``phys_features`` of ``keys``; a predictor saved before NB201's ``out_*`` columns existed
        keeps the columns its scaler was fitted on (the others are appended after them)."""
        raw = phys_features(self.space_, keys)
        scaler = getattr(self, "scalers_", {}).get("phys")
        return raw if scaler is None else raw[:, :len(scaler.mean)]

    def to_response(self, latency_ms) -> np.ndarray:
        """Latencies in the units the model fits (``response``)."""
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        return latency_ms if self.response == "ms" else np.log(latency_ms)

    def noise_weights(self, latency_ms) -> np.ndarray | None:
        """Each sample's noise precision relative to the others (None: all alike): with ``relative_noise``
        in an ms model, ``1 / ((y / mean y) ** 2 + RELATIVE_NOISE_FLOOR ** 2)``, geometric mean 1."""
        ref = self._noise_reference(latency_ms)
        return None if ref is None else 1.0 / _relative_variance(latency_ms, *ref)

    def _noise_reference(self, latency_ms) -> tuple[float, float] | None:
        """(mean latency, geometric mean of the relative variances) of a measured set, or None."""
        if not (self.relative_noise and self.response == "ms"):
            return None
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        mean = float(latency_ms.mean())
        return mean, float(np.exp(np.log(_relative_variance(latency_ms, mean, 1.0)).mean()))

    def noise_sd_factor(self, latency_ms) -> np.ndarray:
        """The adapted model's noise standard deviation at ``latency_ms`` against its grid noise level:
        ``1 / sqrt(noise_weights)`` at any latency (1 without relative noise)."""
        ref = getattr(self, "noise_ref_", None)
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        return np.ones_like(latency_ms) if ref is None else np.sqrt(_relative_variance(latency_ms, *ref))

    def fit_grid(self, features, latency_ms) -> GridWeights | None:
        """The evidence-weighted grid (:func:`grid_weights`) of this model on measured archs, given their
        ``features`` (:meth:`model_features`) and latencies: the one place the model's settings reach it."""
        return grid_weights(features, self.to_response(latency_ms), weight_grid=self.weight_grid,
                            noise_grid=self.noise_grid, robust_iters=self.robust_iters, nu=self.nu,
                            shapes=self.prior_shapes(), base_weights=self.noise_weights(latency_ms))

    def _features(self, keys, groups) -> list[np.ndarray]:
        return [self.scalers_[g](self._raw(g, keys)) for g in groups]

    def choose(self, k, candidates, rng):
        candidates = list(candidates)
        if not self.design_groups:
            return super().choose(k, candidates, rng)
        if not self._is_pretrained():
            raise ValueError(f"{type(self).__name__}.choose needs pretrain(space, train) first "
                             "(it reads the encodings)")
        if k > len(candidates):
            raise ValueError(f"k={k} is larger than the {len(candidates)} candidate architectures")
        return [candidates[i] for i in d_optimal(self.design_matrix(candidates), k, rng, pool=self.pool)]

    def design_matrix(self, candidates) -> np.ndarray:
        """Rank-gauss columns of ``candidates`` that the design spreads over: the ``design_groups``,
        ``phys`` with its first ``DESIGN_COLUMNS[space]`` columns only."""
        feats = self._features(list(candidates), self.design_groups)
        return rank_gauss(np.hstack([self._design_columns(g, f) for g, f in zip(self.design_groups, feats)]))

    def _design_columns(self, group, feats) -> np.ndarray:
        if group != "phys":
            return feats
        # the scaler drops constant columns but keeps the order: the design's are the first kept ones
        return feats[:, :int(self.scalers_["phys"].keep[:DESIGN_COLUMNS[self.space_]].sum())]

    def prior_shapes(self) -> int:
        """How many blocks of groups ``model_features`` returns: 2 with learned priors, else 1."""
        return 2 if getattr(self, "prior_roots_", None) else 1  # saved before the priors existed: none

    def model_features(self, keys) -> list[np.ndarray]:
        """The model's columns of ``keys``: the groups under isotropic priors, then under the learned ones."""
        feats = self._features(list(keys), self.groups_)
        return feats if self.prior_shapes() == 1 else feats + self._learned_block(feats)

    def _learned_block(self, feats) -> list[np.ndarray]:
        """``feats`` (one array per group) under the learned priors; a group without one stays as it is."""
        roots = getattr(self, "prior_roots_", {})
        return [f if roots.get(g) is None else f @ roots[g] for f, g in zip(feats, self.groups_)]

    def _adapt(self, archs, y, device):
        if np.any(y <= 0) or not np.all(np.isfinite(y)):
            raise ValueError("latencies must be positive and finite")
        features = self.model_features(archs)
        grid = self.fit_grid(features, y)
        self.coef_, self.intercept_, self.y_mean_, self.y_std_ = grid_coefficients(grid, features, self.to_response(y))
        self.noise_ref_ = self._noise_reference(y)
        self.floor_ = 0.5 * float(np.min(y))
        self.device_ = device
        # kept for the onboarding posterior (measured_fit), which needs this same grid: at thousands of
        # measurements fitting it again costs as much as the adapt; never saved nor copied (__getstate__)
        self._measured_fit = (list(archs), y.copy(), features, grid)

    def measured_fit(self, archs, latency_ms) -> tuple[list[np.ndarray], GridWeights | None]:
        """(``model_features``, ``fit_grid``) of a measured set: the ones the adapt fitted when it is that set
        (handed over once: the model holds them no longer, as they are the size of the measured set)."""
        archs, latency_ms = list(archs), np.asarray(latency_ms, dtype=np.float64)
        kept = self.__dict__.pop("_measured_fit", None)
        if kept is not None and kept[0] == archs and np.array_equal(kept[1], latency_ms):
            return kept[2], kept[3]
        features = self.model_features(archs)
        return features, self.fit_grid(features, latency_ms)

    def __getstate__(self):
        # the measured set's grid is (grid points x k) arrays, and a model file may not name its class
        state = self.__dict__.copy()
        state.pop("_measured_fit", None)
        return state

    def predict_response(self, archs) -> np.ndarray:
        """The adapted model's prediction of ``archs`` in ``response`` units (ms may be below zero)."""
        return bayes_linear.predict(self.coef_, self.intercept_, self.y_mean_, self.y_std_,
                                    self.model_features(list(archs)))

    def from_response(self, values) -> np.ndarray:
        """Model values (``response`` units) as positive latencies in ms."""
        values = np.asarray(values, dtype=np.float64)
        return positive_ms(values, self.floor_) if self.response == "ms" else np.exp(values)

    def log_ms_slope(self, values) -> np.ndarray:
        """How much log-ms one response unit is worth at model ``values``: 1 for a log model, 1 / ms
        (:meth:`from_response`) for an ms one, so an ms spread reads as a relative one."""
        values = np.asarray(values, dtype=np.float64)
        return 1.0 / self.from_response(values) if self.response == "ms" else np.ones_like(values)

    def _predict(self, archs):
        return self.from_response(self.predict_response(archs))


__all__ = ["DEFAULT_GROUPS", "DESIGN_GROUPS", "DESIGN_POOL", "GROUPS", "RESPONSES", "PhysBayes", "GridWeights",
           "d_optimal", "grid_coefficients", "grid_weights", "in_feature_space", "positive_ms", "robust_bma_fit"]
