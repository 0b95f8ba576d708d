"""Onboarding a new device: measure few, adapt, choose the next, stop when sure.

Built on any :class:`~predictors.base.FewShotMethod` (default: ``registry.RECOMMENDED``):
``posterior`` (the closed-form posterior of ``phys_bayes``: BMA variance, function draws and
the model-based rho estimate), ``design`` (the method's design continued, posterior-variance
batches), ``selection`` (diverse picks), ``ensemble`` and ``estimate`` (spread and
cross-validated rho for methods without a posterior), ``acquisition`` (ensemble-based
batches), ``settings``, ``loop`` (the loop around a pluggable ``measure`` callable), ``replay``
and ``report``.
"""
from predictors.lazy import lazy_names

# Each name is imported from its module on first use: `hwl onboard`'s parser reads ``settings``, and importing
# ``estimate`` and ``loop`` here pulled in scipy, scikit-learn and pandas (~1.3 s) for it.
_HOMES = {
    "OnboardError": "settings", "OnboardSettings": "settings", "STRATEGIES": "settings",
    "OnboardLoop": "loop", "OnboardResult": "loop", "Step": "loop", "loop_ks": "loop", "prepare_method": "loop",
    "RhoEstimate": "estimate", "estimate_rho": "estimate",
    "diverse_picks": "selection", "kcenter": "selection", "kmeans_picks": "selection", "space_features": "selection",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
