"""Figures: Spearman rho against k per task and method; device correlation heatmap (Agg)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_rho_vs_k(results: list[dict], path) -> Path:
    """One panel per task, one line per method (mean +- std over trials), saved to ``path``."""
    if not results:
        raise ValueError("no results to plot")
    frame = pd.DataFrame(results)
    tasks = list(pd.unique(frame["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        rows = frame[frame["task"] == task]
        for method, lines in rows.groupby("method", sort=False):
            lines = lines.sort_values("k")
            ax.errorbar(lines["k"], lines["mean"], yerr=lines["std"], marker="o", capsize=3, label=method)
        ax.set_title(task)
        ax.set_xlabel("k (target measurements)")
        ax.set_xticks(sorted(rows["k"].unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Spearman rho (strict protocol)")
    axes[0][-1].legend(fontsize="small", loc="lower right")
    return save_figure(fig, path)


def device_correlation(table: pd.DataFrame, devices=None) -> pd.DataFrame:
    """Spearman rho between devices over the architectures both measured."""
    wide = table.pivot_table(index="arch", columns="device", values="latency_ms", observed=True)
    if devices is not None:
        wide = wide[list(devices)]
    return wide.corr(method="spearman", min_periods=3)


def plot_device_heatmap(table: pd.DataFrame, path, devices=None) -> Path:
    """Heatmap of :func:`device_correlation`, saved to ``path``."""
    corr = device_correlation(table, devices)
    n = len(corr)
    fig, ax = plt.subplots(figsize=(1.0 + 0.32 * n, 0.6 + 0.3 * n))
    image = ax.imshow(corr.to_numpy(), vmin=np.nanmin([0.0, np.nanmin(corr.to_numpy())]), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(n), corr.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(n), corr.index, fontsize=7)
    fig.colorbar(image, ax=ax, label="Spearman rho")
    return save_figure(fig, path)


def save_figure(fig, path) -> Path:
    """Write ``fig`` to ``path`` (folders made as needed), close it, return the path."""
    from harness.paths import written_whole  # a killed run leaves no half figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with written_whole(path) as target:  # the suffix is kept: savefig infers the format from it
        fig.savefig(target, dpi=120)
    plt.close(fig)
    return path


__all__ = ["device_correlation", "plot_device_heatmap", "plot_rho_vs_k", "save_figure"]
