"""The predictor step of the demo: a device measured a moment ago, predicted from 10 samples.

Pretrains the recommended method and the copy and HWL-ridge baselines on the public NB201
tables shipped with hwl (task N0's train devices, 900 seeded architectures each), adapts each to
one local device with 10 of the latencies the campaign just measured, and scores Spearman rho
on the rest of that device's measurements (none of which the methods saw).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from rich.table import Table

from predictors import data, registry
from predictors.protocol import pretrain_sample, spearman
from predictors.tasks import get_task

BASELINES = ("copy", "hwl_ridge")


def few_shot_table(measured: pd.Series, device: str, *, k: int = 10, seed: int = 0) -> Table:
    """Rho on ``measured`` (latency_ms indexed by NB201 index) minus ``k`` adaptation samples."""
    measured = measured.dropna()
    if len(measured) < k + 3:
        raise ValueError(f"{device} has {len(measured)} measurements; the demo needs at least {k + 3}")
    task = get_task("N0")
    train = pretrain_sample(data.by_device(data.help_table("nb201"), task.train_devices), 900, seed)
    rng = np.random.default_rng(seed)
    shots = sorted(rng.choice(measured.index.to_numpy(), size=k, replace=False).tolist())
    rest = measured.drop(index=shots)
    table = Table(title=f"{device}: adapted with {k} of its measurements, rho on the other {len(rest)}")
    for col in ("method", "Spearman rho", "seconds"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for name in (registry.RECOMMENDED, *BASELINES):
        start = time.perf_counter()
        method = registry.get_method(name)
        if "random_state" in method.get_params():
            method.set_params(random_state=seed)
        adapted = method.pretrain("nb201", train).adapt(shots, measured.loc[shots].to_numpy(), device)
        rho = spearman(adapted.predict(list(rest.index)), rest.to_numpy())
        label = f"{name} (recommended)" if name == registry.RECOMMENDED else name
        table.add_row(label, f"{rho:.3f}", f"{time.perf_counter() - start:.1f}")
    return table
