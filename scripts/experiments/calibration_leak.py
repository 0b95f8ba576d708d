#!/usr/bin/env python
"""How much does the shipped estimate calibration owe to devices that are test devices of the task it is reported
on (research, not the product)?

The calibration (``predictors.onboard.estimate.DEFAULT_CALIBRATION``) was fitted once, on the train-device replays
of N0 and F0-F5 pooled; on FBNet one task's train devices are another's test devices. This refits it per task on
only the train-replay rounds that neither hold out nor pretrain on one of that task's test devices, and prints each
task's estimate error on its own test rounds (after 5 or more measurements) under: the shipped calibration, a refit
on all train rounds, the clean refit (rounds of the same space), and a stricter one (no such device in any space).

    bench_onboard --mode train --strategies design --budget 20 --json train.json
    bench_onboard --mode test --strategies design --budget 20 --json test.json
    scripts/experiments/calibration_leak.py train.json test.json [test2.json ...]

README ("Predictors") gives its numbers of December 2026 (1 trial).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from predictors import tasks  # noqa: E402
from predictors.onboard import estimate  # noqa: E402
from predictors.onboard.settings import STOP_FROM  # noqa: E402


def read_rounds(path: str, parser: argparse.ArgumentParser) -> list[dict]:
    """The estimated rounds after STOP_FROM or more measurements of a ``bench_onboard --json`` replay."""
    try:
        runs = json.loads(Path(path).read_text())["runs"]
    except FileNotFoundError:
        parser.error(f"no replay file {path} (bench_onboard --json writes one)")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"{path}: not a bench_onboard replay JSON ({exc})")
    return [{**step, "device": run["device"], "task": run["task"]} for run in runs for step in run["steps"]
            if step.get("raw_rho") is not None and step["n"] >= STOP_FROM]


def fit(rounds: list[dict]):
    columns = [np.array([r[key] for r in rounds], dtype=np.float64) for key in ("raw_rho", "true_rho", "n", "coarse")]
    return estimate.fit_calibration(*columns)


def error(rounds: list[dict], coef) -> tuple[float, float]:
    """(mean absolute error, bias) of the calibrated estimate against the true rho."""
    calibrated = np.array([estimate.calibrate_round(r["raw_rho"], r["raw_low"], r["raw_high"], r["n"], coef,
                                                    coarse=bool(r["coarse"]))[0] for r in rounds])
    true = np.array([r["true_rho"] for r in rounds])
    return float(np.abs(calibrated - true).mean()), float((calibrated - true).mean())


def touches(round_: dict, task: tasks.Task, *, any_space: bool) -> bool:
    """Whether a train-replay round held out or pretrained on a test device of ``task``: its own task's train
    devices are both. Rounds of the other space count only with ``any_space`` (a device name in both spaces)."""
    other = tasks.get_task(round_["task"])
    if other.space != task.space and not any_space:
        return False
    return bool(set(other.train_devices) & set(task.test_devices))


def main() -> None:
    parser = argparse.ArgumentParser(prog="calibration_leak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("train", help="a bench_onboard --mode train replay JSON")
    parser.add_argument("test", nargs="+", help="bench_onboard --mode test replay JSONs")
    args = parser.parse_args()
    train = read_rounds(args.train, parser)
    test = [r for path in args.test for r in read_rounds(path, parser)]
    pooled = fit(train)
    print(f"{len(train)} train rounds, {len(test)} test rounds; shipped {estimate.DEFAULT_CALIBRATION}, "
          f"refit on all train rounds {pooled}")
    print("task  train rounds kept/dropped  test MAE (bias): shipped | refit all | refit clean | clean in any space")
    weighted = []
    for name in sorted({r["task"] for r in test}):
        task = tasks.get_task(name)
        clean = [r for r in train if not touches(r, task, any_space=False)]
        strict = [r for r in train if not touches(r, task, any_space=True)]
        own = [r for r in test if r["task"] == name]
        row = [error(own, coef) for coef in (estimate.DEFAULT_CALIBRATION, pooled, fit(clean), fit(strict))]
        weighted.append((len(own), row))
        print(f"{name}  {len(clean)}/{len(train) - len(clean)}  "
              + " | ".join(f"{mae:.4f} ({bias:+.4f})" for mae, bias in row))
    n = sum(count for count, _ in weighted)
    means = [sum(count * row[i][0] for count, row in weighted) / n for i in range(4)]
    print("all test rounds MAE: " + " | ".join(f"{m:.4f}" for m in means))


if __name__ == "__main__":
    main()
