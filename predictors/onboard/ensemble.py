"""Uncertainty from any few-shot method: an ensemble of copies adapted on resampled measurements.

A :class:`~predictors.base.FewShotMethod` predicts one value per architecture. Where a method
offers a predictive spread itself (a ``predict_std(archs)`` method of the adapted object, in
log-ms), :func:`predict_spread` uses it; otherwise the spread is the disagreement of members
adapted on different subsets of the measured set (a random ``subsample`` share of it each,
without repeats: a method sees every architecture at most once, as in a real measurement).
Everything is in log-latency, where the methods' errors are roughly proportional.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictors.base import FewShotMethod


@dataclass
class EnsemblePrediction:
    """Log-latency mean and spread of an ensemble over some architectures.

    Attributes
    ----------
    full_log_ms : ndarray
        The method adapted on every measurement (what the onboarding hands out).
    mean_log_ms, std_log_ms : ndarray
        Mean and standard deviation over the members (std from the method where it offers one).
    """

    full_log_ms: np.ndarray
    mean_log_ms: np.ndarray
    std_log_ms: np.ndarray


def adapt_members(method: FewShotMethod, archs, latency_ms, *, n_members: int, subsample: float,
                  rng: np.random.Generator, device: str | None = None) -> list[FewShotMethod]:
    """``n_members`` copies of ``method`` adapted on random subsets of the measurements.

    Each subset keeps ``ceil(subsample * n)`` of the n measurements (at least 2, at most n - 1).
    """
    archs = list(archs)
    y = np.asarray(latency_ms, dtype=np.float64)
    n = len(archs)
    if n < 3 or n_members < 1:
        return []
    size = int(np.clip(np.ceil(subsample * n), 2, n - 1))
    members = []
    for _ in range(n_members):
        idx = np.sort(rng.choice(n, size=size, replace=False))
        members.append(method.adapt([archs[i] for i in idx], y[idx], device=device))
    return members


def predict_spread(adapted: FewShotMethod, members: list[FewShotMethod], archs) -> EnsemblePrediction:
    """Full-model prediction plus ensemble mean and spread (log-ms) at ``archs``."""
    archs = list(archs)
    full = _log(adapted.predict(archs))
    own_std = getattr(adapted, "predict_std", None)
    if callable(own_std):
        return EnsemblePrediction(full, full, np.asarray(own_std(archs), dtype=np.float64))
    if not members:
        return EnsemblePrediction(full, full, np.zeros(len(archs)))
    preds = np.stack([_log(m.predict(archs)) for m in members])
    return EnsemblePrediction(full, preds.mean(axis=0), preds.std(axis=0))


def _log(pred) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    # Scores that are not positive latencies (a ranking-only method) are used as they are.
    return np.log(pred) if np.all(pred > 0) else pred


__all__ = ["EnsemblePrediction", "adapt_members", "predict_spread"]
