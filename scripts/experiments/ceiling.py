#!/usr/bin/env python
"""How far can a linear model on our features go with a device's WHOLE table? An upper reference.

For every test device of a task, a ridge regression (alpha by internal cross-validation) on
the device's own log-latencies is scored by 5-fold cross-validation: Spearman rho on the held
fifth, thousands of training measurements instead of k. Three feature sets, the ones phys_bayes
has: ``vec+phys`` (Vec one-hot and log physical costs), ``+lat`` (also the task's train devices'
log-latencies), ``lat`` (those alone).

This reads test devices' tables, so it is a reference for reporting only, never for choosing a
method or a setting. It answers: is a few-shot shortfall the few shots, or the features and the
device's own label noise (phones timed in whole milliseconds)?

    scripts/experiments/ceiling.py [--tasks N0,F0,...] [--json bench_results/ceiling.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.linear_model import RidgeCV  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402

from predictors import data, tasks  # noqa: E402
from predictors.phys_features import phys_features  # noqa: E402
from scripts._bench_json import output_path, write_json  # noqa: E402
from spaces import get_space  # noqa: E402

FEATURE_SETS = ("vec+phys", "+lat", "lat")
ALPHAS = np.logspace(-3, 3, 13)
MIN_MS = 1e-3  # HW-NAS-Bench reports ~0 ms for some degenerate NB201 cells


def cv_rho(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Mean Spearman rho of a ridge fit on the held-out fold, over ``folds`` folds."""
    rhos = []
    for fit_rows, held in KFold(folds, shuffle=True, random_state=seed).split(x):
        model = RidgeCV(alphas=ALPHAS).fit(x[fit_rows], y[fit_rows])
        rhos.append(spearmanr(model.predict(x[held]), y[held])[0])
    return float(np.mean(rhos))


def task_ceiling(task) -> dict[str, dict[str, float]]:
    """{device: {feature set: rho}} for every test device of ``task``."""
    tables = data.by_device(data.help_table(task.space))
    space = get_space(task.space)
    out = {}
    for device in task.test_devices:
        keys = list(tables[device].index)
        y = np.log(np.maximum(tables[device].to_numpy(dtype=np.float64), MIN_MS))
        lat = np.column_stack([np.log(np.maximum(tables[d].loc[keys].to_numpy(dtype=np.float64), MIN_MS))
                               for d in task.train_devices])
        own = [np.asarray(space.vec_encoding(keys), dtype=np.float64), np.log(phys_features(task.space, keys) + 1e-6)]
        sets = {"vec+phys": np.hstack(own), "+lat": np.hstack(own + [lat]), "lat": lat}
        out[device] = {name: cv_rho(x, y) for name, x in sets.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(tasks.TASKS))
    ap.add_argument("--json", type=output_path, help="also write the results here (checked before the run)")
    args = ap.parse_args(argv)
    table = Table(title="ridge on the whole table (5-fold CV), mean rho over test devices")
    for col in ("task", *FEATURE_SETS, "per device (+lat)"):
        table.add_column(col)
    results = {}
    for name in args.tasks.split(","):
        per_device = task_ceiling(tasks.TASKS[name])
        results[name] = per_device
        means = [np.mean([v[s] for v in per_device.values()]) for s in FEATURE_SETS]
        table.add_row(name, *(f"{m:.3f}" for m in means),
                      " ".join(f"{d} {v['+lat']:.3f}" for d, v in per_device.items()))
    Console().print(table)
    if args.json:
        write_json(args.json, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
