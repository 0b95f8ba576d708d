"""Onboarding a new device: measure few, adapt, choose the next, stop when sure.

Built on any :class:`~predictors.base.FewShotMethod` (default: ``registry.RECOMMENDED``):
``selection`` (diverse first picks), ``ensemble`` (spread from members adapted on subsets),
``acquisition`` (the next batch), ``estimate`` (cross-validated rho with an interval),
``loop`` (the loop around a pluggable ``measure`` callable) and ``report``.
"""
from predictors.onboard.estimate import RhoEstimate, estimate_rho
from predictors.onboard.loop import (OnboardError, OnboardLoop, OnboardResult, OnboardSettings, STRATEGIES, Step,
                                     loop_ks, prepare_method)
from predictors.onboard.selection import diverse_picks, kcenter, kmeans_picks, space_features

__all__ = ["OnboardError", "OnboardLoop", "OnboardResult", "OnboardSettings", "RhoEstimate", "STRATEGIES", "Step",
           "diverse_picks", "estimate_rho", "kcenter", "kmeans_picks", "loop_ks", "prepare_method",
           "space_features"]
