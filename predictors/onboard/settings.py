"""Settings of an onboarding (:class:`OnboardSettings`) and the error it raises on bad ones."""
from __future__ import annotations

from dataclasses import dataclass, field
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
    n_initial : int
        Diverse picks before the first adaptation.
    batch_size : int
        Measurements per later round. 1: re-adapt and re-estimate after every measurement, so the
        loop stops as soon as the target is reached (adapting costs well under a second; a
        measurement costs more).
    strategy : {"loop", "design", "diverse", "random"}
        ``loop``: ``initial`` start, then ``acquisition`` on the adapted model. ``design``: the
        method's own design only (its ``choose``; no target latency steers it). ``diverse``: diverse picks
        only. ``random``: random picks (the strict protocol's choice).
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
    estimate_scale, estimate_shrink, max_folds, confidence : float, float, int, float
        Cross-validated rho estimate (see ``estimate.effective_scale``) and the interval level.
    prepare_ks : bool
        Ask a method with a ``select_ks`` parameter to prepare every size the loop adapts at.
    seed : int
    """

    budget: int = 30
    target_rho: float | None = None
    n_initial: int = 5
    batch_size: int = 1
    strategy: str = "design"
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
    estimate_scale: float = estimate.DEFAULT_SCALE
    estimate_shrink: float = estimate.DEFAULT_SHRINK
    max_folds: int = 10
    confidence: float = 0.9
    prepare_ks: bool = True
    seed: int = 0

    def check(self, n_candidates: int) -> None:
        if self.budget < MIN_BUDGET:
            raise OnboardError(f"budget must be at least {MIN_BUDGET} measurements, got {self.budget}: "
                               f"{WHY_MIN_BUDGET}")
        if self.n_initial < 1 or self.batch_size < 1:
            raise OnboardError(f"n_initial and batch_size must be positive (got {self.n_initial}, {self.batch_size})")
        if self.design_after is not None and (not isinstance(self.design_after, int) or self.design_after < 1):
            raise OnboardError(f"design_after is None or a positive number of measurements, got {self.design_after!r}")
        if self.strategy not in STRATEGIES:
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


__all__ = ["ESTIMATORS", "INITIALS", "MIN_BUDGET", "MODEL_ACQUISITIONS", "OnboardError", "OnboardSettings",
           "STRATEGIES"]
