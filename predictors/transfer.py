"""The paper's transfer-learning method (Multi-Predict "TL ... ET") as a few-shot method.

``pretrain`` fits :class:`~predictors.multidevice.MultiDevicePredictor` (an ensemble of them)
on the train devices' pretraining sample, with an architecture encoding chosen by
``encoding``:

- ``vec``: the search space's one-hot (``VecEncoder``);
- ``hwl``: min-max scaled latencies on reference devices (``HWLEncoder``; default: the train
  devices, looked up in their whole tables);
- ``zcp``: zero-cost proxies from a proxy table (``ZCPEncoder``; FBNet: the shared
  ``fbnet_zcp.csv``), needs ``proxy_table``;
- ``hwlvec`` / ``zcpvec``: the concatenations.

``adapt`` applies Eq. 1 (the new device's embedding row copies the train device whose
latencies on the k measured archs are best Spearman-correlated with the new device's) and
Eq. 2 (fine-tuning on the k samples) to a deep copy of every ensemble member; predictions are
the members' mean on the standardised log scale.

Paper settings (Tables 14-15): 4 layers of 128, AdamW, lr 4e-4, 250 epochs cosine, weight
decay 5e-4, embedding 8, transfer 50 epochs at lr 1e-3. Our default pretrains for 60 epochs
at batch 256 (about 10x cheaper, so the whole suite fits its time budget); ``epochs=250,
batch_size=128`` reproduces the paper's schedule.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.base import FewShotMethod, UnusableMeasurementsError, full_tables, train_tables, union_keys
from predictors.baselines.copy_device import best_correlated
from predictors.encodings import HWLEncoder, VecEncoder, ZCPEncoder, read_proxy_table
from predictors.multidevice import MultiDevicePredictor
from spaces import get_space

log = logging.getLogger(__name__)

ENCODINGS = ("vec", "hwl", "zcp", "hwlvec", "zcpvec")


class ArchEncoder:
    """Concatenation of the encoders an encoding name asks for (fit on train archs only)."""

    def __init__(self, encoding: str, space: str, tables: dict, hwl_devices, proxies):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; valid encodings: {', '.join(ENCODINGS)}")
        self.parts = []
        if "zcp" in encoding:
            if proxies is None:
                raise ValueError(f"encoding {encoding!r} needs a proxy table (proxy_table=PATH or DataFrame; for "
                                 "FBNet the shared fbnet_zcp.csv)")
            self.parts.append(ZCPEncoder(proxies))
        if "hwl" in encoding:
            self.parts.append(HWLEncoder(tables, hwl_devices))
        if "vec" in encoding:
            self.parts.append(VecEncoder(space))

    def fit(self, archs):
        for part in self.parts:
            part.fit(archs)
        return self

    def transform(self, archs) -> np.ndarray:
        return np.hstack([part.transform(archs) for part in self.parts]).astype(np.float32)


class TransferLearning(FewShotMethod):
    """Multi-device MLP with a device representation, Eq. 1 initialisation and fine-tuning.

    Parameters
    ----------
    encoding : {"vec", "hwl", "zcp", "hwlvec", "zcpvec"}, optional
        Architecture encoding (default: the class's, ``vec`` for ``tl_et``).
    representation : {"embedding", "index", "sample"}, optional
        Device representation (default: ``embedding``).
    hidden, n_layers, emb_dim : int
        Network (paper: 128, 4, 8).
    lr, weight_decay, epochs, batch_size : pretraining (see module docstring).
    transfer_epochs, transfer_lr : fine-tuning on the k samples (paper: 50, 1e-3).
    loss : {"mse", "l1", "rank"}
    ensemble : int
        Independently seeded pretrained models, each adapted; predictions averaged.
    init : {"eq1", "mean"}
        New embedding row: Eq. 1's best-correlated train device, or the mean row.
    proxy_table : str or pandas.DataFrame, optional
        Zero-cost proxies for the ``zcp`` encodings (path to a CSV/Parquet or a table).
    hwl_devices : list of str, optional
        Reference devices of the ``hwl`` encodings (default: every train device).
    random_state : int, optional

    Attributes
    ----------
    space_ : str
    models_ : list of MultiDevicePredictor
        Pretrained (then, in an adapted copy, adapted) ensemble members.
    encoder_ : ArchEncoder
    source_device_ : str
        After ``adapt``: the train device Eq. 1 picked; ``source_rho_`` its rho.
    """

    name = "tl_et"
    default_encoding = "vec"
    default_representation = "embedding"
    cache_pretrained = True

    def __init__(self, encoding=None, *, representation=None, hidden: int = 128, n_layers: int = 4, emb_dim: int = 8,
                 lr: float = 4e-4, weight_decay: float = 5e-4, epochs: int = 60, batch_size: int = 256,
                 transfer_epochs: int = 50, transfer_lr: float = 1e-3, loss: str = "mse", ensemble: int = 1,
                 init: str = "eq1", proxy_table=None, hwl_devices=None, random_state=None):
        self.encoding = encoding
        self.representation = representation
        self.hidden = hidden
        self.n_layers = n_layers
        self.emb_dim = emb_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.transfer_epochs = transfer_epochs
        self.transfer_lr = transfer_lr
        self.loss = loss
        self.ensemble = ensemble
        self.init = init
        self.proxy_table = proxy_table
        self.hwl_devices = hwl_devices
        self.random_state = random_state

    @property
    def encoding_(self) -> str:
        return self.encoding or self.default_encoding

    @property
    def representation_(self) -> str:
        return self.representation or self.default_representation

    # -- pretrain ----------------------------------------------------------------------------
    def pretrain(self, space, train):
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be at least 1, got {self.ensemble}")
        if self.init not in ("eq1", "mean"):
            raise ValueError(f"unknown init {self.init!r}; valid: eq1, mean")
        self.space_ = get_space(space).NAME
        train = train_tables(self.space_, train, f"{type(self).__name__}.pretrain")
        self.tables_ = full_tables(train)
        proxies = self.proxy_table
        if isinstance(proxies, (str, Path)):
            proxies = read_proxy_table(proxies, self.space_)
        archs = union_keys(train.values())
        self.encoder_ = ArchEncoder(self.encoding_, self.space_, self.tables_, self.hwl_devices, proxies).fit(archs)
        self.references_ = None
        samples = None
        if self.representation_ == "sample":
            from predictors.help import reference_archs  # HELP's fixed reference archs

            self.references_ = reference_archs(self.space_)
            samples = {d: self._reference_latencies(self.tables_[d], d) for d in train}
        rows_x, rows_y, rows_d = [], [], []
        for device, series in train.items():
            rows_x.append(self.encoder_.transform(list(series.index)))
            rows_y.append(series.to_numpy(np.float64))
            rows_d.extend([device] * len(series))
        X, y = np.vstack(rows_x), np.concatenate(rows_y)
        seed = 0 if self.random_state is None else int(self.random_state)
        self.models_ = []
        for member in range(self.ensemble):
            model = MultiDevicePredictor(self.hidden, n_layers=self.n_layers, representation=self.representation_,
                                         emb_dim=self.emb_dim, lr=self.lr, weight_decay=self.weight_decay,
                                         epochs=self.epochs, batch_size=self.batch_size, loss=self.loss,
                                         random_state=seed * 1000 + member)
            self.models_.append(model.fit(X, y, rows_d, samples=samples))
        return self

    def _reference_latencies(self, series: pd.Series, device: str) -> np.ndarray:
        lat = series.reindex(self.references_).to_numpy(np.float64)
        if np.isnan(lat).any():
            raise ValueError(f"device {device!r} has no latency for some of the {len(self.references_)} "
                             "reference architectures of the sample representation")
        return lat

    # -- choose / adapt / predict ------------------------------------------------------------
    def choose(self, k, candidates, rng):
        if self.representation_ != "sample":
            return super().choose(k, candidates, rng)
        from predictors.help import choose_with_references

        return choose_with_references(self.references_, k, candidates, rng)

    def _adapt(self, archs, y, device):
        device = device or "new_device"
        X = self.encoder_.transform(archs)
        if self.init == "eq1" and self.representation_ == "embedding":
            self.source_device_, self.source_rho_ = best_correlated(self.tables_, archs, y)
        else:
            self.source_device_, self.source_rho_ = None, float("nan")
        sample = None
        if self.representation_ == "sample":
            known = dict(zip(archs, y))
            missing = [a for a in self.references_ if a not in known]
            if missing:
                raise UnusableMeasurementsError(
                    f"the sample representation needs the new device's latency on its {len(self.references_)} "
                    f"reference archs; {len(missing)} are not measured (use choose() to pick the k archs)")
            sample = np.array([known[a] for a in self.references_])
        name = device if device not in self.tables_ else f"{device} (new)"
        seed = 0 if self.random_state is None else int(self.random_state)
        self.models_ = [m.adapt(X, y, name, init_from=self.source_device_, sample=sample,
                                epochs=self.transfer_epochs, lr=self.transfer_lr, random_state=seed + i)
                        for i, m in enumerate(self.models_)]
        self.device_ = name

    def _predict(self, archs):
        X = self.encoder_.transform(archs)
        z = np.mean([m.predict(X, self.device_, standardised=True) for m in self.models_], axis=0)
        mean, std = self.models_[0].scale_[self.device_]
        return np.exp(z * std + mean)


class TLZCPVecET(TransferLearning):
    """TL ZCPVec ET (needs ``proxy_table``)."""

    name = "tl_zcpvec_et"
    default_encoding = "zcpvec"


class TLHWLVecET(TransferLearning):
    """TL HWLVec ET (HWL reference devices: the train devices)."""

    name = "tl_hwlvec_et"
    default_encoding = "hwlvec"


class TLIndex(TransferLearning):
    """TL Vec with the binary device index instead of an embedding table."""

    name = "tl_index"
    default_representation = "index"


class TLSample(TransferLearning):
    """TL Vec with HELP's 10 reference latencies as the device representation (they count in k)."""

    name = "tl_sample"
    default_representation = "sample"


__all__ = ["ENCODINGS", "TLHWLVecET", "TLIndex", "TLSample", "TLZCPVecET", "TransferLearning"]
