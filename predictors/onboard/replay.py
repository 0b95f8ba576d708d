"""Replaying the onboarding loop on a public latency table instead of a real device.

The "device" answers from a held-out table (:class:`TableDevice`), so hundreds of onboardings
are cheap; :func:`replay_device` records, after every round, the true rho on the architectures
not measured beside the loop's estimate. ``scripts/bench_onboard`` and the tests use it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from predictors.base import FewShotMethod
from predictors.onboard.estimate import plugin_rho
from predictors.onboard.posterior import model_rho_at
from predictors.onboard.loop import OnboardError, OnboardLoop, OnboardSettings
from predictors.protocol import spearman


class TableDevice:
    """``measure(archs)`` answered from ``truth`` (a latency Series indexed by arch key).

    Attributes
    ----------
    asked : list
        Every architecture asked for, in order (a repeat raises: the loop must never re-measure).
    """

    def __init__(self, truth: pd.Series, *, fail=()):
        self.truth = truth
        self.fail = set(fail)
        self.asked: list = []

    def __call__(self, archs) -> list:
        archs = list(archs)
        seen = set(self.asked)
        again = [a for a in archs if a in seen]
        if again or len(set(archs)) != len(archs):
            raise OnboardError(f"architecture(s) measured twice: {again or archs}")
        self.asked += archs
        return [None if a in self.fail else float(self.truth.loc[a]) for a in archs]


def replay_device(method: FewShotMethod, space: str, truth: pd.Series, settings: OnboardSettings, *,
                  tables: dict | None = None, candidates=None, scales=(), temperatures=(),
                  seed: int = 0) -> dict:
    """One onboarding of the table device ``truth``; returns the curve and the final result.

    ``{"device", "strategy", "steps": [{"n", "true_rho", "est_rho", "low", "high", "est_parts", "raw_rho",
    "whole_ms", "coarse"}], "stop_reason", "spent"}``; ``true_rho`` is over every candidate not
    measured, with the round's adapted model; ``est_parts`` holds each estimator's ``[rho, low, high]`` (model, cv) and
    ``raw_rho`` the estimate before calibration (None when uncalibrated), ``raw_low`` and
    ``raw_high`` the posterior draws' bounds before calibration and widening, ``whole_ms`` whether
    every measurement was whole ms (the interval's input) and ``coarse`` whether the calibration's
    whole-ms terms applied (``estimate.coarse_timer``: whole ms on FBNet) and ``extrapolated`` whether the
    raw estimate was below the calibration's range (``estimate.calibrate_round``), ``unsure`` whether the
    interval was wider than ``settings.unsure_width``.
    ``scales`` adds ``est_at`` (scale -> estimated rho) per round, to calibrate the estimate's
    scale on train devices; ``temperatures`` adds ``model_at`` (temperature -> the model-based
    estimate ``[rho, low, high]``, ``posterior.model_rho``) to calibrate that one.
    """
    candidates = list(truth.index) if candidates is None else list(candidates)
    device = TableDevice(truth)
    rows = []

    def on_step(loop: OnboardLoop, step) -> None:
        rest = [a for a in candidates if a not in loop.measured]
        true = spearman(loop.adapted.predict(rest), truth.loc[rest].to_numpy())
        est, model = step.estimate, loop.estimate_parts.get("model")
        row = {"n": step.n_measured, "true_rho": true, "est_rho": est.rho if est else None,
               "low": est.low if est else None, "high": est.high if est else None,
               "est_parts": {name: [e.rho, e.low, e.high] for name, e in loop.estimate_parts.items()},
               "raw_rho": getattr(model, "raw_rho", None), "raw_low": getattr(model, "raw_low", None),
               "raw_high": getattr(model, "raw_high", None), "whole_ms": getattr(model, "whole_ms", False),
               "coarse": getattr(model, "coarse", False), "extrapolated": getattr(model, "extrapolated", False),
               "unsure": est.unsure if est else None}
        if temperatures and loop.posterior is not None and loop.pool_model is not None and step.n_measured >= 3:
            rng = np.random.default_rng([seed, step.n_measured, 1])
            at = model_rho_at(loop.posterior, loop.pool_model, loop.pool_features,
                              list(temperatures), rng=rng, n_draws=loop.settings.n_draws,
                              noise_dof=loop.settings.noise_dof)
            row["model_at"] = {float(t): list(r[:3]) for t, r in zip(temperatures, at)}
            for scale in (0.5, 0.75, 1.0):
                at = model_rho_at(loop.posterior, loop.pool_model, loop.pool_features, list(temperatures),
                                  rng=rng, n_draws=loop.settings.n_draws, loo_scale=scale)
                row["model_at"].update({f"{t}/loo{scale}": list(r[:3]) for t, r in zip(temperatures, at)})
        if scales and loop.residuals is not None and loop.pool_log_ms is not None:
            rng = np.random.default_rng([seed, step.n_measured])
            row["est_at"] = {float(c): plugin_rho(loop.pool_log_ms, loop.residuals, rng=rng, scale=c, draws=4)
                             for c in scales}
        rows.append(row)

    loop = OnboardLoop(method, space, candidates, device, settings, tables=tables, device=str(truth.name),
                       on_step=on_step)
    result = loop.run()
    return {"device": str(truth.name), "strategy": loop.settings.strategy, "steps": rows,
            "stop_reason": result.stop_reason, "spent": result.spent, "asked": len(device.asked)}


def rho_at(steps: list[dict], n: int, key: str = "true_rho") -> float | None:
    """The value of ``key`` at the last round with at most ``n`` measurements."""
    vals = [s[key] for s in steps if s["n"] <= n and s[key] is not None]
    return float(vals[-1]) if vals else None


__all__ = ["TableDevice", "replay_device", "rho_at"]
