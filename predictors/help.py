"""HELP (Lee et al., NeurIPS 2021) re-implemented: a meta-learned, hardware-conditioned predictor.

The device is represented by its latencies on 10 fixed **reference architectures** (HELP's
"hardware embedding"); the predictor ``f(x, h)`` (Vec encoding + embedding) is meta-trained
with MAML over the train devices: each episode takes one train device, adapts a copy of the
weights with a few SGD steps on a small support set (inner loop) and updates the shared
initialisation with the loss on a query set of the same device (outer loop, second order).
On a new device the 10 references are measured, the embedding is built from them, and the
same inner loop runs on all k measurements.

The references count against k (strict protocol): ``choose`` returns the 10 references plus
k - 10 random archs. With k < 10 only the first k references are measured; the missing
embedding entries are filled with the mean of the measured ones (standardised scale), which
is what HELP's normalisation gives a missing value.

Targets are log-latencies standardised per device by the mean/std of its reference latencies,
so train and new devices share one scale without looking at anything but the references.
"""
from __future__ import annotations

import functools
import logging
from importlib import resources

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call

from predictors.base import FewShotMethod, UnusableMeasurementsError, full_tables, train_tables
from predictors.encodings import VecEncoder
from predictors.nets import mlp_layers
from spaces import get_space

log = logging.getLogger(__name__)

# HELP's hardware_embedding_index.pt: NB201 indices; FBNet ids are rows of HELP's FBNet tables.
NB201_REFERENCES = (11982, 431, 55, 9, 14451, 8636, 9881, 13479, 6196, 1462)
FBNET_REFERENCE_IDS = (3328, 3790, 3313, 890, 3052, 2538, 1640, 2514, 457, 2100)


@functools.lru_cache(maxsize=2)
def reference_archs(space: str) -> tuple:
    """HELP's 10 reference architectures as keys of ``space``."""
    space = get_space(space).NAME
    if space == "nb201":
        return NB201_REFERENCES
    path = resources.files("predictors").joinpath("data/fbnet_latency.parquet")
    with resources.as_file(path) as file:
        ids = pd.read_parquet(file, columns=["arch_id", "arch_ops"]).drop_duplicates("arch_id")
    key_of = dict(zip(ids["arch_id"].astype(int), ids["arch_ops"].astype(str)))
    return tuple(key_of[i] for i in FBNET_REFERENCE_IDS)


def choose_with_references(references, k: int, candidates, rng: np.random.Generator) -> list:
    """The first min(k, 10) references, then random other candidates up to k."""
    candidates = list(candidates)
    if k > len(candidates):
        raise ValueError(f"k={k} is larger than the {len(candidates)} candidate architectures")
    present = set(candidates)
    refs = [r for r in references if r in present]
    if len(refs) < len(references):
        log.warning("%d of the %d reference archs are not candidates", len(references) - len(refs), len(references))
    picked = refs[:k]
    rest = [c for c in candidates if c not in set(picked)]
    if k > len(picked):
        extra = rng.choice(len(rest), size=k - len(picked), replace=False)
        picked += [rest[i] for i in extra]
    return picked


class _HelpNet(torch.nn.Module):
    def __init__(self, in_dim: int, n_refs: int, hidden: int, n_layers: int, emb_dim: int):
        super().__init__()
        self.hw = torch.nn.Sequential(torch.nn.Linear(n_refs, emb_dim), torch.nn.ReLU())
        self.body = mlp_layers(in_dim + emb_dim, hidden, n_layers)

    def forward(self, x, h):
        return self.body(torch.cat([x, self.hw(h).expand(len(x), -1)], dim=-1)).squeeze(-1)


class HELP(FewShotMethod):
    """MAML-trained latency predictor with a 10-reference-latency hardware embedding.

    Parameters
    ----------
    hidden, n_layers, emb_dim : int
        Network size.
    meta_episodes : int
        Outer-loop updates (one train device per episode).
    support, query : int
        Support archs (the references plus random ones) and query archs per episode.
    inner_steps, inner_lr : int, float
        Inner-loop SGD steps and rate (meta-training and adaptation).
    adapt_steps : int
        Inner-loop steps on a new device (default: ``inner_steps``).
    meta_lr : float
        Adam rate of the outer loop.
    random_state : int, optional

    Attributes
    ----------
    space_ : str
    references_ : tuple
        The 10 reference archs.
    net_ : torch.nn.Module
        Meta-learned initialisation; after ``adapt``, ``params_`` holds the adapted weights.
    """

    name = "help"

    def __init__(self, hidden: int = 100, *, n_layers: int = 3, emb_dim: int = 16, meta_episodes: int = 600,
                 support: int = 20, query: int = 100, inner_steps: int = 3, inner_lr: float = 0.05,
                 adapt_steps: int | None = None, meta_lr: float = 1e-3, random_state=None):
        self.hidden = hidden
        self.n_layers = n_layers
        self.emb_dim = emb_dim
        self.meta_episodes = meta_episodes
        self.support = support
        self.query = query
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.adapt_steps = adapt_steps
        self.meta_lr = meta_lr
        self.random_state = random_state

    # -- pretrain (meta-training) ------------------------------------------------------------
    def pretrain(self, space, train):
        self.space_ = get_space(space).NAME
        train = train_tables(self.space_, train, f"{type(self).__name__}.pretrain")
        self.references_ = reference_archs(self.space_)
        tables = full_tables(train)
        self.encoder_ = VecEncoder(self.space_).fit()
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        ref_x = torch.from_numpy(self.encoder_.transform(list(self.references_)).astype(np.float32))
        devices = []
        for device, series in train.items():
            ref_lat = tables[device].reindex(list(self.references_)).to_numpy(np.float64)
            if np.isnan(ref_lat).any():
                raise ValueError(f"train device {device!r} lacks latencies of HELP's reference architectures")
            h, mean, std = self._embedding(ref_lat)
            x = torch.from_numpy(self.encoder_.transform(list(series.index)).astype(np.float32))
            y = torch.from_numpy(((np.log(series.to_numpy(np.float64)) - mean) / std).astype(np.float32))
            ref_y = torch.from_numpy(((np.log(ref_lat) - mean) / std).astype(np.float32))
            devices.append((h, x, y, ref_y))
        self.net_ = _HelpNet(ref_x.shape[1], len(self.references_), self.hidden, self.n_layers, self.emb_dim)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.meta_lr)
        n_extra = max(self.support - len(self.references_), 0)
        for _ in range(self.meta_episodes):
            h, x, y, ref_y = devices[rng.integers(len(devices))]
            idx = rng.permutation(len(y))
            sup, qry = idx[:n_extra], idx[n_extra:n_extra + self.query]
            sx, sy = torch.cat([ref_x, x[sup]]), torch.cat([ref_y, y[sup]])
            params = self._inner(dict(self.net_.named_parameters()), sx, sy, h, self.inner_steps, create_graph=True)
            loss = torch.nn.functional.mse_loss(functional_call(self.net_, params, (x[qry], h)), y[qry])
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.net_.eval()
        return self

    @staticmethod
    def _embedding(ref_lat: np.ndarray):
        """(embedding tensor, mean, std) from reference latencies; NaN entries -> the mean."""
        v = np.log(np.asarray(ref_lat, dtype=np.float64))
        known = v[~np.isnan(v)]
        mean = float(known.mean())
        std = float(known.std()) if len(known) > 1 and known.std() > 0 else 1.0
        z = np.where(np.isnan(v), 0.0, (v - mean) / std)
        return torch.from_numpy(z.astype(np.float32)).unsqueeze(0), mean, std

    def _inner(self, params: dict, x, y, h, steps: int, *, create_graph: bool) -> dict:
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(functional_call(self.net_, params, (x, h)), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
            params = {n: p - self.inner_lr * g for (n, p), g in zip(params.items(), grads)}
        return params

    # -- choose / adapt / predict ------------------------------------------------------------
    def choose(self, k, candidates, rng):
        if not self._is_pretrained():
            raise ValueError("HELP.choose needs pretrain(space, train) first (it names the reference archs)")
        return choose_with_references(self.references_, k, candidates, rng)

    def _adapt(self, archs, y, device):
        known = dict(zip(archs, y))
        ref_lat = np.array([known.get(a, np.nan) for a in self.references_], dtype=np.float64)
        if np.isnan(ref_lat).all():
            raise UnusableMeasurementsError(
                f"HELP needs the new device's latency on at least one of its {len(self.references_)} reference "
                f"architectures ({', '.join(map(str, self.references_))}); measure them first (choose() puts them "
                "among the k archs)")
        h, self.mean_, self.std_ = self._embedding(ref_lat)
        self.h_ = h
        x = torch.from_numpy(self.encoder_.transform(list(archs)).astype(np.float32))
        t = torch.from_numpy(((np.log(y) - self.mean_) / self.std_).astype(np.float32))
        steps = self.inner_steps if self.adapt_steps is None else self.adapt_steps
        params = {n: p.detach().clone().requires_grad_(True) for n, p in self.net_.named_parameters()}
        params = self._inner(params, x, t, h, steps, create_graph=False)
        self.params_ = {n: p.detach() for n, p in params.items()}
        self.device_ = device

    def _predict(self, archs):
        x = torch.from_numpy(self.encoder_.transform(list(archs)).astype(np.float32))
        with torch.no_grad():
            z = functional_call(self.net_, self.params_, (x, self.h_)).numpy().astype(np.float64)
        return np.exp(z * self.std_ + self.mean_)


__all__ = ["FBNET_REFERENCE_IDS", "HELP", "NB201_REFERENCES", "choose_with_references", "reference_archs"]
