"""The next batch to measure: where the ensemble disagrees most, in the latency range NAS uses.

Each unmeasured candidate of the pool scores ``spread * focus_weight``:

- ``spread``: the ensemble's standard deviation of log-latency (see ``ensemble``);
- ``focus_weight``: 1 for architectures predicted faster than the ``focus_quantile`` of the
  pool, falling linearly to ``tail_weight`` at the slowest. Latency-constrained NAS searches the
  fast-to-middle part of a space; the slowest tail matters less, but still counts.

Two ways to turn scores into a batch:

- ``greedy``: highest score first; after each pick the scores of candidates near it (feature
  distance below the typical distance of a candidate to its nearest measured architecture) are
  damped, so one batch does not spend several measurements on near-duplicates;
- ``cover``: the pool and the measured architectures are clustered together (k-means, as many
  clusters as measured architectures plus ``clusters_per_pick`` per new pick); clusters that
  hold no measured architecture are ranked by their total score, and each of the best ``n``
  gives the candidate nearest its centre: coverage first, uncertainty to choose among the gaps;
- ``mass``: the pool is clustered (k-means on the selection features, ``clusters_per_pick``
  clusters per measurement); the clusters holding the most score in total win, and each gives
  the candidate nearest its centre: a representative of a region where many architectures are
  uncertain, rather than the single most uncertain (often an outlier) architecture.
"""
from __future__ import annotations

import numpy as np

from predictors.onboard.selection import _sqdist

# scikit-learn is imported in the functions that use it: `hwl onboard`'s parser reads ``MODES`` (settings.py).

MODES = ("cover", "greedy", "mass")


def focus_weights(pred_log_ms: np.ndarray, *, focus_quantile: float = 0.75, tail_weight: float = 0.5) -> np.ndarray:
    """Weight per architecture from the quantile of its predicted latency (see module doc)."""
    pred = np.asarray(pred_log_ms, dtype=np.float64)
    if len(pred) == 0:
        return pred
    q = (np.argsort(np.argsort(pred, kind="stable"), kind="stable") + 0.5) / len(pred)
    if focus_quantile >= 1.0:
        return np.ones(len(pred))
    ramp = np.clip((q - focus_quantile) / (1.0 - focus_quantile), 0.0, 1.0)
    return 1.0 - (1.0 - tail_weight) * ramp


def next_batch(scores: np.ndarray, pool_features: np.ndarray, measured_features: np.ndarray, n: int) -> list[int]:
    """``n`` pool indices by greedy score with damping near earlier picks (see module doc)."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    n = min(int(n), len(scores))
    if n <= 0:
        return []
    if len(measured_features):
        near = np.sqrt(np.min(_sqdist(pool_features, measured_features), axis=1))
        radius = float(np.median(near)) or 1.0
    else:
        radius = 1.0
    picks = []
    for _ in range(n):
        i = int(np.argmax(scores))
        picks.append(i)
        d = np.sqrt(_sqdist(pool_features, pool_features[[i]])[:, 0])
        scores = scores * np.minimum(1.0, d / radius)
        scores[picks] = -np.inf
    return picks


def mass_batch(scores: np.ndarray, pool_features: np.ndarray, n: int, *, clusters_per_pick: int = 4,
               random_state=0) -> list[int]:
    """``n`` pool indices: centres of the clusters with the most total score (see module doc)."""
    from sklearn.cluster import KMeans

    scores = np.asarray(scores, dtype=np.float64)
    n = min(int(n), len(scores))
    if n <= 0:
        return []
    n_clusters = min(len(scores), max(n, clusters_per_pick * n))
    km = KMeans(n_clusters=n_clusters, n_init=1, random_state=random_state).fit(pool_features)
    mass = np.bincount(km.labels_, weights=scores, minlength=n_clusters)
    d = _sqdist(pool_features, km.cluster_centers_)
    picks = []
    for c in np.argsort(-mass, kind="stable")[:n]:
        members = np.flatnonzero(km.labels_ == c)
        picks.append(int(members[np.argmin(d[members, c])]))
    return picks


def cover_batch(scores: np.ndarray, pool_features: np.ndarray, measured_features: np.ndarray, n: int, *,
                clusters_per_pick: int = 2, random_state=0) -> list[int]:
    """``n`` pool indices: centres of the uncovered clusters with the most score (see module doc)."""
    from sklearn.cluster import KMeans

    scores = np.asarray(scores, dtype=np.float64)
    n = min(int(n), len(scores))
    if n <= 0:
        return []
    feats = np.vstack([pool_features, measured_features]) if len(measured_features) else pool_features
    n_pool = len(pool_features)
    n_clusters = min(len(feats), len(measured_features) + clusters_per_pick * n)
    km = KMeans(n_clusters=n_clusters, n_init=1, random_state=random_state).fit(feats)
    covered = set(km.labels_[n_pool:].tolist())
    labels = km.labels_[:n_pool]
    mass = np.bincount(labels, weights=scores, minlength=n_clusters)
    d = _sqdist(pool_features, km.cluster_centers_)
    picks = []
    for c in np.argsort(-mass, kind="stable"):
        if len(picks) == n:
            break
        members = np.flatnonzero(labels == c)
        if c in covered or not len(members):
            continue
        picks.append(int(members[np.argmin(d[members, c])]))
    if len(picks) < n:  # fewer gaps than picks: the rest by score
        rest = np.setdiff1d(np.arange(n_pool), picks)
        picks += [int(i) for i in rest[np.argsort(-scores[rest], kind="stable")[:n - len(picks)]]]
    return picks


def choose(mode: str, scores, pool_features, measured_features, n: int, *, random_state=0) -> list[int]:
    """``n`` pool indices by ``mode`` (one of :data:`MODES`)."""
    if mode == "greedy":
        return next_batch(scores, pool_features, measured_features, n)
    if mode == "cover":
        return cover_batch(scores, pool_features, measured_features, n, random_state=random_state)
    if mode == "mass":
        return mass_batch(scores, pool_features, n, random_state=random_state)
    raise ValueError(f"unknown acquisition mode {mode!r}; valid: {', '.join(MODES)}")


__all__ = ["MODES", "choose", "cover_batch", "focus_weights", "mass_batch", "next_batch"]
