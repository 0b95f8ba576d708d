"""Onboarding a new device: measure few, adapt, choose the next, stop when sure.

Built on any :class:`~predictors.base.FewShotMethod` (default: ``registry.RECOMMENDED``):
``posterior`` (the closed-form posterior of ``phys_bayes``: BMA variance, function draws and
the model-based rho estimate), ``design`` (the method's design continued, posterior-variance
batches), ``selection`` (diverse picks), ``ensemble`` and ``estimate`` (spread and
cross-validated rho for methods without a posterior), ``acquisition`` (ensemble-based
batches), ``settings``, ``loop`` (the loop around a pluggable ``measure`` callable), ``replay``
and ``report``.
"""
from predictors.onboard.estimate import RhoEstimate, estimate_rho
from predictors.onboard.loop import (OnboardError, OnboardLoop, OnboardResult, OnboardSettings, STRATEGIES, Step,
                                     loop_ks, prepare_method)
from predictors.onboard.selection import diverse_picks, kcenter, kmeans_picks, space_features

__all__ = ["OnboardError", "OnboardLoop", "OnboardResult", "OnboardSettings", "RhoEstimate", "STRATEGIES", "Step",
           "diverse_picks", "estimate_rho", "kcenter", "kmeans_picks", "loop_ks", "prepare_method",
           "space_features"]
