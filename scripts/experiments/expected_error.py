#!/usr/bin/env python
"""Candidates for the onboarding report's expected error of one predicted latency (research, not the product).

Replays the loop's defaults as ``scripts/bench_onboard_uncertainty`` does (its ``held_out_cases``) and, after n
of ``--checkpoints`` measurements, sets the real RMS log error of the unmeasured archs beside:

- ``column``: the report's number (RMS over the pool of the table's ``uncertainty``), and its parts: the spread
  of the mean alone, the fitted noise alone, the noise of the most probable grid point instead of the average;
- ``loo``: the RMS log error of the measured archs, each predicted by the model fitted on the others (closed
  form per grid point, the grid's weights as fitted on all), ``loo_z``: the RMS of those residuals over the
  spread the model gave them (1: the model's spread is honest on its own measurements);
- the noise grid's posterior (mass on each level).

Prints, per n, the mean of each over the replayed devices, the geometric mean of its ratio to the real error and
the share of devices it is within a factor 2 of it (``--summary FILE`` reads a JSON this wrote instead of replaying).

    scripts/experiments/expected_error.py --mode train --holdouts 2 [--tasks N0] [--checkpoints 5,10,20] --json F
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from predictors import registry, tasks  # noqa: E402
from predictors.onboard import OnboardLoop, OnboardSettings, loop_ks, prepare_method, posterior  # noqa: E402
from predictors.onboard.replay import TableDevice  # noqa: E402
from scripts._bench_json import output_path, write_json  # noqa: E402



def _bench_module():
    """``scripts/bench_onboard_uncertainty`` (a script without .py) as a module: its replay cases are reused."""
    loader = importlib.machinery.SourceFileLoader("bench_onboard_uncertainty",
                                                  str(ROOT / "scripts" / "bench_onboard_uncertainty"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


BENCH = _bench_module()


def rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def log_rms_of_var(var_log) -> float:
    """RMS log error of log-normals with these variances (as ``expected_log_error``)."""
    return float(np.sqrt(np.mean(np.log1p(var_log))))


def loo_parts(post, archs, latency_ms) -> tuple[np.ndarray, np.ndarray]:
    """(log-ms LOO errors of the measured archs, their standardised LOO residuals z under the BMA)."""
    diag = np.diagonal(post.kinv, axis1=1, axis2=2)                                      # (C, k)
    point_r = post.alpha / diag                                                          # standardised residuals
    point_v = 1.0 / diag                                                                 # LOO predictive variance
    r = post.prob @ point_r
    v = post.prob @ point_v + post.prob @ (point_r - r) ** 2
    resp = post.method.to_response(latency_ms)
    loo_ms = post.method.from_response(resp - post.y_std * r)
    return np.log(latency_ms) - np.log(loo_ms), r / np.sqrt(v)


def candidates(loop: OnboardLoop) -> dict:
    """Every candidate expected error of this round (pool rows, as the report's)."""
    post = loop.posterior
    archs = sorted(loop.measured, key=str)
    y = np.array([loop.measured[a] for a in archs])
    feats = loop._pool_feats
    mean, var = post.mean_var(feats=feats)
    slope2 = post.method.log_ms_slope(mean) ** 2
    tails = posterior.measured_noise_factor(post, y)
    noise = post.noise_var(mean) * tails
    map_noise = noise * post.noise[int(np.argmax(post.prob))] / float(post.prob @ post.noise)
    loo_err, z = loo_parts(post, archs, y)
    point_mean, point_var = post.point_mean_var(feats)                                   # (C, m) standardised
    point_noise = post.noise[:, None] * post.method.noise_sd_factor(mean)[None] ** 2 * tails
    point_total = post.y_std ** 2 * (point_var + point_noise) * slope2[None]
    best = int(np.argmax(post.prob))
    levels = {f"{lv:g}": float(post.prob[post.noise == lv].sum()) for lv in np.unique(post.noise)}
    return {"column": float(loop.estimate.residual_rms), "mean_only": log_rms_of_var(var * slope2),
            "noise_only": log_rms_of_var(noise * slope2), "map_noise": log_rms_of_var((var + map_noise) * slope2),
            "loo": rms(loo_err),
            "map_point": log_rms_of_var(point_total[best]),
            "geo": log_rms_of_var(np.exp(post.prob @ np.log(point_total + 1e-300))), "loo_z": rms(z), "tails": tails, "noise_mass": levels}


def replay(task, args, console) -> list[dict]:
    checkpoints = {int(k) for k in args.checkpoints.split(",")}
    rows = []
    for seed in range(args.trials):
        for pre, tables, targets in BENCH.held_out_cases(task, args.mode, seed, args.holdouts):
            settings = OnboardSettings(budget=args.budget, seed=seed)
            method = prepare_method(registry.get_method(registry.RECOMMENDED, random_state=seed), loop_ks(settings))
            method.pretrain(task.space, pre)
            for device, truth in targets.items():
                start = time.perf_counter()
                found = []

                def on_step(loop, step, truth=truth, found=found):
                    if step.n_measured in checkpoints:
                        rest = loop.unmeasured()
                        err = np.log(truth.loc[rest].to_numpy(dtype=np.float64)) - np.log(loop.adapted.predict(rest))
                        found.append({"n": step.n_measured, "real": rms(err), **candidates(loop)})

                OnboardLoop(method, task.space, list(truth.index), TableDevice(truth), settings, tables=tables,
                            device=str(device), on_step=on_step).run()
                rows += [{"task": task.name, "device": str(device), "seed": seed, **r} for r in found]
                console(f"{task.name} {device}: " + " ".join(
                    f"n={r['n']} real {r['real']:.3f} col {r['column']:.3f} loo {r['loo']:.3f} z {r['loo_z']:.2f}"
                    for r in found) + f" ({time.perf_counter() - start:.0f} s)")
    return rows


def derived(row: dict) -> dict:
    """Each candidate of a round, the combinations of its parts included."""
    out = {k: row[k] for k in ("column", "mean_only", "noise_only", "map_noise", "map_point", "geo", "loo") if k in row}
    out["min(column, loo)"] = min(row["column"], row["loo"])
    out["column x loo_z"] = row["column"] * row["loo_z"]
    return out


def summarise(rows) -> None:
    for n in sorted({r["n"] for r in rows}):
        mine = [r for r in rows if r["n"] == n]
        real = np.array([r["real"] for r in mine])
        print(f"n = {n} ({len(mine)} devices): real RMS log error {real.mean():.3f}")
        for name in derived(mine[0]):
            est = np.array([derived(r)[name] for r in mine])
            within = np.mean((est >= real / 2) & (est <= 2 * real))
            print(f"  {name:18} {est.mean():.3f}  ratio (geometric mean) {np.exp(np.mean(np.log(est / real))):.2f}"
                  f"  within x2 {100 * within:.0f} %")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(tasks.TASKS))
    parser.add_argument("--mode", choices=["test", "train", "family"], default="train")
    parser.add_argument("--holdouts", type=int)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--checkpoints", default="5,10,20")
    parser.add_argument("--json", type=output_path, help="also write the results here (checked before the run)")
    parser.add_argument("--summary", help="summarise this JSON of an earlier run, replay nothing")
    args = parser.parse_args(argv)
    if args.summary:
        summarise(json.loads(Path(args.summary).read_text())["rounds"])
        return 0
    rows = []
    for name in (t.strip().upper() for t in args.tasks.split(",") if t.strip()):
        rows += replay(tasks.get_task(name), args, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        write_json(args.json, {"settings": vars(args), "rounds": rows}, indent=1)
    summarise(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
