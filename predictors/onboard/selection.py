"""Diverse first picks: architectures spread over the search space before any target latency.

Features (:func:`space_features`) describe each candidate without the new device: ``hwl``
(the train devices' log-latencies, where the public tables know the architecture), ``cost``
(log FLOPs and params), ``ops`` (op-type counts) and ``vec`` (the space's one-hot). Each group
is standardised per column and scaled to a chosen share of the total variance, so the weights
say how much each view counts in a distance.

Two pickers work on those features and both accept architectures already measured (a resumed
onboarding keeps its picks and adds to them):

- :func:`kcenter`: greedy farthest-point (each pick maximises its distance to everything picked
  or measured), started at the candidate nearest the centroid;
- :func:`kmeans_picks`: k-means with as many clusters as picks plus measured archs; the
  candidate nearest each centroid of a cluster holding no measured arch.
"""
from __future__ import annotations

import numpy as np

from spaces import get_space

# scikit-learn and the baselines' features are imported in the functions that use them: `hwl onboard`'s parser reads
# this module's constants (settings.py).

DEFAULT_WEIGHTS = {"hwl": 1.0, "cost": 0.5, "ops": 0.25, "vec": 0.25}
FEATURE_GROUPS = tuple(DEFAULT_WEIGHTS)
PICKERS = ("kcenter", "kmeans")


class SelectionError(ValueError):
    """A selection that cannot be made (unknown picker or group, more picks than candidates)."""


def space_features(space: str, keys, tables: dict | None = None, weights: dict | None = None) -> np.ndarray:
    """(n, d) features of ``keys`` for distances; group ``g`` carries ``weights[g]`` of the variance.

    Parameters
    ----------
    space : str
    keys : sequence
        Candidate architecture keys.
    tables : dict, optional
        Train device -> latency Series (the ``hwl`` group); archs a device does not know get the
        column mean, a device knowing none of them is left out.
    weights : dict, optional
        Group -> share (default :data:`DEFAULT_WEIGHTS`); a zero or missing group is left out.
    """
    weights = DEFAULT_WEIGHTS if weights is None else weights
    unknown = [g for g in weights if g not in FEATURE_GROUPS]
    if unknown:
        raise SelectionError(f"unknown feature group(s) {unknown}; valid: {', '.join(FEATURE_GROUPS)}")
    keys = list(keys)
    blocks = []
    for group, weight in weights.items():
        if weight <= 0:
            continue
        raw = _raw(group, space, keys, tables)
        if raw is None or raw.shape[1] == 0:
            continue
        blocks.append(_standardise(raw) * np.sqrt(weight))
    if not blocks:
        raise SelectionError("no feature group left to select on (give train tables or a positive weight)")
    return np.hstack(blocks)


def _raw(group: str, space: str, keys: list, tables: dict | None) -> np.ndarray | None:
    from predictors.baselines.features import log_cost, op_counts

    if group == "hwl":
        if not tables:
            return None
        cols = [np.log(t.reindex(keys).to_numpy(np.float64)) for t in tables.values()]
        cols = [c for c in cols if np.isfinite(c).any()]
        if not cols:
            return None
        raw = np.column_stack(cols)
        return np.where(np.isfinite(raw), raw, np.nanmean(raw, axis=0))
    if group == "cost":
        return log_cost(space, keys)
    if group == "ops":
        return op_counts(space, keys)
    return get_space(space).vec_encoding(keys).astype(np.float64)


def _standardise(raw: np.ndarray) -> np.ndarray:
    """Columns to zero mean, unit variance; then the block to unit total variance."""
    std = raw.std(axis=0)
    keep = std > 0
    z = (raw[:, keep] - raw[:, keep].mean(axis=0)) / std[keep]
    return z / np.sqrt(max(int(keep.sum()), 1))


def kcenter(features: np.ndarray, n: int, already=()) -> list[int]:
    """``n`` row indices by greedy farthest-point selection, given rows ``already`` picked."""
    features = np.asarray(features, dtype=np.float64)
    already = [int(i) for i in already]
    _check(len(features), n, already)
    if n == 0:
        return []
    picks: list[int] = []
    if not already:  # start at the most typical architecture (nearest the centroid)
        first = int(np.argmin(_sqdist(features, features.mean(axis=0, keepdims=True))[:, 0]))
        picks.append(first)
        already = [first]
    dist = np.min(_sqdist(features, features[already]), axis=1)
    dist[already] = -1.0
    while len(picks) < n:
        i = int(np.argmax(dist))
        picks.append(i)
        dist = np.minimum(dist, _sqdist(features, features[[i]])[:, 0])
        dist[i] = -1.0
    return picks


def kmeans_picks(features: np.ndarray, n: int, already=(), *, random_state=0, fit_max: int = 4000) -> list[int]:
    """``n`` row indices nearest the centroids of k-means clusters holding no measured row."""
    from sklearn.cluster import KMeans

    features = np.asarray(features, dtype=np.float64)
    already = [int(i) for i in already]
    _check(len(features), n, already)
    if n == 0:
        return []
    n_clusters = min(len(features), n + len(already))
    rng = np.random.default_rng(random_state)
    # Fit on a random subset of a big space (the clusters of 15,625 archs need not see them all).
    fit_rows = np.arange(len(features)) if len(features) <= fit_max else rng.choice(len(features), fit_max, replace=False)
    km = KMeans(n_clusters=n_clusters, n_init=2, random_state=random_state).fit(features[fit_rows])
    labels = km.predict(features)
    taken = set(labels[already].tolist()) if already else set()
    d = _sqdist(features, km.cluster_centers_)
    blocked = np.zeros(len(features), dtype=bool)
    blocked[already] = True
    picks = []
    # Clusters with a measured arch are covered; the others, largest first, give one pick each.
    order = np.argsort(-np.bincount(labels, minlength=n_clusters), kind="stable")
    for c in order:
        if c in taken or len(picks) == n:
            continue
        members = np.flatnonzero((labels == c) & ~blocked)
        if len(members):
            i = int(members[np.argmin(d[members, c])])
            picks.append(i)
            blocked[i] = True
    if len(picks) < n:  # measured archs shared clusters: fill farthest-first
        picks += kcenter(features, n - len(picks), already + picks)
    return picks


def diverse_picks(features: np.ndarray, n: int, already=(), *, picker: str = "kcenter", random_state=0) -> list[int]:
    """``n`` diverse row indices with ``picker`` (one of :data:`PICKERS`)."""
    if picker == "kcenter":
        return kcenter(features, n, already)
    if picker == "kmeans":
        return kmeans_picks(features, n, already, random_state=random_state)
    raise SelectionError(f"unknown picker {picker!r}; valid pickers: {', '.join(PICKERS)}")


def _check(n_rows: int, n: int, already: list[int]) -> None:
    if n < 0:
        raise SelectionError(f"cannot pick a negative number of architectures ({n})")
    if n + len(set(already)) > n_rows:
        raise SelectionError(f"cannot pick {n} more architectures: only {n_rows - len(set(already))} "
                             f"of {n_rows} candidates are left")


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


__all__ = ["DEFAULT_WEIGHTS", "FEATURE_GROUPS", "PICKERS", "SelectionError", "diverse_picks", "kcenter",
           "kmeans_picks", "space_features"]
