"""How good is the adapted predictor? Estimated Spearman rho with an interval, from the measured set.

Held-in cross-validation gives out-of-fold log-latency residuals on the measured architectures
(K folds, K = min(n, ``max_folds``); each fold adapts a copy of the method on the others). A
Spearman rho over a handful of measured points would be far too noisy, and the measured points
are not a random sample of the space (they were chosen to be spread out). So the residuals only
estimate the size and shape of the error; the rho is that of the predictor's own ranking of the
unmeasured pool against itself plus such errors:

    rho_hat = E spearman(p, p + s * e),  e drawn from the centred residuals,

where ``p`` is the full model's log-latency prediction of the pool and ``s`` a scale
(:func:`effective_scale`). Out-of-fold errors overstate the full model's error, most with few
measurements: the first picks are spread out, so leaving one out means extrapolating to it. The
scale ``scale * sqrt(1 - shrink / n)`` was fitted on train devices only (``scripts/bench_onboard
--mode train --scales ...``). The interval comes from bootstrap resamples of the residual set.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from spaces import get_space

if TYPE_CHECKING:
    from predictors.base import FewShotMethod

# scipy is imported in the functions that use it: `hwl onboard`'s parser reads this module's constants (settings.py).

DEFAULT_SCALE = 1.0
DEFAULT_SHRINK = 2.5
# The model estimate's interval is widened to at least max(floor, scale / sqrt(n)) either side,
# one (floor, scale) for float timings and one for whole-millisecond ones (``is_whole_ms``, any
# space: a timer that coarse hides the device's noise from its few samples): the posterior draws
# alone held the truth in 70 % of train-replay rounds. Fitted with `scripts/bench_onboard --mode
# train --trials 2 --checkpoints 4,6,..,20 --fit-calibration --fit-with <a --mode family run of
# N0, F0-F4>`: the narrowest interval holding the truth in 90 % of the rounds of train replay
# and, apart, of leave-one-family-out replay; test devices never read. That is max(0.04, 0.15 /
# sqrt(n)) for float timings and 0.07 for whole-ms ones (before FBNet's additive ``lat`` columns,
# ``recommended.ADDITIVE_LAT``: 0.05 and max(0.06, 0.225 / sqrt(n)). Split like the calibration,
# whole ms on FBNet only, it was max(0.05, 0.175 / sqrt(n)) and 0.275 / sqrt(n), and the whole-ms
# phones on NB201 had the float interval: it held their truth in 70 % of the family rounds.)
# Checked again for the short start (3 design picks, then the posterior variance; the default since issue 8):
# on its rounds after 5-20 measurements (`--strategies loop/n_initial=3`, train: 2 trials, 1,856 rounds; family:
# N0, F0-F4, 1 trial, 688 rounds) the float widening held the truth in 98.7 % / 94.4 % of them, kept; 0.07 for
# whole ms in 88.0 % / 91.1 %, below 90 % on train, so that one was refitted: 0.325 / sqrt(n) holds 90.4 % /
# 94.8 % (mean width 0.135 -> 0.184; wider than 0.07 up to 21 measurements, so the design's rounds hold as much).
# Its floor is the float one's: past 66 measurements 0.325 / sqrt(n) would be narrower than a float timer's
# interval, where no round was fitted, and a coarser timer cannot make the estimate surer.
INTERVAL_FLOOR = (0.04, 0.04)
INTERVAL_SCALE = (0.15, 0.325)
# The model-based estimate after n measurements is mapped through
# tanh(a + b z + c / n + q (d + e z)), z = atanh(rho), q = 1 for a coarse timer on FBNet
# (``coarse_timer``: every measurement a whole number of milliseconds, like the public tables'
# phones), else 0. Replay on train devices showed the estimate pessimistic on clean devices (by
# 0.02-0.04) and with few measurements, while on whole-ms FBNet phones, whose noise their few
# samples hide, the same map made it optimistic by 0.08. The same phones on NB201 need no such
# term (cells differ by whole convolutions, and they rank at 0.93-0.98 there): with it their
# estimate was 0.10 too low. Fitted with `scripts/bench_onboard --mode train --trials 2
# --checkpoints 4,6,..,20 --fit-calibration` (least absolute error in rho over the rounds after
# 5, 6, .., 20 measurements of the 58 held-out train devices of N0, F0-F5; test devices never
# read): error 0.030 uncalibrated, 0.021 calibrated, each device left out of the fit (0.026
# with the whole-ms terms on NB201 too). Last refitted for FBNet's additive ``lat`` columns
# (``recommended.ADDITIVE_LAT``; FBNet's rounds replayed again, N0's, which they do not change,
# kept; before them 0.037 uncalibrated and (0.936, 0.592, -0.21, -0.058, -0.5)). Kept for the short start (3
# design picks, then the posterior variance; the default since issue 8), fitted on the design's rounds as it is: on
# the short start's rounds after 5-20 (`--strategies loop/n_initial=3`, same command) it is 0.017 off (n = 5 0.034,
# 6-10 0.021, 11-20 0.013) and 0.022 on family replay (N0, F0-F4, 688 rounds); refitted on them, (0.949, 0.615,
# -0.002, -0.044, -0.588) was 0.021 off with each device left out, and 0.022 on family: no better.
DEFAULT_CALIBRATION = (0.792, 0.637, 0.013, 0.056, -0.54)
# The calibration is evidence only where it was fitted. For float timings it is a line in Fisher z
# (slope 0.64) that maps a raw estimate of 0 to 0.66: a device the model cannot rank (pure noise,
# truth 0.01, raw 0.20) was reported at 0.73 [0.68, 0.78]. Below the lowest raw estimate of the
# train-replay rounds it was fitted on (0.534, N0's pixel3 after 6: `scripts/bench_onboard --mode
# train --budget 8`, 1 trial) the estimate is the raw one, the model's own belief, and the interval
# is the raw bounds moved out either way by the correction the calibration would have made: no round
# shows whether it still holds so far out, or how fast it fades (a shrink toward the raw estimate
# would have to guess that rate). A coarse timer has no such edge (None): its map is nearly flat
# (slope 0.10), a prior that whole-ms FBNet phones rank at about 0.7 because the timer hides what
# the draws would show, so their raw estimate says little; train phones reached 0.46 (F4's
# samsung_s7, budget 20), and below that the raw one would be no more honest. See ``calibrate_round``.
CALIBRATED_FROM = (0.53, None)
# An interval wider than this is reported as unsure (``RhoEstimate.unsure``). With the draws' own bounds kept
# (``hold_draw_bounds``) it flagged 15 % of the train-replay rounds of clean devices (most after 5-6
# measurements) and 68 % of those of devices with added timing noise (`scripts/bench_onboard --mode train
# --noise 0.6`).
UNSURE_WIDTH = 0.3
# Spaces whose rankings a whole-millisecond timer hides (see DEFAULT_CALIBRATION).
COARSE_TIMER_SPACES = ("fbnet",)


def interval_half_width(n, whole_ms: bool = False, floor=INTERVAL_FLOOR, scale=INTERVAL_SCALE):
    """Smallest half-width of a model-based rho interval after ``n`` measurements: ``max(floor, scale / sqrt(n))``.

    ``floor`` and ``scale`` are numbers, or ``(float timings, whole-ms timings)`` pairs picked by
    ``whole_ms``; ``n`` may be an array of counts (an array comes back).

    The posterior draws give the spread of rho under the model; the model's misfit (the function
    is not in its span) is not in them, so the interval is widened to what replay on train
    devices showed.
    """
    floor, scale = (v[int(bool(whole_ms))] if np.ndim(v) else v for v in (floor, scale))
    return _scalar_or_array(np.maximum(floor, scale / np.sqrt(np.maximum(n, 1))))


def widen(rho, low, high, half):
    """``(low, high)`` stretched to at least ``half`` either side of ``rho``, within [-1, 1] (numbers or arrays)."""
    return (_scalar_or_array(np.maximum(-1.0, np.minimum(low, rho - half))),
            _scalar_or_array(np.minimum(1.0, np.maximum(high, rho + half))))


def hold_draw_bounds(low, high, raw_low, raw_high) -> tuple[float, float]:
    """The calibrated interval ``(low, high)`` stretched to hold the posterior draws' own bounds.

    The calibration is a line fitted to the point estimate (slope 0.64 in Fisher z): mapping the draws' bounds
    through it shrinks them as much, although the spread of the draws is the model's own doubt, which the
    calibration knows nothing about. On a noisy device with few measurements (train devices with timing noise
    0.6 of their latency spread, `scripts/bench_onboard --mode train --noise 0.6`) the calibrated interval held
    the truth in 6 % of the rounds, the draws' own bounds in 77 %.
    """
    return float(min(low, raw_low)), float(max(high, raw_high))


def _scalar_or_array(x):
    """A plain float for a 0-d result, the array otherwise."""
    return float(x) if np.ndim(x) == 0 else x


def fit_interval(n, rho, true, low, high, coverage: float = 0.9, groups=None, floors=np.arange(0.0, 0.2001, 0.01),
                 scales=np.arange(0.0, 0.6001, 0.025)) -> tuple[float, float]:
    """The ``(floor, scale)`` of :func:`interval_half_width` whose widened intervals are narrowest
    on average while holding ``true`` in at least ``coverage`` of the rounds (grid search).

    ``rho, low, high``: each round's calibrated estimate and posterior-draw bounds (before any
    widening), ``n``: its measurements. ``groups`` (one label per round, e.g. the replay split
    it came from): the coverage must hold within every group, not just over all rounds.
    """
    n, rho, true, low, high = (np.asarray(v, dtype=np.float64) for v in (n, rho, true, low, high))
    if len(rho) < 10:
        raise ValueError(f"fitting an interval needs at least 10 rounds, got {len(rho)}")
    groups = np.zeros(len(rho)) if groups is None else np.asarray(groups)
    members = [groups == g for g in np.unique(groups)]
    best = None
    for floor in floors:
        for scale in scales:
            lo, hi = widen(rho, low, high, interval_half_width(n, floor=floor, scale=scale))
            held = (lo <= true) & (true <= hi)
            width = float(np.mean(hi - lo))
            if min(held[m].mean() for m in members) >= coverage and (best is None or width < best[0]):
                best = (width, float(round(floor, 3)), float(round(scale, 3)))
    if best is None:
        raise ValueError(f"no interval on the grid holds the truth in {coverage:.0%} of the rounds")
    return best[1], best[2]


def _atanh(rho):
    """Fisher's z of a rho, clipped so that rho = +-1 stays finite."""
    return np.arctanh(np.clip(rho, -0.999, 0.999))


def is_whole_ms(latency_ms) -> bool:
    """True when there are at least 3 latencies and every one is a whole number of milliseconds."""
    y = np.asarray(latency_ms, dtype=np.float64)
    return len(y) >= 3 and bool(np.all(y == np.round(y)))


def coarse_timer(latency_ms, space: str) -> bool:
    """Whether the whole-ms terms of :func:`calibrate` apply: every measurement is a whole number of
    milliseconds (:func:`is_whole_ms`) and ``space`` (any name ``spaces.get_space`` takes) is one of
    ``COARSE_TIMER_SPACES``."""
    return get_space(space).NAME in COARSE_TIMER_SPACES and is_whole_ms(latency_ms)


def calibrate(rho: float, n: int, coef=DEFAULT_CALIBRATION, *, coarse: bool = False) -> float:
    """``tanh(a + b z + c / n + q (d + e z))``, ``z = atanh(rho)``, ``q = coarse`` (:func:`coarse_timer`),
    ``coef = (a, b, c, d, e)``.

    A 3-number ``coef`` has ``d = e = 0``; ``rho`` itself when ``coef`` is None.
    """
    if coef is None:
        return float(rho)
    if len(coef) not in (3, 5):
        raise ValueError(f"a calibration has 3 or 5 numbers (a, b, c[, d, e]), got {len(coef)}")
    a, b, c, d, e = (*coef, 0.0, 0.0)[:5]
    z = _atanh(rho)
    return float(np.tanh(a + b * z + c / max(n, 1) + float(coarse) * (d + e * z)))


def calibrate_round(raw: float, low: float, high: float, n: int, coef=DEFAULT_CALIBRATION, *, coarse: bool = False,
                    calibrated_from=CALIBRATED_FROM) -> tuple[float, float, float, bool]:
    """``(rho, low, high, extrapolated)``: a round's raw estimate and posterior-draw bounds through :func:`calibrate`,
    when ``raw`` is at or above the lowest raw estimate the calibration was fitted on (``calibrated_from``:
    a number, or a (float timings, coarse timer) pair picked by ``coarse``; None: no such bound).

    Below it (``extrapolated``) the point is ``raw`` and the bounds are the raw ones moved out, in Fisher z,
    by the correction the calibration would make: the raw estimate may be that far off either way.
    """
    calibrated = tuple(calibrate(v, n, coef, coarse=coarse) for v in (raw, low, high))
    edge = calibrated_from[int(bool(coarse))] if np.ndim(calibrated_from) else calibrated_from
    if coef is None or edge is None or raw >= edge:
        return (*calibrated, False)
    gap = abs(float(_atanh(calibrated[0]) - _atanh(raw)))
    return (float(raw), float(np.tanh(min(_atanh(low), _atanh(raw)) - gap)),
            float(np.tanh(max(_atanh(high), _atanh(raw)) + gap)), True)


def fit_calibration(raw, true, n, coarse=None) -> tuple[float, ...]:
    """The ``(a, b, c, d, e)`` of :func:`calibrate` with the least mean absolute error of ``true`` (rho units).

    ``raw``: uncalibrated estimates, ``true``: the true rhos, ``n``: measurements of each round,
    ``coarse``: whether each round had a coarse timer (:func:`coarse_timer`; None: none had;
    ``d`` and ``e`` are then 0). Starts from the least-squares fit in atanh space, then
    Nelder-Mead on the absolute error.
    """
    from scipy.optimize import minimize

    raw, true, n = (np.asarray(v, dtype=np.float64) for v in (raw, true, n))
    q = np.zeros(len(raw)) if coarse is None else np.asarray(coarse, dtype=np.float64)
    if len(raw) < 3:
        raise ValueError(f"fitting a calibration needs at least 3 rounds, got {len(raw)}")
    z = _atanh(raw)
    columns = [np.ones(len(raw)), z, 1.0 / np.maximum(n, 1)]
    if q.any():  # the whole-ms terms are fitted only when some rounds have them
        columns += [q, q * z]
    design = np.column_stack(columns)
    start = np.linalg.lstsq(design, _atanh(true), rcond=None)[0]
    res = minimize(lambda w: np.abs(np.tanh(design @ w) - true).mean(), start, method="Nelder-Mead",
                   options=dict(maxiter=20000, xatol=1e-6, fatol=1e-9))
    return tuple(float(round(v, 3)) for v in (*res.x, 0.0, 0.0)[:5])


def effective_scale(n: int, scale: float = DEFAULT_SCALE, shrink: float = DEFAULT_SHRINK) -> float:
    """The residual scale for ``n`` measurements: ``scale * sqrt(max(0.05, 1 - shrink / n))``."""
    return float(scale * np.sqrt(max(0.05, 1.0 - shrink / max(n, 1))))


@dataclass(frozen=True)
class RhoEstimate:
    """Estimated rho on the unmeasured architectures, with its interval.

    Attributes
    ----------
    rho, low, high : float
        Point estimate and the ``confidence`` interval.
    confidence : float
    n_measured : int
        Measurements the cross-validation used.
    residual_rms : float
        Root-mean-square error in log-ms (0.1 is about 10 %): out-of-fold for ``cv``, expected
        under the posterior for ``model``.
    source : {"cv", "model", "blend"}
        Which estimator gave it (``predictors.onboard.posterior.model_rho`` for ``model``).
    raw_rho, raw_low, raw_high : float or None
        The point estimate and the posterior draws' bounds before :func:`calibrate` and before
        the interval is widened (None: not calibrated).
    whole_ms : bool
        Every measurement was a whole number of milliseconds (the interval is the whole-ms one).
    coarse : bool
        The whole-ms terms of :func:`calibrate` applied (:func:`coarse_timer`: whole ms on FBNet).
    extrapolated : bool
        The raw estimate was below the range the calibration was fitted on: ``rho`` is the raw one
        (:func:`calibrate_round`).
    unsure : bool
        The interval is wider than ``UNSURE_WIDTH``: the measurements do not pin the rho down (few of them,
        or a noisy device).
    """

    rho: float
    low: float
    high: float
    confidence: float
    n_measured: int
    residual_rms: float
    source: str = "cv"
    raw_rho: float | None = None
    whole_ms: bool = False
    raw_low: float | None = None
    raw_high: float | None = None
    coarse: bool = False
    extrapolated: bool = False
    unsure: bool = False

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def cv_residuals(method: FewShotMethod, archs, latency_ms, *, max_folds: int = 10,
                 rng: np.random.Generator, device: str | None = None) -> np.ndarray:
    """Out-of-fold residuals (measured minus predicted log-latency), one per measurement."""
    archs = list(archs)
    y = np.log(np.asarray(latency_ms, dtype=np.float64))
    n = len(archs)
    if n < 3:
        raise ValueError(f"cross-validation needs at least 3 measurements, got {n}")
    folds = min(n, max_folds)
    assignment = rng.permutation(np.arange(n) % folds)
    resid = np.zeros(n)
    for f in range(folds):
        held = np.flatnonzero(assignment == f)
        kept = np.flatnonzero(assignment != f)
        fitted = method.adapt([archs[i] for i in kept], np.exp(y[kept]), device=device)
        pred = np.asarray(fitted.predict([archs[i] for i in held]), dtype=np.float64)
        resid[held] = y[held] - np.log(pred)
    return resid


def plugin_rho(pred_log_ms: np.ndarray, residuals: np.ndarray, *, rng: np.random.Generator, scale: float = 1.0,
               draws: int = 4) -> float:
    """Mean Spearman of ``pred`` against ``pred`` + resampled residuals (see module doc)."""
    from scipy.stats import rankdata

    pred = np.asarray(pred_log_ms, dtype=np.float64)
    if len(pred) < 2 or np.ptp(pred) == 0:
        return 0.0
    centred = scale * (residuals - residuals.mean())
    rank_pred = rankdata(pred)
    out = []
    for _ in range(draws):
        noisy = pred + rng.choice(centred, size=len(pred), replace=True)
        out.append(np.corrcoef(rank_pred, rankdata(noisy))[0, 1])
    return float(np.mean(out))


def estimate_rho(pred_log_ms, residuals, *, rng: np.random.Generator, scale: float = DEFAULT_SCALE,
                 confidence: float = 0.9, n_boot: int = 100, pool_max: int = 2000) -> RhoEstimate:
    """Point estimate and bootstrap interval of the rho on the pool (see module doc).

    ``pool_max`` caps the pool used for the Spearman draws (a random subset; the estimate of a
    correlation over thousands of archs does not need all of them).
    """
    pred = np.asarray(pred_log_ms, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    if len(pred) > pool_max:
        pred = pred[rng.choice(len(pred), size=pool_max, replace=False)]
    point = plugin_rho(pred, residuals, rng=rng, scale=scale, draws=8)
    boot = [plugin_rho(pred, rng.choice(residuals, size=len(residuals), replace=True), rng=rng, scale=scale,
                       draws=1) for _ in range(n_boot)]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return RhoEstimate(rho=point, low=float(min(low, point)), high=float(max(high, point)), confidence=confidence,
                       n_measured=len(residuals), residual_rms=float(np.sqrt(np.mean(residuals ** 2))))



def combine(parts: list[RhoEstimate]) -> RhoEstimate | None:
    """The mean of several estimates of the same rho (their bounds averaged too); None for none."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    mean = lambda name: float(np.mean([getattr(p, name) for p in parts]))  # noqa: E731
    return RhoEstimate(rho=mean("rho"), low=mean("low"), high=mean("high"), confidence=parts[0].confidence,
                       n_measured=parts[0].n_measured, residual_rms=mean("residual_rms"), source="blend",
                       whole_ms=any(p.whole_ms for p in parts), coarse=any(p.coarse for p in parts),
                       extrapolated=any(p.extrapolated for p in parts), unsure=any(p.unsure for p in parts))


__all__ = ["CALIBRATED_FROM", "COARSE_TIMER_SPACES", "DEFAULT_CALIBRATION", "DEFAULT_SCALE", "DEFAULT_SHRINK",
           "INTERVAL_FLOOR", "INTERVAL_SCALE", "RhoEstimate", "UNSURE_WIDTH", "calibrate", "calibrate_round",
           "coarse_timer", "combine", "hold_draw_bounds",
           "cv_residuals", "effective_scale", "estimate_rho", "fit_calibration", "fit_interval", "interval_half_width",
           "is_whole_ms", "plugin_rho", "widen"]
