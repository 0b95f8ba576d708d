"""The onboarding loop: measure a few, adapt, choose the next batch, stop when sure.

The loop knows nothing about how a latency is obtained: ``measure(archs)`` returns one latency
per architecture (ms; NaN or None where the measurement failed) or a mapping arch -> ms (a pandas
Series indexed by arch is read by its index, whatever its order). A raised exception is the
caller's and ends ``run()``; ``measured`` and ``failed`` keep what was measured before it. The
harness passes a function that runs a campaign on the device; ``scripts/bench_onboard`` passes
one that looks the answer up in a held-out public table.

1. Initial picks (``n_initial``) without any target latency: the method's own design
   (``design``: its ``choose``, D-optimal for ``phys_bayes``, random for most others), diverse
   picks on the candidates' features (``selection``), or random picks for ``strategy="random"``.
   By default 3 design picks for a method with a closed-form posterior, which then measures where its
   posterior variance is largest (``loop``), and 5 for any other, whose design goes on
   (``OnboardSettings.for_method``).
2. Adapt the pretrained method on everything measured (the method does its own Eq. 1
   initialisation). For a method with a closed-form posterior (``phys_bayes``, see
   ``posterior``) that posterior gives the spread and the model-based rho estimate; any other
   method gets an ensemble of copies adapted on subsets and a cross-validated estimate
   (``ensemble``, ``estimate``).
3. Stop when the estimate reaches ``target_rho`` (and is not ``unsure``; from ``stop_from`` = 5 measurements on, where
   the estimate was calibrated) or the budget is spent; otherwise measure the
   next ``batch_size`` archs (``design`` / ``acquisition``; or diversity / random for the
   comparison strategies) and go to 2.

Measurements already made (a resumed onboarding, or a store holding some) are passed as
``measured`` and count against the budget; no architecture is ever measured twice.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from predictors.base import FewShotMethod, space_keys
from predictors.onboard import acquisition, design, ensemble, estimate, posterior, selection
from spaces import get_space
from predictors.onboard.settings import (ESTIMATORS, INITIALS, MODEL_ACQUISITIONS, STRATEGIES,  # noqa: F401
                                         OnboardError, OnboardSettings)  # (re-exported: the loop's API)

log = logging.getLogger(__name__)

DESIGN_LENGTH = 64  # picks of the method's design drawn at once (greedy designs: a prefix is the smaller design)


@dataclass
class Step:
    """One round: what was measured so far and what the loop then believed."""

    n_measured: int
    picked: list
    estimate: estimate.RhoEstimate | None
    seconds: float

    def to_dict(self) -> dict:
        return {"n_measured": self.n_measured, "picked": [str(a) for a in self.picked],
                "estimate": self.estimate.to_dict() if self.estimate else None, "seconds": round(self.seconds, 3)}


@dataclass
class OnboardResult:
    """What an onboarding hands back.

    Attributes
    ----------
    adapted : FewShotMethod
        The method adapted on every measurement.
    measured : dict
        arch -> latency_ms of every measurement used (earlier ones included).
    failed : list
        Archs whose measurement failed (they count against the budget, never retried).
    estimate : RhoEstimate or None
        The last estimate (None with fewer than 3 measurements).
    steps : list of Step
    stop_reason : str
        ``target``, ``budget`` or ``candidates`` (none left).
    """

    adapted: FewShotMethod
    measured: dict
    failed: list
    estimate: estimate.RhoEstimate | None
    steps: list
    stop_reason: str
    members: list = field(default_factory=list, repr=False)

    @property
    def spent(self) -> int:
        return len(self.measured) + len(self.failed)


class OnboardLoop:
    """Run the onboarding of one device (see module doc).

    Parameters
    ----------
    method : FewShotMethod
        Pretrained (``pretrain`` done); never changed, adapted copies are made.
    space : str
        The space ``method`` was pretrained on.
    candidates : sequence
        Architecture keys the predictor must cover (the whole space, or a subset); NB201 arch strings are read as
        their indices, which ``measure`` and the result then name.
    measure : callable
        ``measure(archs) -> latencies`` (see module doc).
    settings : OnboardSettings
    tables : dict, optional
        Train device -> latency Series, for the ``hwl`` selection features.
    device : str, optional
        The new device's name (passed to ``adapt``).
    measured : mapping, optional
        arch -> latency_ms already known for the device (a dict, or a latency Series indexed by arch).
    failed : iterable, optional
        Archs whose measurement failed before (never picked again).
    on_step : callable, optional
        ``on_step(loop, step)`` after every adaptation (progress display, benchmarks).
    """

    def __init__(self, method: FewShotMethod, space: str, candidates, measure: Callable, settings: OnboardSettings,
                 *, tables: dict | None = None, device: str | None = None, measured: Mapping | None = None,
                 failed=(), on_step: Callable | None = None):
        self.method = method
        self.space = get_space(space).NAME
        pretrained = getattr(method, "space_", None)
        if pretrained is None:  # the first adapt would fail, after the first picks were measured
            raise OnboardError(f"{type(method).__name__} is not pretrained: call pretrain(space, train) before "
                               "onboarding")
        if pretrained != self.space:  # it ran on, its picks and features of another space
            raise OnboardError(f"{type(method).__name__} was pretrained on {pretrained}, not {self.space}: pretrain "
                               f"it on {self.space} tables, or onboard in {pretrained}")
        # the space's keys: an NB201 arch string is its index (measure is asked by index), a key of no arch one line
        self.candidates = list(dict.fromkeys(space_keys(self.space, candidates, "OnboardLoop candidates")))
        self.measure = measure
        self.settings = settings
        self.tables = tables
        self.device = device
        known = {} if measured is None else dict(measured)  # a Series too (`measured or {}` asked it for a truth value)
        self.measured: dict = {}
        self.failed: list = list(dict.fromkeys(space_keys(self.space, failed, "OnboardLoop failed")))
        # read as measure's answers are: a NaN (a table's unmeasured cell) failed the first adapt, after new picks
        self._record(space_keys(self.space, known, "OnboardLoop measured"),
                     [_latency(v, a, "measured holds") for a, v in known.items()])
        self.on_step = on_step
        self.rng = np.random.default_rng([settings.seed, 0x0B0A])
        settings.check(len(self.candidates))
        self.settings = settings.for_method(posterior.supports(method))  # the default picks depend on the method
        self._position = {a: i for i, a in enumerate(self.candidates)}
        self._features = None
        self.adapted = None
        self.members: list = []
        self.estimate: estimate.RhoEstimate | None = None
        self.steps: list[Step] = []
        self._pool_cache: list = []
        self.residuals: np.ndarray | None = None
        self._spread = None
        self._design = None
        self._design_order = None
        self._pool_feats = None
        self._pool_model = None
        self.posterior: posterior.Posterior | None = None
        self.estimate_parts: dict = {}

    # -- public ------------------------------------------------------------------------------
    @property
    def spent(self) -> int:
        return len(self.measured) + len(self.failed)

    def run(self) -> OnboardResult:
        s = self.settings
        # no more picks than candidates left: --candidates may name fewer archs than n_initial
        n = min(s.n_initial - len(self.measured), s.budget - self.spent, len(self.unmeasured()))
        if n > 0:
            self._measure(self._initial_picks(n))
        while True:
            start = time.perf_counter()
            if not self.measured:
                raise OnboardError("no measurement succeeded: check the device (every attempt failed)")
            self._adapt()
            step = Step(len(self.measured), [], self.estimate, time.perf_counter() - start)
            self.steps.append(step)
            if self.on_step is not None:
                self.on_step(self, step)
            reason = self._stop_reason()
            if reason:
                break
            n = min(s.batch_size, s.budget - self.spent, len(self.unmeasured()))
            picked = self._next_picks(n)
            step.picked = picked
            self._measure(picked)
        log.info("onboarding stopped (%s) after %d measurements; estimated rho %s", reason, self.spent,
                 self.estimate.to_dict() if self.estimate else None)
        return OnboardResult(self.adapted, dict(self.measured), list(self.failed), self.estimate, self.steps,
                             reason, self.members)

    @property
    def pool_log_ms(self) -> np.ndarray | None:
        """The adapted model's log-ms predictions of this round's pool of unmeasured candidates."""
        return None if self._spread is None else self._spread.full_log_ms

    @property
    def pool_model(self) -> np.ndarray | None:
        """The closed-form posterior's model values of the pool (the method's response units), or None."""
        return self._pool_model

    @property
    def pool(self) -> list:
        """This round's pool of unmeasured candidates (what acquisition and estimate look at)."""
        return list(self._pool_cache)

    @property
    def pool_features(self):
        """The posterior's per-group features of :attr:`pool` (None without a closed-form posterior)."""
        return self._pool_feats

    def predict_table(self, archs=None) -> tuple[np.ndarray, np.ndarray]:
        """(predicted latency_ms, uncertainty in log-ms) of ``archs`` (default: every candidate; NB201 arch strings
        are read as their indices, as ``predict`` reads them).

        The uncertainty is NaN (unknown) while fewer than 2 distinct latencies are measured.
        """
        if self.adapted is None:
            raise OnboardError("nothing adapted yet: run() first")
        archs = self.candidates if archs is None else space_keys(self.space, archs, "OnboardLoop.predict_table")
        if len(set(self.measured.values())) < 2:
            # one distinct latency (failures, a coarse timer) fits a constant: its spread of 0 is no certainty
            return np.asarray(self.adapted.predict(archs), dtype=np.float64), np.full(len(archs), np.nan)
        if self.posterior is not None:
            # of a latency, not of the model's mean: without the fitted noise 90 % intervals held 60 % of the
            # truth after 20 measurements (scripts/bench_onboard_uncertainty, train devices)
            sd = self.posterior.log_ms_mean_sd(archs, with_noise=True)[1]
            return np.asarray(self.adapted.predict(archs), dtype=np.float64), sd
        spread = ensemble.predict_spread(self.adapted, self.members, archs)
        return np.exp(spread.full_log_ms), spread.std_log_ms

    # -- steps -------------------------------------------------------------------------------
    def _stop_reason(self) -> str | None:
        s = self.settings
        # "stop when sure": an estimate past the target whose interval is too wide to trust (``unsure``)
        # measures on, or a noisy device would stop at its first optimistic guess
        if (s.target_rho is not None and self.estimate is not None
                and len(self.measured) >= max(s.n_initial, s.stop_from)
                and self.estimate.rho >= s.target_rho and not self.estimate.unsure):
            return "target"
        if self.spent >= s.budget:
            return "budget"
        if not self.unmeasured():
            return "candidates"
        return None

    def unmeasured(self) -> list:
        """The candidates neither measured nor failed: what the next picks and the rho estimate are drawn from."""
        taken = set(self.measured) | set(self.failed)
        return [a for a in self.candidates if a not in taken]

    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = selection.space_features(self.space, self.candidates, self.tables,
                                                      dict(self.settings.feature_weights))
        return self._features

    def _taken_rows(self) -> list[int]:
        return [self._position[a] for a in list(self.measured) + self.failed if a in self._position]

    def _initial_picks(self, n: int) -> list:
        if self.settings.strategy == "random":
            return self._random_picks(n)
        s = self.settings
        if s.strategy == "design" or (s.strategy == "loop" and s.initial == "design"):
            return self._design_picks(n)
        rows = selection.diverse_picks(self.features(), n, self._taken_rows(), picker=self.settings.picker,
                                       random_state=self.settings.seed)
        return [self.candidates[i] for i in rows]

    def _design_picks(self, n: int) -> list:
        """The next ``n`` picks of the method's own design (``choose``: reads no target latency).

        A design of ``DESIGN_LENGTH`` picks is drawn once from a fixed seed, so a resumed onboarding
        continues the same sequence; archs already measured are skipped. Should the sequence run
        out (many measurements came from elsewhere), the D-optimal design on the method's design
        columns continues from everything measured (``design.design_picks``), or random picks for a
        method without design columns.
        """
        if self._design_order is None:
            # a fixed length: the same picks whatever the budget (a resumed, larger budget continues it)
            size = min(len(self.candidates), DESIGN_LENGTH)
            rng = np.random.default_rng([self.settings.seed, 0xDE51])
            self._design_order = list(self.method.choose(size, self.candidates, rng))
        taken = set(self.measured) | set(self.failed)
        picks = [a for a in self._design_order if a not in taken][:n]
        if len(picks) < n:
            if self._design is None:
                self._design = design.design_matrix(self.method, self.candidates)
            rest = n - len(picks)
            if self._design is None:
                left = [a for a in self.unmeasured() if a not in set(picks)]
                picks += [left[i] for i in self.rng.choice(len(left), size=rest, replace=False)]
            else:
                rows = design.design_picks(self._design, rest, self._taken_rows() + [self._position[a] for a in picks],
                                           self.rng, pool=getattr(self.method, "pool", design.DESIGN_POOL))
                picks += [self.candidates[i] for i in rows]
        return picks

    def _random_picks(self, n: int) -> list:
        rest = self.unmeasured()
        return [rest[i] for i in self.rng.choice(len(rest), size=n, replace=False)]

    def _pool(self, rng: np.random.Generator) -> list:
        rest = self.unmeasured()
        if len(rest) <= self.settings.pool_size:
            return rest
        return [rest[i] for i in np.sort(rng.choice(len(rest), size=self.settings.pool_size, replace=False))]

    def round_rng(self) -> np.random.Generator:
        """The random draws of a round's pool, ensemble and estimate, seeded from the seed and what is
        measured (and failed): the same measurements give the same report, however many rounds came before."""
        taken = sorted(f"{a}={self.measured[a]!r}" for a in self.measured) + sorted(f"{a}!" for a in self.failed)
        digest = hashlib.sha256("\n".join(taken).encode()).digest()
        return np.random.default_rng([self.settings.seed, 0xE571, int.from_bytes(digest[:8], "little")])

    def _adapt(self) -> None:
        s = self.settings
        archs = sorted(self.measured, key=str)  # one order for one measured set (a resume reads the store's order)
        y = np.array([self.measured[a] for a in archs])
        rng = self.round_rng()
        self.adapted = self.method.adapt(archs, y, device=self.device)
        self.posterior = posterior.fit_posterior(self.adapted, archs, y) if posterior.supports(self.adapted) else None
        self.members = [] if self.posterior is not None else ensemble.adapt_members(
            self.method, archs, y, n_members=s.n_members, subsample=s.subsample, rng=rng, device=self.device)
        self._pool_cache = self._pool(rng)
        self._spread = None
        self._pool_feats = None
        self._pool_model = None
        if self._pool_cache and self.posterior is not None:
            self._pool_feats = self.posterior.features(self._pool_cache)
            self._pool_model = self.adapted.predict_response(self._pool_cache)
            full = np.log(self.adapted.from_response(self._pool_model))  # = log(predict), features read once
            self._spread = ensemble.EnsemblePrediction(full, *self.posterior.log_ms_mean_sd(feats=self._pool_feats))
        elif self._pool_cache:
            self._spread = ensemble.predict_spread(self.adapted, self.members, self._pool_cache)
        self.estimate = None
        self.estimate_parts = {}
        if len(archs) < 3 or self._spread is None:
            return
        if self.posterior is not None and s.estimator in ("model", "blend"):
            kwargs = dict(rng=rng, n_draws=s.n_draws, confidence=s.confidence, noise_dof=s.noise_dof,
                          temperature=s.model_temperature)
            rho, low, high = posterior.model_rho(self.posterior, self._pool_model, self._pool_feats, **kwargs)
            # the whole posterior, as the table's uncertainty: the draws' temperature is the rho estimate's calibration
            rms = posterior.expected_log_error(self.posterior, self._pool_feats, y)
            if s.loo_mix_above is not None and len(archs) >= s.loo_mix_above:
                # enough measurements for their own residuals to show the noise's shape (heavy tails)
                loo = posterior.model_rho(self.posterior, self._pool_model, self._pool_feats, loo_scale=1.0,
                                          **kwargs)
                rho, low, high = (rho + loo[0]) / 2, min(low, loo[1]), max(high, loo[2])
            # a whole-ms timer widens the interval on any space, but shifts the estimate only on FBNet
            raw, whole_ms = (rho, low, high), estimate.is_whole_ms(y)
            coarse = estimate.coarse_timer(y, self.space)
            rho, low, high, outside = estimate.calibrate_round(*raw, len(archs), s.calibration, coarse=coarse,
                                                               calibrated_from=s.calibrated_from)
            half = estimate.interval_half_width(len(archs), whole_ms, s.interval_floor, s.interval_scale)
            low, high = estimate.widen(rho, low, high, half)
            if s.hold_draw_bounds:
                low, high = estimate.hold_draw_bounds(low, high, raw[1], raw[2])
            self.estimate_parts["model"] = estimate.RhoEstimate(
                rho, low, high, s.confidence, len(archs), rms, source="model",
                raw_rho=raw[0], whole_ms=whole_ms, raw_low=raw[1], raw_high=raw[2], coarse=coarse,
                extrapolated=outside, unsure=high - low > s.unsure_width)
        if self.posterior is None or s.estimator in ("cv", "blend"):
            resid = estimate.cv_residuals(self.method, archs, y, max_folds=s.max_folds, rng=rng,
                                          device=self.device)
            self.residuals = resid
            scale = estimate.effective_scale(len(archs), s.estimate_scale, s.estimate_shrink)
            self.estimate_parts["cv"] = estimate.estimate_rho(self._spread.full_log_ms, resid, rng=rng,
                                                              scale=scale, confidence=s.confidence)
        self.estimate = estimate.combine(list(self.estimate_parts.values()))
        if self.estimate is not None and self.estimate.high - self.estimate.low > s.unsure_width:
            self.estimate = replace(self.estimate, unsure=True)  # a cross-validated estimate can be as wide

    def _next_picks(self, n: int) -> list:
        s = self.settings
        if n <= 0:
            return []
        if s.strategy == "random":
            return self._random_picks(n)
        if s.strategy == "design" or (s.strategy == "loop" and s.design_after is not None
                                      and self.spent >= s.design_after):
            return self._design_picks(n)
        if s.strategy == "diverse" or self._spread is None:
            return self._initial_picks(n)
        pool = self._pool_cache
        if self.posterior is not None:
            weights = acquisition.focus_weights(self._spread.full_log_ms, focus_quantile=s.focus_quantile,
                                                tail_weight=s.tail_weight)
            if s.acquisition == "integrated":
                rows = design.integrated_picks(self.posterior, self._pool_feats, n, self.rng, weights=weights)
            else:  # "variance", and the ensemble modes, whose spread here is the posterior's variance
                rows = design.variance_picks(self.posterior, self._pool_feats, n, weights=weights)
            return [pool[i] for i in rows]
        if not self.members:
            return self._initial_picks(n)
        weights = acquisition.focus_weights(self._spread.full_log_ms, focus_quantile=s.focus_quantile,
                                            tail_weight=s.tail_weight)
        feats = self.features()
        rows = [self._position[a] for a in pool]
        taken = self._taken_rows()
        mode = "cover" if s.acquisition in MODEL_ACQUISITIONS else s.acquisition  # no posterior here
        picked = acquisition.choose(mode, self._spread.std_log_ms * weights, feats[rows], feats[taken], n,
                                    random_state=int(self.rng.integers(2 ** 31)))
        return [pool[i] for i in picked]

    def _record(self, archs: list, values: list) -> None:
        """Keep each arch's latency (a float, or None), a failed one (None, NaN, not above 0) among ``failed``."""
        for arch, value in zip(archs, values):
            if value is not None and np.isfinite(value) and value > 0:
                self.measured[arch] = value
            elif arch not in self.failed:
                self.failed.append(arch)

    def _measure(self, archs: list) -> None:
        archs = [a for a in archs if a not in self.measured and a not in self.failed]
        if not archs:
            return
        values = answered_latencies(self.measure(list(archs)), archs, self.space)
        self._record(archs, values)
        log.info("measured %d archs (%d failed); %d of %d spent", len(archs), sum(
            1 for a in archs if a in self.failed), self.spent, self.settings.budget)


def answered_latencies(answer, archs: list, space: str) -> list:
    """``measure``'s answer for ``archs`` (keys of ``space``) as one float or None (failed) each. A mapping, or a
    pandas Series whose index holds the archs (``table[table.index.isin(archs)]``, in the table's order), is read by
    arch, its keys as the space reads them (NB201 arch strings as indices): read by position, such a Series gave
    archs each other's latencies, and a mapping by arch string failed every arch asked by index, silently. A value
    that is no number, a table or an arch answered twice is refused."""
    if isinstance(answer, pd.DataFrame):  # its columns were taken for the archs (a KeyError)
        raise OnboardError(f"measure returned a DataFrame (columns {', '.join(map(str, answer.columns))}): give one "
                           "latency (ms) per architecture asked, as a sequence, a mapping arch -> ms or one column "
                           "(a Series indexed by arch)")
    if isinstance(answer, (Mapping, pd.Series)):
        by_arch = _by_arch(answer, archs, space)
        answer = answer if by_arch is None else by_arch
    if isinstance(answer, Mapping):
        values = [answer.get(a) for a in archs]
    else:
        try:
            values = list(answer)
        except TypeError:
            raise OnboardError(f"measure returned {type(answer).__name__} {answer!r}: give one latency (ms) per "
                               "architecture asked, as a sequence or a mapping arch -> ms") from None
        if len(values) != len(archs):
            raise OnboardError(f"measure returned {len(values)} latencies for {len(archs)} architectures")
    return [_latency(value, arch, "measure returned") for arch, value in zip(archs, values)]


def _latency(value, arch, said: str) -> float | None:
    """``value`` as a latency in ms, None for a failed one; a value that is no number is one OnboardError."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        raise OnboardError(f"{said} {value!r} for architecture {arch!r}: not a latency in ms (give NaN or None for a "
                           "failed measurement)") from None


def _by_arch(answer, archs: list, space: str) -> dict | None:
    """A mapping or Series ``answer`` as a dict arch -> value, its keys read as ``space`` reads them when they do not
    hold every arch asked as given. None for a Series whose keys, read either way, do not hold them all (a list's
    RangeIndex: read by position), and for a mapping of no keys of the space (each arch it lacks then failed)."""
    keys = list(answer.keys())
    if not set(archs) <= set(keys):
        try:
            keys = space_keys(space, keys)
        except (ValueError, TypeError):  # no keys of the space (a RangeIndex of FBNet latencies)
            return None
        if isinstance(answer, pd.Series) and not set(archs) <= set(keys):
            return None
    asked = set(archs)
    named = [k for k in keys if k in asked]
    if len(set(named)) != len(named):  # a Series' index, or two spellings of one arch: which value is its?
        twice = next(k for k in named if named.count(k) > 1)
        raise OnboardError(f"measure answered architecture {twice!r} more than once: give one latency (ms) each")
    return dict(zip(keys, answer.to_numpy() if isinstance(answer, pd.Series) else answer.values()))


def prepare_method(method: FewShotMethod, ks) -> FewShotMethod:
    """Set ``select_ks`` (a per-sample-count choice some methods make while pretraining) to ``ks``.

    Call it before ``pretrain``: an adapted copy would otherwise repeat that choice for every
    sample count the loop and its cross-validation adapt at. Methods without it are unchanged.
    """
    params = method.get_params(deep=False)
    if "select_ks" in params:
        method.set_params(select_ks=tuple(sorted({int(k) for k in ks if int(k) >= 1})))
    return method


def loop_ks(settings: OnboardSettings, n_known: int = 0) -> list[int]:
    """Every sample count the loop, its ensemble and its cross-validation may adapt at.

    Capped at the budget (and 60): with more measurements already known (a store holding a whole
    campaign of the device), the method makes its per-k choice on first use instead.
    """
    top = min(settings.budget, 60)
    return list(range(2, top + 1))


__all__ = ["ESTIMATORS", "INITIALS", "MODEL_ACQUISITIONS", "OnboardError", "OnboardLoop", "OnboardResult",
           "OnboardSettings", "STRATEGIES", "Step", "loop_ks", "prepare_method"]
