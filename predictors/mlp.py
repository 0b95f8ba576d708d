"""MLP regressor on an architecture encoding, and the training loop the learned predictors share.

:class:`MLPPredictor` follows the scikit-learn contract: the constructor only stores its
arguments, ``fit(X, y)`` builds the network from ``random_state`` and returns ``self``,
learned state ends in ``_``, and ``predict`` before ``fit`` raises ``NotFittedError``.
Targets are modelled as standardised log-latency by default (latencies are positive and
spread over an order of magnitude); predictions come back in the units of ``y``.

Losses (``loss=``): ``"mse"``, ``"l1"`` and ``"rank"``, a pairwise logistic ranking loss over
all pairs of a batch (only the order of the targets matters, as for Spearman's rho).
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin

from predictors.base import NotFittedError
from predictors.nets import MLP

log = logging.getLogger(__name__)

LOSSES = ("mse", "l1", "rank")


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``softplus(-sign(t_i - t_j) (p_i - p_j))`` over the pairs with different targets."""
    dp = pred.unsqueeze(0) - pred.unsqueeze(1)
    sign = torch.sign(target.unsqueeze(0) - target.unsqueeze(1))
    mask = sign != 0
    if not mask.any():
        return pred.sum() * 0.0
    return torch.nn.functional.softplus(-sign[mask] * dp[mask]).mean()


def loss_fn(name: str):
    """The loss callable ``(pred, target) -> scalar`` for a name in ``LOSSES``."""
    if name == "mse":
        return torch.nn.functional.mse_loss
    if name == "l1":
        return torch.nn.functional.l1_loss
    if name == "rank":
        return pairwise_rank_loss
    raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")


@contextlib.contextmanager
def one_thread():
    """torch on one intra-op thread for the block, its setting restored after.

    The predictors' nets are small (width 128, batches of a few hundred rows): a second thread has too little work
    per step to pay for its synchronisation, and on a loaded 2-core machine it waits for a core every step (a
    pretraining step took 75 ms on two threads, 11 ms on one). The numbers differ only by float rounding.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(net: torch.nn.Module, forward, inputs: list[torch.Tensor], y: torch.Tensor, *, loss: str, lr: float,
          epochs: int, batch_size: int, weight_decay: float, generator: torch.Generator,
          params=None) -> list[float]:
    """AdamW + cosine annealing over ``epochs``; ``forward(net, *batch_inputs) -> pred``.

    ``params`` restricts what is optimised (default: every parameter). Returns the mean loss
    of each epoch.
    """
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0 (got {epochs}, {batch_size}, {lr})")
    criterion = loss_fn(loss)
    opt = torch.optim.AdamW(list(net.parameters()) if params is None else list(params), lr=lr,
                            weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    history = []
    net.train()
    with one_thread():
        for _ in range(epochs):
            history.append(_epoch(net, forward, inputs, y, criterion, opt, batch_size, generator))
            sched.step()
    net.eval()
    return history


def _epoch(net, forward, inputs, y, criterion, opt, batch_size: int, generator) -> float:
    """One pass over the rows in a random order; the mean loss."""
    n = len(y)
    order = torch.randperm(n, generator=generator)
    total = 0.0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        opt.zero_grad()
        value = criterion(forward(net, *[t[idx] for t in inputs]), y[idx])
        value.backward()
        opt.step()
        total += float(value.detach()) * len(idx)
    return total / max(n, 1)


def check_xy(X, y=None):
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"X must be a non-empty 2-D array of encodings, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    if y is None:
        return X
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} values")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite values")
    return X, y


class MLPPredictor(RegressorMixin, BaseEstimator):
    """MLP regressor on an encoding (Multi-Predict's predictor without a device input).

    Parameters
    ----------
    hidden : int
        Width of the hidden layers (paper: 128).
    n_layers : int
        Number of linear layers (paper: 4).
    lr, weight_decay : float
        AdamW settings (paper, latency: 4e-4, 5e-4).
    epochs, batch_size : int
        Training length (paper: 250 epochs, cosine schedule) and batch size (paper: 128).
    loss : {"mse", "l1", "rank"}
    log_target : bool
        Fit log(y) (positive latencies) instead of y.
    random_state : int, optional
        Seeds the weights and the batch order.

    Attributes
    ----------
    net_ : predictors.nets.MLP
    x_mean_, x_scale_ : ndarray
        Column standardisation of X.
    y_mean_, y_scale_ : float
        Standardisation of the (log) target.
    loss_curve_ : list of float

    Examples
    --------
    >>> import numpy as np
    >>> from spaces import nb201
    >>> X = nb201.vec_encoding(range(200)); y = 1 + X[:, :5].sum(1)
    >>> MLPPredictor(epochs=5, random_state=0).fit(X, y).predict(X).shape
    (200,)
    """

    def __init__(self, hidden: int = 128, *, n_layers: int = 4, lr: float = 4e-4, epochs: int = 250,
                 batch_size: int = 128, weight_decay: float = 5e-4, loss: str = "mse", log_target: bool = True,
                 random_state=None):
        self.hidden = hidden
        self.n_layers = n_layers
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.loss = loss
        self.log_target = log_target
        self.random_state = random_state

    def fit(self, X, y):
        X, y = check_xy(X, y)
        loss_fn(self.loss)  # fail before training on a bad name
        if self.log_target and np.any(y <= 0):
            raise ValueError("log_target=True needs positive targets (latencies)")
        t = np.log(y) if self.log_target else y
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)
        self.x_mean_ = X.mean(0)
        self.x_scale_ = np.where(X.std(0) > 0, X.std(0), 1.0).astype(np.float32)
        self.y_mean_ = float(t.mean())
        self.y_scale_ = float(t.std()) if t.std() > 0 else 1.0
        self.net_ = MLP(X.shape[1], self.hidden, self.n_layers)
        xs = torch.from_numpy((X - self.x_mean_) / self.x_scale_)
        ys = torch.from_numpy(((t - self.y_mean_) / self.y_scale_).astype(np.float32))
        gen = torch.Generator().manual_seed(seed)
        self.loss_curve_ = train(self.net_, lambda net, x: net(x), [xs], ys, loss=self.loss, lr=self.lr,
                                 epochs=self.epochs, batch_size=self.batch_size,
                                 weight_decay=self.weight_decay, generator=gen)
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")

    def _scaled(self, X) -> torch.Tensor:
        X = check_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} columns; the predictor was fitted on {self.n_features_in_}")
        return torch.from_numpy((X - self.x_mean_) / self.x_scale_)

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        with torch.no_grad():
            t = self.net_(self._scaled(X)).numpy().astype(np.float64) * self.y_scale_ + self.y_mean_
        return np.exp(t) if self.log_target else t

    def transform(self, X) -> np.ndarray:
        """The last hidden layer's activations (learned features of the encoding)."""
        self._check_fitted()
        with torch.no_grad():
            return self.net_.features(self._scaled(X)).numpy().astype(np.float64)


__all__ = ["LOSSES", "MLPPredictor", "loss_fn", "pairwise_rank_loss", "train"]
