"""Settings of an onboarding (:class:`OnboardSettings`) and the error it raises on bad ones."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from harness.errors import UserError
from predictors.onboard import acquisition, estimate, selection

STRATEGIES = ("loop", "design", "diverse", "random")
INITIALS = ("design", "diverse")
MODEL_ACQUISITIONS = ("variance", "integrated")  # need a closed-form posterior; else "cover" is used
ESTIMATORS = ("model", "cv", "blend")
# One latency fits no model: the adapted method predicts that latency for every architecture.
MIN_BUDGET = 2
WHY_MIN_BUDGET = "a predictor adapted on one latency predicts that latency for every architecture (it ranks nothing)"
# The default picks (``strategy`` and ``n_initial`` None). A method with a closed-form posterior (phys_bayes)
# measures 3 picks of its design, then where its posterior variance is largest: on train-device replay
# (`scripts/bench_onboard --mode train --holdouts 4`, 2 trials, 56 runs) the mean true rho after 5 / 7 / 10
# measurements was 0.9307 / 0.9347 / 0.9376 against 0.9216 / 0.9328 / 0.9364 for 5 design picks and the design
# on, and a --target-rho 0.95 stop (budget 10) fell more than 0.03 short in 2 % of its early stops, not 16 %.
# Any other method keeps its design from 5 picks on (its loop, an ensemble's spread, was never replayed better).
SHORT_START = 3
DESIGN_START = 5
# A --target-rho stop needs at least this many measurements: the estimate's calibration and interval were fitted
# on rounds after 5 or more (after 3 / 4 the short start's estimate was 0.13 / 0.05 off on train replay).
STOP_FROM = 5


class OnboardError(UserError):
    """An onboarding that cannot run as asked (budget, candidates, settings, a dead device)."""


@dataclass(frozen=True)
class OnboardSettings:
    """Knobs of the loop (defaults chosen by replay on train devices, see ``scripts/bench_onboard``).

    Parameters
    ----------
    budget : int
        Most measurements in all (those already made included; a failed one counts too).
    target_rho : float or None
        Stop once the estimated rho reaches it.
    n_initial : int or None
        Picks before the first adaptation. None: ``SHORT_START`` (3) for ``loop`` on a method with a closed-form
        posterior, else ``DESIGN_START`` (5) (:meth:`for_method`).
    batch_size : int
        Measurements per later round. 1: re-adapt and re-estimate after every measurement, so the
        loop stops as soon as the target is reached (adapting costs well under a second; a
        measurement costs more).
    strategy : {"loop", "design", "diverse", "random"} or None
        ``loop``: ``initial`` start, then ``acquisition`` on the adapted model. ``design``: the
        method's own design only (its ``choose``; no target latency steers it). ``diverse``: diverse picks
        only. ``random``: random picks (the strict protocol's choice). None (the default): ``loop`` for a method
        with a closed-form posterior, else ``design`` (:meth:`for_method`; see ``SHORT_START``).
    initial : {"design", "diverse"}
        First picks of ``loop``.
    design_after : int or None
        ``loop`` only: once this many architectures are measured (and failed), the picks are the
        design's again (the rest of its sequence), so a few acquisition picks sit between two
        stretches of the design. None: the acquisition to the end.
    picker : {"kcenter", "kmeans"}
        Diversity picker; ``feature_weights`` the share of each feature group.
    n_members, subsample : int, float
        Ensemble size and the share of the measurements each member is adapted on.
    acquisition : {"variance", "integrated", "cover", "greedy", "mass"}
        ``variance`` / ``integrated``: posterior variance or its integrated reduction (``design``;
        methods with a closed-form posterior); the others turn ensemble spread into a batch
        (``acquisition``) and are what a method without a posterior gets.
    focus_quantile, tail_weight : float
        Latency focus of the acquisition (see ``acquisition.focus_weights``).
    pool_size : int
        Unmeasured candidates scored per round (a fresh random subset when there are more).
    estimator : {"model", "cv", "blend"}
        ``model``: draws from the closed-form posterior (``posterior.model_rho``); ``cv``:
        cross-validated residuals (``estimate``); ``blend``: their mean. Methods without a
        posterior always use ``cv``.
    n_draws, noise_dof, model_temperature : int, float or None, float
        Posterior draws of the model estimate; Student-t noise degrees of freedom (None:
        Gaussian); the temperature of the draws (``posterior.model_rho``: the posterior's
        function spread overstates the error, 0-0.25 was right on train-device replay).
    loo_mix_above : int or None
        From this many measurements on, the model estimate is the mean of the Gaussian-noise one
        and one whose noise is resampled from the closed-form leave-one-out residuals (which
        carry heavy tails; with fewer measurements they overstate the error). None: never.
    calibration : tuple of 3 or 5 floats, or None
        ``(a, b, c[, d, e])`` of ``estimate.calibrate``, applied to the model estimate and its
        bounds; ``d, e`` apply for a coarse timer (``estimate.coarse_timer``: every measurement a
        whole number of milliseconds, on FBNet) (None: uncalibrated).
    calibrated_from : float, (float, float) or None
        The lowest raw model estimate ``calibration`` was fitted on (float timings, coarse timer):
        below it the estimate is the raw one with a wide interval (``estimate.calibrate_round``).
        None: the calibration applies to any raw estimate.
    interval_floor, interval_scale : float or (float, float)
        The model estimate's interval is at least ``max(floor, scale / sqrt(n))`` either side
        (``estimate.interval_half_width``: the draws alone miss the model's misfit); a pair is
        (float timings, whole-millisecond timings on any space: ``estimate.is_whole_ms``).
    hold_draw_bounds : bool
        The model estimate's interval holds the posterior draws' own (uncalibrated) bounds
        (``estimate.hold_draw_bounds``): the calibration moves the point, not the model's doubt.
    unsure_width : float
        An interval wider than this is flagged ``unsure`` (``estimate.UNSURE_WIDTH``) and the report says so.
    stop_from : int
        A ``target_rho`` stop needs at least this many measurements (and ``n_initial``); see ``STOP_FROM``.
    estimate_scale, estimate_shrink, max_folds, confidence : float, float, int, float
        Cross-validated rho estimate (see ``estimate.effective_scale``) and the interval level.
    prepare_ks : bool
        Ask a method with a ``select_ks`` parameter to prepare every size the loop adapts at.
    seed : int
    """

    budget: int = 30
    target_rho: float | None = None
    n_initial: int | None = None
    batch_size: int = 1
    strategy: str | None = None
    initial: str = "design"
    design_after: int | None = None
    picker: str = "kmeans"
    feature_weights: Mapping[str, float] = field(default_factory=lambda: dict(selection.DEFAULT_WEIGHTS))
    n_members: int = 8
    subsample: float = 0.8
    acquisition: str = "variance"
    focus_quantile: float = 0.75
    tail_weight: float = 0.5
    pool_size: int = 2000
    estimator: str = "model"
    n_draws: int = 64
    noise_dof: float | None = None
    model_temperature: float = 0.125
    loo_mix_above: int | None = 12
    calibration: tuple | None = estimate.DEFAULT_CALIBRATION
    calibrated_from: float | tuple | None = estimate.CALIBRATED_FROM
    interval_floor: float | tuple = estimate.INTERVAL_FLOOR
    interval_scale: float | tuple = estimate.INTERVAL_SCALE
    hold_draw_bounds: bool = True
    unsure_width: float = estimate.UNSURE_WIDTH
    stop_from: int = STOP_FROM
    estimate_scale: float = estimate.DEFAULT_SCALE
    estimate_shrink: float = estimate.DEFAULT_SHRINK
    max_folds: int = 10
    confidence: float = 0.9
    prepare_ks: bool = True
    seed: int = 0

    def for_method(self, has_posterior: bool) -> OnboardSettings:
        """These settings with the default ``strategy`` and ``n_initial`` (None) filled in for a method with or
        without a closed-form posterior (``posterior.supports``): see ``SHORT_START``."""
        strategy = self.strategy if self.strategy is not None else ("loop" if has_posterior else "design")
        short = strategy == "loop" and has_posterior
        n_initial = self.n_initial if self.n_initial is not None else (SHORT_START if short else DESIGN_START)
        return replace(self, strategy=strategy, n_initial=n_initial)

    def check(self, n_candidates: int) -> None:
        if self.budget < MIN_BUDGET:
            raise OnboardError(f"budget must be at least {MIN_BUDGET} measurements, got {self.budget}: "
                               f"{WHY_MIN_BUDGET}")
        if (self.n_initial is not None and self.n_initial < 1) or self.batch_size < 1 or self.stop_from < 1:
            raise OnboardError(f"n_initial, batch_size and stop_from must be positive (got {self.n_initial}, "
                               f"{self.batch_size}, {self.stop_from})")
        if self.design_after is not None and (not isinstance(self.design_after, int) or self.design_after < 1):
            raise OnboardError(f"design_after is None or a positive number of measurements, got {self.design_after!r}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise OnboardError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.picker not in selection.PICKERS:
            raise OnboardError(f"unknown picker {self.picker!r}; valid: {', '.join(selection.PICKERS)}")
        modes = MODEL_ACQUISITIONS + acquisition.MODES
        if self.acquisition not in modes:
            raise OnboardError(f"unknown acquisition {self.acquisition!r}; valid: {', '.join(modes)}")
        if self.initial not in INITIALS:
            raise OnboardError(f"unknown initial picks {self.initial!r}; valid: {', '.join(INITIALS)}")
        if self.estimator not in ESTIMATORS:
            raise OnboardError(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if self.calibration is not None and len(self.calibration) not in (3, 5):
            raise OnboardError(f"calibration has 3 or 5 numbers (a, b, c[, d, e]), got {len(self.calibration)}")
        edges = self.calibrated_from if isinstance(self.calibrated_from, (tuple, list)) else (self.calibrated_from,)
        if len(edges) not in (1, 2) or not all(e is None or (isinstance(e, (int, float)) and -1 <= e <= 1)
                                               for e in edges):
            raise OnboardError(f"calibrated_from is None, one rho or a (float timings, coarse timer) pair, "
                               f"got {self.calibrated_from!r}")
        for name in ("interval_floor", "interval_scale"):
            value = getattr(self, name)
            values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
            if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and v >= 0 for v in values):
                raise OnboardError(f"{name} is one number >= 0 or a (float timings, whole-ms timings) pair, "
                                   f"got {getattr(self, name)!r}")
        if self.target_rho is not None and not -1.0 < self.target_rho <= 1.0:
            raise OnboardError(f"target rho must be in (-1, 1], got {self.target_rho}")
        if n_candidates < 2:
            raise OnboardError(f"need at least 2 candidate architectures, got {n_candidates}")


__all__ = ["DESIGN_START", "ESTIMATORS", "INITIALS", "MIN_BUDGET", "MODEL_ACQUISITIONS", "OnboardError",
           "OnboardSettings", "SHORT_START", "STOP_FROM", "STRATEGIES"]
