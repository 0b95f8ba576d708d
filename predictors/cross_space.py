"""Cross-space latency transfer through the HWL encoding (paper section 4, Fig. 7; Eq. 3).

An architecture of either space is encoded by its latencies on reference devices that both
spaces' tables have (HWL: log-latency, min-max scaled within each space). For a target device,
an MLP is pretrained on 15 % of the *source* space's architectures (HWL -> the device's
latency there), then fine-tuned with k measurements of the device on the *target* space and
compared with the same MLP trained from scratch on those k (HWL scratch) and with a Vec MLP
from scratch. Score: Spearman rho over every other target-space architecture.

Shared device names: those present in both tables. GPU columns carry their batch size
(NB201 ``_256``, FBNet ``_64``), so those are different devices and never shared; the target
device is always left out of its own reference set.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UserError
from predictors import data
from predictors.accuracy import finetune_mlp, fit_mlp, make_mlp
from predictors.protocol import sample_counts, spearman
from spaces import get_space

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = (4, 10, 20, 50)
METHODS = ("hwl_transfer", "hwl_scratch", "vec_scratch")


def shared_devices(source: pd.DataFrame, target: pd.DataFrame) -> list[str]:
    """Device names present in both latency tables, sorted."""
    return sorted(set(data.devices_of(source)) & set(data.devices_of(target)))


def hwl_matrix(table: pd.DataFrame, devices) -> pd.DataFrame:
    """Architectures x reference devices: log-latency min-max scaled within this table's space;
    only architectures every reference device measured."""
    wide = table.pivot_table(index="arch", columns="device", values="latency_ms", observed=True)[list(devices)]
    wide = np.log(wide.dropna())
    span = (wide.max() - wide.min()).replace(0.0, 1.0)
    return (wide - wide.min()) / span


def _standardise(y: np.ndarray) -> np.ndarray:
    std = y.std()
    return (y - y.mean()) / (std if std > 0 else 1.0)


def transfer_device(source: pd.DataFrame, target: pd.DataFrame, device: str, *, source_space: str,
                    target_space: str, samples=DEFAULT_SAMPLES, trials: int = 3, pretrain_fraction: float = 0.15,
                    epochs: int = 250, transfer_epochs: int = 50, first_seed: int = 0,
                    methods=METHODS) -> list[dict]:
    """Rho per (method, k) for one device, mean over ``trials`` seeds.

    Raises
    ------
    UserError
        The device is not in both tables, too few shared reference devices, or k too large.
    """
    shared = shared_devices(source, target)
    if device not in shared:
        raise UserError(f"device {device!r} is not in both tables; shared devices: {', '.join(shared)}")
    refs = [d for d in shared if d != device]
    if len(refs) < 1:
        raise UserError("cross-space transfer needs at least one other shared reference device")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")
    src_x = hwl_matrix(source, refs)
    tgt_x = hwl_matrix(target, refs)
    src_y = data.by_device(source, [device])[device].reindex(src_x.index).dropna()
    tgt_y = data.by_device(target, [device])[device].reindex(tgt_x.index).dropna()
    src_x, tgt_x = src_x.loc[src_y.index], tgt_x.loc[tgt_y.index]
    samples = sample_counts(samples)
    if not samples or samples[0] < 2:  # k=0 was sklearn's batch_size error; k=1 standardises to a constant
        raise UserError(f"every k must be at least 2, got {', '.join(map(str, samples)) or 'none'}")
    if samples[-1] >= len(tgt_y) - 1:
        raise UserError(f"k={samples[-1]} leaves too few {target_space} architectures to score")
    if trials < 1:
        raise UserError(f"trials must be at least 1, got {trials}")
    n_pre = max(2, int(round(pretrain_fraction * len(src_y))))
    tgt_vec = get_space(target_space).vec_encoding(list(tgt_y.index)) if "vec_scratch" in methods else None
    scores = {(m, k): [] for m in methods for k in samples}
    for seed in range(first_seed, first_seed + trials):
        rng = np.random.default_rng([seed, 0xC5])
        pre = np.sort(rng.choice(len(src_y), size=n_pre, replace=False))
        pretrained = None
        if "hwl_transfer" in methods:
            pretrained = fit_mlp(make_mlp(n_samples=n_pre, lr=4e-4, epochs=epochs, random_state=seed),
                                 src_x.to_numpy()[pre], _standardise(np.log(src_y.to_numpy()[pre])))
        for k in samples:
            chosen = np.sort(np.random.default_rng([seed, k, 0x7A]).choice(len(tgt_y), size=k, replace=False))
            rest = np.setdiff1d(np.arange(len(tgt_y)), chosen)
            y_k = _standardise(np.log(tgt_y.to_numpy()[chosen]))
            truth = tgt_y.to_numpy()[rest]
            for method in methods:
                if method == "hwl_transfer":
                    mlp = finetune_mlp(copy.deepcopy(pretrained), tgt_x.to_numpy()[chosen], y_k, lr=1e-3,
                                       epochs=transfer_epochs)
                    pred = mlp.predict(tgt_x.to_numpy()[rest])
                elif method == "hwl_scratch":
                    mlp = fit_mlp(make_mlp(n_samples=k, lr=4e-3, epochs=epochs, random_state=seed),
                                  tgt_x.to_numpy()[chosen], y_k)
                    pred = mlp.predict(tgt_x.to_numpy()[rest])
                else:
                    mlp = fit_mlp(make_mlp(n_samples=k, lr=4e-3, epochs=epochs, random_state=seed),
                                  tgt_vec[chosen], y_k)
                    pred = mlp.predict(tgt_vec[rest])
                scores[(method, k)].append(spearman(pred, truth))
    return [{"source": source_space, "target": target_space, "device": device, "method": m, "k": k,
             "trials": trials, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
             "n_pretrain": n_pre, "n_references": len(refs), "n_scored": len(tgt_y) - k}
            for (m, k), v in scores.items()]


def cross_space(source_space: str, target_space: str, *, devices=None, source_table=None, target_table=None,
                **kwargs) -> list[dict]:
    """:func:`transfer_device` for every shared device (or ``devices``); HELP tables by default."""
    source = data.help_table(source_space) if source_table is None else source_table
    target = data.help_table(target_space) if target_table is None else target_table
    shared = shared_devices(source, target)
    devices = shared if devices is None else list(devices)
    results = []
    for device in devices:
        start = time.perf_counter()
        results += transfer_device(source, target, device, source_space=source_space, target_space=target_space,
                                   **kwargs)
        log.info("%s -> %s %s: %.1f s", source_space, target_space, device, time.perf_counter() - start)
    return results


def summarise(results: list[dict]) -> pd.DataFrame:
    """Mean rho over devices per (source, target, method, k)."""
    frame = pd.DataFrame(results)
    return (frame.groupby(["source", "target", "method", "k"], as_index=False)
            .agg(mean=("mean", "mean"), devices=("device", "nunique")))


def plot_rho_vs_samples(results: list[dict], path) -> Path:
    """One panel per direction, one line per method (mean over devices), saved with Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from predictors.plots import save_figure

    summary = summarise(results)
    pairs = list(summary[["source", "target"]].drop_duplicates().itertuples(index=False))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.4), squeeze=False, sharey=True)
    for ax, (src, tgt) in zip(axes[0], pairs):
        rows = summary[(summary["source"] == src) & (summary["target"] == tgt)]
        for method, lines in rows.groupby("method", sort=False):
            ax.plot(lines["k"], lines["mean"], marker="o", label=method)
        ax.set_title(f"{src} -> {tgt} ({rows['devices'].max()} devices)")
        ax.set_xlabel("target-space samples per device")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted(rows["k"].unique()), labels=[str(k) for k in sorted(rows["k"].unique())])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Spearman rho")
    axes[0][-1].legend(fontsize="small", loc="lower right")
    return save_figure(fig, path)


__all__ = ["DEFAULT_SAMPLES", "METHODS", "cross_space", "hwl_matrix", "plot_rho_vs_samples", "shared_devices",
           "summarise", "transfer_device"]
