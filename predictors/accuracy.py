"""Few-shot accuracy predictors on NB201 (Vec, ZCP, ZCPVec encodings) and transfer across tasks.

The strict protocol of ``predictor-protocol.md`` with accuracy in place of latency: a "device"
is a dataset (cifar10, cifar100, ImageNet16-120), its "table" the test accuracy of the
architectures of the pool. Two methods in the few-shot contract (``predictors.base``):

- :class:`AccuracyScratch`: an MLP trained from scratch on the k samples of the task
  (paper section 5, "few shot accuracy prediction from scratch");
- :class:`AccuracyTransfer`: an MLP pretrained on other tasks' accuracies (15 % of the
  architectures), then fine-tuned on the k samples of the new task (paper Eq. 3, Table 14).

Both wrap :class:`AccuracyMLP`, an encoder (Vec / ZCP / ZCPVec) followed by scikit-learn's
``MLPRegressor`` (4 layers of width 128, Adam with L2 5e-4; Adam stands in for the paper's AdamW
and there is no cosine schedule). Targets are standardised per task, so transfer learns the
ranking, not the scale. The accuracy table is research data (NATS-Bench values) and not shipped:
pass its path (``../shared/data/nb201_accuracy.csv`` works).
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from harness.errors import UserError
from harness.paths import why_not_a_file
from predictors.base import FewShotMethod, space_keys
from predictors.encodings import VecEncoder, ZCPEncoder, zcp_vec
from predictors.protocol import MIN_SCORED, sample_counts, score_device
from spaces import get_space

log = logging.getLogger(__name__)

ACCURACY_COLUMNS = {"cifar10": "cifar10_test_acc", "cifar100": "cifar100_test_acc",
                    "ImageNet16-120": "imagenet16_120_test_acc"}
ENCODINGS = ("vec", "zcp", "zcpvec")
DEFAULT_SAMPLES = (10, 20, 50, 100)


class AccuracyTableError(UserError):
    """An accuracy table that is missing or lacks the needed columns."""


def read_accuracy_table(path) -> pd.DataFrame:
    """NB201 test accuracies (%) indexed by arch index, one column per dataset.

    Reads the NATS-Bench CSV layout of ``../shared/data/nb201_accuracy.csv`` (``arch_index`` or
    ``arch_str`` plus ``cifar10_test_acc``, ``cifar100_test_acc``, ``imagenet16_120_test_acc``);
    a file may hold only some of the datasets.
    """
    from predictors.data import numeric_columns, one_row_per_arch, paired_keys, read_frame

    path = Path(path)
    if why := why_not_a_file(path):
        raise AccuracyTableError(f"accuracy table {path} {why} (../shared/data/nb201_accuracy.csv works)")
    raw = read_frame(path, "accuracy table", AccuracyTableError)
    key = next((c for c in ("arch_index", "arch_str", "arch") if c in raw.columns), None)
    present = {ds: col for ds, col in ACCURACY_COLUMNS.items() if col in raw.columns}
    if key is None or not present:
        raise AccuracyTableError(f"accuracy table {path} needs arch_index (or arch_str) and at least one of "
                                 f"{', '.join(ACCURACY_COLUMNS.values())}; it has {', '.join(map(str, raw.columns))}")
    table = numeric_columns(raw, list(present.values()), f"accuracy table {path}", AccuracyTableError, finite=True)
    table.columns = list(present)
    table.index = pd.Index(paired_keys(raw, key, "nb201", f"accuracy table {path}", AccuracyTableError), name="arch")
    return one_row_per_arch(table, f"accuracy table {path}", "accuracies", AccuracyTableError)


def as_task_table(accuracy: pd.DataFrame, datasets=None, archs=None) -> pd.DataFrame:
    """Long (arch, device, latency_ms) table of accuracies: the shape the protocol code reads,
    a dataset playing the device and the accuracy the value."""
    datasets = list(accuracy.columns) if datasets is None else list(datasets)
    unknown = [d for d in datasets if d not in accuracy.columns]
    if unknown:
        raise AccuracyTableError(f"unknown dataset(s) {unknown}; the table has {', '.join(accuracy.columns)}")
    frame = accuracy if archs is None else accuracy.loc[list(archs)]
    long = frame[datasets].reset_index().melt(id_vars="arch", var_name="device", value_name="latency_ms")
    return long.dropna().reset_index(drop=True)


def make_encoder(encoding: str, space: str, proxies=None):
    """Unfitted encoder: ``vec``, ``zcp`` (needs ``proxies``) or ``zcpvec``."""
    if encoding == "vec":
        return VecEncoder(space)
    if encoding in ("zcp", "zcpvec"):
        if proxies is None:
            raise UserError(f"the {encoding} encoding needs proxy scores: compute them with `hwl zcp` and pass "
                            "the store or the Parquet table")
        return ZCPEncoder(proxies) if encoding == "zcp" else zcp_vec(space, proxies)
    raise UserError(f"unknown encoding {encoding!r}; valid encodings: {', '.join(ENCODINGS)}")


class AccuracyMLP(BaseEstimator, RegressorMixin):
    """Encoder + 4-layer MLP regressor of (standardised) accuracy.

    Parameters
    ----------
    encoding : {"vec", "zcp", "zcpvec"}
    proxies : pandas.DataFrame, optional
        Proxy scores indexed by arch (``predictors.zcp.proxy_frame``); needed by zcp / zcpvec.
    space : str
    hidden, n_layers : int
        Width and number of layers (hidden layers + output), paper Table 14: 128 and 4.
    lr, epochs : float, int
        Training from scratch / pretraining (paper: 4e-3, 250).
    transfer_lr, transfer_epochs : float, int
        Fine-tuning in :meth:`finetune` (paper: 4e-4, 50).
    weight_decay : float
    batch_size : int
    random_state : int, optional

    Attributes
    ----------
    encoder_ : transformer
    mlp_ : sklearn.neural_network.MLPRegressor
    y_mean_, y_scale_ : float
        Standardisation of the targets last fitted on.
    """

    def __init__(self, encoding: str = "zcp", *, proxies=None, space: str = "nb201", hidden: int = 128,
                 n_layers: int = 4, lr: float = 4e-3, epochs: int = 250, transfer_lr: float = 4e-4,
                 transfer_epochs: int = 50, weight_decay: float = 5e-4, batch_size: int = 128, random_state=None):
        self.encoding = encoding
        self.proxies = proxies
        self.space = space
        self.hidden = hidden
        self.n_layers = n_layers
        self.lr = lr
        self.epochs = epochs
        self.transfer_lr = transfer_lr
        self.transfer_epochs = transfer_epochs
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        """Fit encoder and MLP on archs ``X`` with accuracies ``y`` (standardised per group)."""
        X = list(X)
        y = np.asarray(y, dtype=np.float64)
        if len(X) != len(y) or len(X) < 2:
            raise UserError(f"an accuracy predictor needs at least 2 (arch, accuracy) pairs, got {len(X)}/{len(y)}")
        self.encoder_ = make_encoder(self.encoding, get_space(self.space).NAME, self.proxies).fit(X)
        self.y_mean_, self.y_scale_ = _moments(y)
        ys = _standardise_groups(y, groups) if groups is not None else (y - self.y_mean_) / self.y_scale_
        self.mlp_ = make_mlp(n_samples=len(X), hidden=self.hidden, n_layers=self.n_layers, lr=self.lr,
                             epochs=self.epochs, weight_decay=self.weight_decay, batch_size=self.batch_size,
                             random_state=self.random_state)
        fit_mlp(self.mlp_, self.encoder_.transform(X), ys)
        return self

    def finetune(self, X, y) -> "AccuracyMLP":
        """A fine-tuned deep copy: same encoder, the MLP trained on (X, y) from its weights."""
        check_is_fitted(self)
        X = list(X)
        y = np.asarray(y, dtype=np.float64)
        tuned = copy.deepcopy(self)
        tuned.y_mean_, tuned.y_scale_ = _moments(y)
        finetune_mlp(tuned.mlp_, tuned.encoder_.transform(X), (y - tuned.y_mean_) / tuned.y_scale_,
                     lr=self.transfer_lr, epochs=self.transfer_epochs, batch_size=self.batch_size)
        return tuned

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.mlp_.predict(self.encoder_.transform(list(X))) * self.y_scale_ + self.y_mean_



def make_mlp(*, n_samples: int, hidden: int = 128, n_layers: int = 4, lr: float = 4e-3, epochs: int = 250,
             weight_decay: float = 5e-4, batch_size: int = 128, random_state=None) -> MLPRegressor:
    """The paper's predictor MLP (``n_layers`` layers of width ``hidden``), trained for exactly
    ``epochs`` epochs (no early stop)."""
    return MLPRegressor(hidden_layer_sizes=(int(hidden),) * (int(n_layers) - 1), learning_rate_init=lr,
                        max_iter=int(epochs), alpha=weight_decay, batch_size=min(int(batch_size), int(n_samples)),
                        tol=0.0, n_iter_no_change=int(epochs) + 1, random_state=random_state)


def fit_mlp(mlp: MLPRegressor, features: np.ndarray, y: np.ndarray) -> MLPRegressor:
    # Small matrices: BLAS threads only add synchronisation (and fight on a shared machine).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget, on purpose
        # sklearn catches a Ctrl-C (and hwl's SIGTERM, a KeyboardInterrupt) during a fit, warns and returns the
        # half-trained model, so a command went on with it; as an error, the warning brings the interrupt back.
        warnings.filterwarnings("error", message="Training interrupted by user", category=UserWarning)
        try:
            return mlp.fit(features, y)
        except UserWarning as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None
            raise


def finetune_mlp(mlp: MLPRegressor, features: np.ndarray, y: np.ndarray, *, lr: float, epochs: int,
                 batch_size: int = 128) -> MLPRegressor:
    """Continue training ``mlp`` in place from its weights (a fresh Adam state at ``lr``)."""
    mlp.set_params(warm_start=True, learning_rate_init=lr, max_iter=int(epochs), n_iter_no_change=int(epochs) + 1,
                   batch_size=min(int(batch_size), len(y)))
    return fit_mlp(mlp, features, y)


def _moments(y: np.ndarray) -> tuple[float, float]:
    std = float(np.std(y))
    return float(np.mean(y)), std if std > 0 else 1.0


def _standardise_groups(y: np.ndarray, groups) -> np.ndarray:
    groups = np.asarray(groups)
    out = np.empty_like(y)
    for g in np.unique(groups):
        mean, scale = _moments(y[groups == g])
        out[groups == g] = (y[groups == g] - mean) / scale
    return out


class AccuracyScratch(FewShotMethod):
    """Train an :class:`AccuracyMLP` from scratch on the k samples of the task (no pretraining).

    Parameters are those of :class:`AccuracyMLP`.
    """

    name = "scratch"

    def __init__(self, encoding: str = "zcp", *, proxies=None, epochs: int = 250, lr: float = 4e-3,
                 random_state=None):
        self.encoding = encoding
        self.proxies = proxies
        self.epochs = epochs
        self.lr = lr
        self.random_state = random_state

    def pretrain(self, space, train=None):
        self.space_ = get_space(space).NAME
        return self

    def _adapt(self, archs, y, device):
        self.model_ = AccuracyMLP(self.encoding, proxies=self.proxies, space=self.space_, epochs=self.epochs,
                                  lr=self.lr, random_state=self.random_state).fit(archs, y)

    def _predict(self, archs):
        return self.model_.predict(archs)


class AccuracyTransfer(FewShotMethod):
    """Pretrain an :class:`AccuracyMLP` on the train tasks, fine-tune a copy on the k samples.

    ``pretrain(space, train)`` takes dataset -> ``Series`` of accuracy indexed by arch (the
    protocol's train tables); several train tasks are standardised each and pooled.
    """

    name = "transfer"

    def __init__(self, encoding: str = "zcp", *, proxies=None, epochs: int = 250, lr: float = 4e-3,
                 transfer_epochs: int = 50, transfer_lr: float = 4e-4, random_state=None):
        self.encoding = encoding
        self.proxies = proxies
        self.epochs = epochs
        self.lr = lr
        self.transfer_epochs = transfer_epochs
        self.transfer_lr = transfer_lr
        self.random_state = random_state

    def pretrain(self, space, train):
        if not train:
            raise UserError("transfer needs at least one train task (source dataset)")
        archs, y, groups = [], [], []
        for task, series in train.items():
            archs += list(series.index)
            y.append(series.to_numpy(np.float64))
            groups += [task] * len(series)
        self.space_ = get_space(space).NAME
        self.model_ = AccuracyMLP(self.encoding, proxies=self.proxies, space=self.space_, epochs=self.epochs,
                                  lr=self.lr, transfer_epochs=self.transfer_epochs, transfer_lr=self.transfer_lr,
                                  random_state=self.random_state).fit(archs, np.concatenate(y), groups=groups)
        return self

    def _adapt(self, archs, y, device):
        self.model_ = self.model_.finetune(archs, y)

    def _predict(self, archs):
        return self.model_.predict(archs)


# The random stream of a trial's k target archs (``score_device``'s device number). Scratch and transfer share it,
# so bench_accuracy's table compares them on the same k archs of a trial (transfer drew from stream 1 until
# December 2026: each column of a row was fitted on other archs).
TARGET_DRAWS = 0


def evaluate_scratch(accuracy: pd.DataFrame, *, encoding: str, dataset: str = "cifar10", proxies=None,
                     samples=DEFAULT_SAMPLES, trials: int = 5, pool=None, epochs: int = 250,
                     first_seed: int = 0) -> list[dict]:
    """Strict protocol from scratch: per trial and k, k random archs of the pool are "trained",
    an MLP is fitted on them, and rho is taken over every other arch of the pool."""
    truth = _truth(accuracy, dataset, pool, proxies if encoding != "vec" else None)
    _check_trials(trials)
    results = []
    for k in sample_counts(samples):
        _check_k(k, len(truth))
        start = time.perf_counter()
        scores = [score_device(AccuracyScratch(encoding, proxies=proxies, epochs=epochs, random_state=seed)
                               .pretrain("nb201"), truth, k, seed=seed, device_number=TARGET_DRAWS)
                  for seed in range(first_seed, first_seed + trials)]
        results.append(_result(f"{dataset}", encoding, "scratch", k, scores, len(truth), time.perf_counter() - start))
    return results


def evaluate_transfer(accuracy: pd.DataFrame, *, encoding: str, source: str, target: str, proxies=None,
                      k: int = 10, trials: int = 5, pool=None, pretrain_fraction: float = 0.15,
                      epochs: int = 250, first_seed: int = 0) -> dict:
    """Pretrain on ``pretrain_fraction`` of the pool's archs of ``source``, fine-tune on k of
    ``target`` (drawn from the whole pool, never looking at target accuracies), rho on the rest.
    Each trial pretrains afresh with its seed; the pretrained model is never mutated."""
    if source == target:  # pretraining on the target's own accuracies would score archs the model was fitted on
        raise UserError(f"transfer needs another source task than the target {target!r}; evaluate_scratch "
                        "scores a task on its own")
    if not 0.0 < pretrain_fraction <= 1.0:
        raise UserError(f"the pretraining fraction must be in (0, 1], got {pretrain_fraction}")
    use_proxies = proxies if encoding != "vec" else None
    src = _truth(accuracy, source, pool, use_proxies)
    truth = _truth(accuracy, target, pool, use_proxies)
    _check_trials(trials)
    _check_k(int(k), len(truth))
    n = max(2, int(round(pretrain_fraction * len(src))))
    scores = []
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + trials):
        rng = np.random.default_rng([seed, 0xACC])
        picked = src.iloc[np.sort(rng.choice(len(src), size=n, replace=False))]
        method = AccuracyTransfer(encoding, proxies=proxies, epochs=epochs, random_state=seed)
        method.pretrain("nb201", {source: picked})
        scores.append(score_device(method, truth, k, seed=seed, device_number=TARGET_DRAWS))
    result = _result(f"{source}->{target}", encoding, "transfer", k, scores, len(truth), time.perf_counter() - start)
    result["n_pretrain"] = n
    return result


def _check_k(k: int, n: int) -> None:
    """k samples to fit on, and ``MIN_SCORED`` archs of the pool left for rho (as the latency protocol)."""
    if not 2 <= k <= n - MIN_SCORED:
        raise UserError(f"k={k} must be between 2 and {n - MIN_SCORED}: the pool size {n} less the {MIN_SCORED} "
                        "architectures rho needs left")


def _check_trials(trials: int) -> None:
    if trials < 1:
        raise UserError(f"trials must be at least 1, got {trials}")


def _truth(accuracy: pd.DataFrame, dataset: str, pool, proxies) -> pd.Series:
    if dataset not in accuracy.columns:
        raise AccuracyTableError(f"unknown dataset {dataset!r}; the table has {', '.join(accuracy.columns)}")
    series = accuracy[dataset].dropna()
    if pool is not None:
        series = series.reindex(space_keys("nb201", pool, "pool")).dropna()  # arch strings read as indices
    if proxies is not None:
        series = series[series.index.isin(proxies.index)]
    if len(series) < 3:
        raise AccuracyTableError(f"only {len(series)} architectures have both an accuracy and the encoding's inputs")
    series.name = dataset
    return series


def _result(task, encoding, method, k, scores, pool_size, seconds) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    return {"task": task, "encoding": encoding, "method": method, "k": int(k), "trials": len(scores),
            "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "scores": [float(s) for s in scores], "pool": int(pool_size), "seconds": round(seconds, 3)}


__all__ = ["ACCURACY_COLUMNS", "AccuracyMLP", "AccuracyScratch", "AccuracyTableError", "AccuracyTransfer",
           "DEFAULT_SAMPLES", "ENCODINGS", "as_task_table", "evaluate_scratch", "evaluate_transfer", "finetune_mlp",
           "fit_mlp", "make_encoder", "make_mlp",
           "read_accuracy_table"]
