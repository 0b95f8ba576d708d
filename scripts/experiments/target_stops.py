#!/usr/bin/env python
"""What a ``--target-rho`` user gets from each strategy of ``bench_onboard`` replays (research, not the product).

Reads replay JSONs (a round after every measurement: ``--checkpoints 3,4,..,10``) and prints, per
strategy: the mean true rho after n measurements (mean over tasks of each task's mean), the
estimate's error over the rounds after 5 or more, and for each target where the loop would have
stopped (``OnboardLoop._stop_reason`` before ``stop_from``: the first round at or past ``n_initial``
whose estimate reaches the target and is not ``unsure``; else the budget; the gate at 5 is the loop's
rule now, ``max(n_initial, settings.STOP_FROM)``): measurements spent, true rho there,
the share of runs that stopped early and the share of those stops whose truth was more than 0.03
below the target.

The estimate is read two ways: as recorded (the shipped calibration, fitted on the design's
rounds) and recalibrated from each round's raw estimate and bounds with a calibration fitted on
the same strategy's rounds after 5-``budget`` measurements, the round's own device left out (what a
refit, ``bench_onboard --fit-calibration``, would give it; interval widths as shipped).

    scripts/experiments/target_stops.py train.json [family.json ...] [--targets 0.9,0.95] [--budget 10]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from predictors.onboard import estimate  # noqa: E402
from predictors.onboard.replay import rho_at  # noqa: E402
from predictors.onboard.settings import OnboardSettings  # noqa: E402

FIT_FROM = 5  # rounds the recalibration is fitted on: from 5 measurements on, as the shipped one


def n_initial(strategy: str) -> int:
    """The stop gate of a ``bench_onboard`` strategy name (``loop/n_initial=3/...``)."""
    name, *parts = strategy.split("/")
    own = dict(part.split("=", 1) for part in parts)
    # the replays are of phys_bayes, a method with a closed-form posterior
    return int(own.get("n_initial", OnboardSettings(strategy=name).for_method(True).n_initial))


def recalibrated(step: dict, coef) -> tuple[float, float, float, bool]:
    """(rho, low, high, unsure) of a recorded round under calibration ``coef``, as ``OnboardLoop._adapt`` makes them."""
    rho, low, high, _ = estimate.calibrate_round(step["raw_rho"], step["raw_low"], step["raw_high"], step["n"], coef,
                                                 coarse=step["coarse"])
    low, high = estimate.widen(rho, low, high, estimate.interval_half_width(step["n"], step["whole_ms"]))
    low, high = estimate.hold_draw_bounds(low, high, step["raw_low"], step["raw_high"])
    return rho, low, high, high - low > estimate.UNSURE_WIDTH


def device_left_out_fits(runs) -> dict:
    """device -> calibration fitted on the other devices' rounds of these runs."""
    rounds = [(r["device"], st) for r in runs for st in r["steps"]
              if st.get("raw_rho") is not None and st["n"] >= FIT_FROM]
    devices = np.array([d for d, _ in rounds])
    raw, true, n, coarse = (np.array([st[k] for _, st in rounds], dtype=np.float64)
                            for k in ("raw_rho", "true_rho", "n", "coarse"))
    return {d: estimate.fit_calibration(raw[devices != d], true[devices != d], n[devices != d], coarse[devices != d])
            for d in np.unique(devices)}


def mean_rho(runs, n: int) -> float:
    """Mean true rho after ``n`` measurements (NaN where no run had a round by then)."""
    values = [v for v in (rho_at(r["steps"], n) for r in runs) if v is not None]
    return float(np.mean(values)) if values else float("nan")


def estimate_of(run, step, fits):
    if fits is None:
        return step["est_rho"], step["low"], step["high"], step["unsure"]
    if step.get("raw_rho") is None:
        return None, None, None, None
    return recalibrated(step, fits[run["device"]])


def stop(run, target: float, fits, gate: int, budget: int) -> tuple[int, float]:
    """(measurements spent, true rho) where a ``--target-rho target`` onboarding of ``run`` stops."""
    for step in run["steps"]:
        if gate <= step["n"] <= budget:
            rho, _, _, unsure = estimate_of(run, step, fits)
            if rho is not None and rho >= target and not unsure:
                return step["n"], step["true_rho"]
    last = [st for st in run["steps"] if st["n"] <= budget][-1]
    return last["n"], last["true_rho"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("replays", nargs="+")
    parser.add_argument("--targets", default="0.9,0.95")
    parser.add_argument("--budget", type=int, default=10)
    args = parser.parse_args(argv)
    missing = [path for path in args.replays if not Path(path).is_file()]
    if missing:
        parser.error(f"no replay file {', '.join(missing)} (bench_onboard --json writes one)")
    runs = [r for path in args.replays for r in json.loads(Path(path).read_text())["runs"]]
    by_strategy = defaultdict(list)
    for r in runs:
        by_strategy[r["strategy"]].append(r)
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    ns = range(4, args.budget + 1)
    print(f"{len(runs)} runs, tasks {', '.join(tasks)}: mean true rho after n (per task after 5 / 7 / 10 below)")
    for s, rs in by_strategy.items():
        per_task = {t: {k: mean_rho([r for r in rs if r["task"] == t], k) for k in ns} for t in tasks}
        print(f"{s:36s} " + " ".join(f"{k}:{np.mean([per_task[t][k] for t in tasks]):.4f}" for k in ns))
        print(" " * 37 + " ".join(f"{t} {per_task[t][5]:.3f}/{per_task[t][7]:.3f}/{per_task[t][10]:.3f}"
                                  for t in tasks))
    fits = {s: device_left_out_fits(rs) for s, rs in by_strategy.items()}
    print(f"\nestimate over the rounds after {FIT_FROM}-{args.budget} measurements: as recorded | recalibrated")
    for s, rs in by_strategy.items():
        for label, own in (("recorded", None), ("recal.", fits[s])):
            pairs = [(estimate_of(r, st, own), st["true_rho"]) for r in rs for st in r["steps"]
                     if FIT_FROM <= st["n"] <= args.budget]
            err = np.array([e[0] - t for e, t in pairs if e[0] is not None])
            cover = np.mean([e[1] <= t <= e[2] for e, t in pairs if e[0] is not None])
            print(f"{s:36s} {label:8s} MAE {np.abs(err).mean():.4f} bias {err.mean():+.4f} coverage {cover:.2f}")
    for target in (float(t) for t in args.targets.split(",")):
        print(f"\n--target-rho {target}, budget {args.budget}: measurements spent, true rho at the stop, share stopped "
              f"early, share of early stops more than 0.03 short of the target")
        for label, recal, gate_of in (("recorded, gate n_initial", False, n_initial),
                                      ("recal., gate n_initial", True, n_initial),
                                      ("recorded, gate 5 (the loop's now)", False, lambda s: max(5, n_initial(s))),
                                      ("recal., gate 5", True, lambda s: max(5, n_initial(s)))):
            print(f" {label}")
            for s, rs in by_strategy.items():
                res = np.array([stop(r, target, fits[s] if recal else None, gate_of(s), args.budget) for r in rs])
                early = res[:, 0] < args.budget
                short = np.mean(res[early, 1] < target - 0.03) if early.any() else float("nan")
                print(f"  {s:36s} n {res[:, 0].mean():5.2f}  true {res[:, 1].mean():.4f}  early {early.mean():.2f}  "
                      f"short {short:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
