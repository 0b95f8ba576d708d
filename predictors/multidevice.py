"""Multi-device latency predictor ``f(x, h)`` (Multi-Predict, Sec. 3.1) and its few-shot adaptation.

:class:`MultiDevicePredictor` is fitted on (encoding, device, latency) rows of several devices.
Each device's log-latencies are standardised on their own (devices differ by orders of
magnitude; only the shape of a table is shared). A new device is added by
:meth:`MultiDevicePredictor.adapt`, which returns a *new* estimator (deep copy; the fitted one
is never touched) with

- Eq. 1: for the embedding table, a new row copied from the train device whose latencies on
  the k measured archs are best Spearman-correlated with the new device's (``init_from``);
  for ``index`` the next free index; for ``sample`` the new device's reference latencies;
- Eq. 2: fine-tuning of the whole network on the k samples (paper: 50 epochs, lr 1e-3).
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from sklearn.base import BaseEstimator

from predictors.base import NotFittedError
from predictors.mlp import check_xy, loss_fn, train
from predictors.nets import DEVICE_REPRESENTATIONS, DeviceConditionedNet

log = logging.getLogger(__name__)


def _forward(net, x, device, sample=None):
    return net(x, device, sample)


class MultiDevicePredictor(BaseEstimator):
    """Device-conditioned MLP regressor of standardised log-latency.

    Parameters
    ----------
    hidden, n_layers : int
        MLP width and depth (paper: 128, 4).
    representation : {"embedding", "index", "sample"}
        Device representation (paper: ET = embedding).
    emb_dim : int
        Embedding width (paper: 8).
    lr, weight_decay, epochs, batch_size : float / int
        Pretraining (paper, latency: 4e-4, 5e-4, 250, 128; AdamW, cosine).
    loss : {"mse", "l1", "rank"}
    random_state : int, optional

    Attributes
    ----------
    net_ : predictors.nets.DeviceConditionedNet
    devices_ : list of str
        Device names, in embedding-row order (adapted devices appended).
    scale_ : dict
        Device -> (mean, std) of its log-latency.
    samples_ : dict
        Device -> standardised reference latencies (``sample`` representation only).
    x_mean_, x_scale_ : ndarray
    loss_curve_ : list of float
    """

    def __init__(self, hidden: int = 128, *, n_layers: int = 4, representation: str = "embedding", emb_dim: int = 8,
                 lr: float = 4e-4, weight_decay: float = 5e-4, epochs: int = 250, batch_size: int = 128,
                 loss: str = "mse", random_state=None):
        self.hidden = hidden
        self.n_layers = n_layers
        self.representation = representation
        self.emb_dim = emb_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.loss = loss
        self.random_state = random_state

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, X, y, devices, samples: dict | None = None):
        """Fit on rows of several devices.

        Parameters
        ----------
        X : (n, d) array
            Encodings.
        y : (n,) array
            Latencies (ms, positive).
        devices : (n,) sequence of str
            The device of each row.
        samples : dict, optional
            Device -> reference latencies (ms), required for ``representation="sample"``.
        """
        X, y = check_xy(X, y)
        devices = np.asarray(devices, dtype=object)
        if len(devices) != len(y):
            raise ValueError(f"devices has {len(devices)} entries for {len(y)} rows")
        if self.representation not in DEVICE_REPRESENTATIONS:
            raise ValueError(f"unknown device representation {self.representation!r}; "
                             f"valid: {', '.join(DEVICE_REPRESENTATIONS)}")
        loss_fn(self.loss)
        if np.any(y <= 0):
            raise ValueError("latencies must be positive")
        names = list(dict.fromkeys(devices.tolist()))
        if self.representation == "sample":
            missing = [d for d in names if samples is None or d not in samples]
            if missing:
                raise ValueError(f"the sample representation needs reference latencies for {missing}")
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)
        self.devices_ = names
        self.scale_ = {}
        t = np.log(y)
        for d in names:
            v = t[devices == d]
            self.scale_[d] = (float(v.mean()), float(v.std()) if v.std() > 0 else 1.0)
        self.samples_ = {d: self._standard_sample(samples[d]) for d in names} if self.representation == "sample" else {}
        self.x_mean_ = X.mean(0)
        self.x_scale_ = np.where(X.std(0) > 0, X.std(0), 1.0).astype(np.float32)
        ref_dim = len(next(iter(self.samples_.values()))) if self.samples_ else 10
        self.net_ = DeviceConditionedNet(X.shape[1], len(names), self.representation, emb_dim=self.emb_dim,
                                         sample_dim=ref_dim, hidden=self.hidden, n_layers=self.n_layers)
        self.n_features_in_ = X.shape[1]
        dev_idx = np.array([names.index(d) for d in devices])
        inputs = self._inputs(X, dev_idx)
        target = torch.from_numpy(np.array([(v - self.scale_[d][0]) / self.scale_[d][1]
                                            for v, d in zip(t, devices)], dtype=np.float32))
        gen = torch.Generator().manual_seed(seed)
        self.loss_curve_ = train(self.net_, _forward, inputs, target, loss=self.loss, lr=self.lr, epochs=self.epochs,
                                 batch_size=self.batch_size, weight_decay=self.weight_decay, generator=gen)
        return self

    @staticmethod
    def _standard_sample(lat) -> np.ndarray:
        v = np.log(np.asarray(lat, dtype=np.float64))
        return ((v - v.mean()) / (v.std() if v.std() > 0 else 1.0)).astype(np.float32)

    def _inputs(self, X, dev_idx) -> list[torch.Tensor]:
        xs = torch.from_numpy((np.asarray(X, np.float32) - self.x_mean_) / self.x_scale_)
        dev = torch.as_tensor(np.asarray(dev_idx), dtype=torch.long)
        if self.representation != "sample":
            return [xs, dev]
        smp = torch.from_numpy(np.stack([self.samples_[self.devices_[i]] for i in np.asarray(dev_idx)]))
        return [xs, dev, smp]

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y, devices) first")

    def _device_index(self, device: str) -> int:
        if device not in self.devices_:
            raise ValueError(f"unknown device {device!r}; known devices: {', '.join(self.devices_)} "
                             "(add a new one with adapt)")
        return self.devices_.index(device)

    # -- predict -----------------------------------------------------------------------------
    def predict(self, X, device: str, *, standardised: bool = False) -> np.ndarray:
        """Latency (ms) of each row on ``device``; ``standardised=True`` gives the model's scale."""
        self._check_fitted()
        X = check_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} columns; the predictor was fitted on {self.n_features_in_}")
        i = self._device_index(device)
        with torch.no_grad():
            z = self.net_(*self._inputs(X, np.full(len(X), i))).numpy().astype(np.float64)
        if standardised:
            return z
        mean, std = self.scale_[device]
        return np.exp(z * std + mean)

    # -- adapt (Eq. 1 + Eq. 2) ---------------------------------------------------------------
    def adapt(self, X, y, device: str, *, init_from: str | None = None, sample=None, epochs: int = 50,
              lr: float = 1e-3, batch_size: int | None = None, random_state=None) -> "MultiDevicePredictor":
        """A new predictor that also knows ``device``, fine-tuned on its k samples (Eq. 2).

        Parameters
        ----------
        X, y : the k measured encodings and latencies (ms).
        device : str
            Name of the new device (must not be known yet).
        init_from : str, optional
            Train device whose embedding row the new row copies (Eq. 1); default: mean row.
        sample : array, optional
            The new device's reference latencies (``sample`` representation).
        epochs, lr : fine-tuning length and learning rate (paper: 50, 1e-3).
        """
        self._check_fitted()
        X, y = check_xy(X, y)
        if device in self.devices_:
            raise ValueError(f"device {device!r} is already known; adapt adds a new device")
        if np.any(y <= 0):
            raise ValueError("latencies must be positive")
        new = copy.deepcopy(self)
        source = None if init_from is None else new._device_index(init_from)
        if new.representation == "sample":
            if sample is None:
                raise ValueError("the sample representation needs the new device's reference latencies (sample=...)")
            new.samples_[device] = new._standard_sample(sample)
        new.net_.add_device(source)
        new.devices_.append(device)
        t = np.log(y)
        new.scale_[device] = (float(t.mean()), float(t.std()) if len(t) > 1 and t.std() > 0 else 1.0)
        target = torch.from_numpy(((t - new.scale_[device][0]) / new.scale_[device][1]).astype(np.float32))
        seed = 0 if random_state is None else int(random_state)
        gen = torch.Generator().manual_seed(seed)
        inputs = new._inputs(X, np.full(len(X), len(new.devices_) - 1))
        new.finetune_curve_ = train(new.net_, _forward, inputs, target, loss=new.loss, lr=lr, epochs=epochs,
                                    batch_size=batch_size or new.batch_size, weight_decay=new.weight_decay,
                                    generator=gen)
        return new


__all__ = ["MultiDevicePredictor"]
