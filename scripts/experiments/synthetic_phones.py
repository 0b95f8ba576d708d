#!/usr/bin/env python
"""Can the estimate calibration's whole-ms terms be learned without a real phone? (research, not the product)

The whole-ms terms (d, e) of ``predictors.onboard.estimate.DEFAULT_CALIBRATION`` were fitted on the only whole-ms
FBNet phones there are, which are test devices of some tasks (``calibration_leak.py``: refitted without them, F5's
estimate is 0.087 off instead of 0.032). Here a "synthetic phone" is a float-timed FBNet train device's table mapped
into a phone's range (log-affinely, its fastest arch to ``--range``'s low end, its slowest to the high end), times
lognormal timing noise (``bench_onboard --noise``: a share of the device's log-latency spread), rounded to whole
milliseconds; it is replayed like ``bench_onboard --mode train --strategies design`` (the method pretrains on the
task's other train devices, clean), answering and scored with the synthetic table. ``--fit`` then fits d and e on
the synthetic rounds only, with (a, b, c) kept at the shipped values, and prints each task's test error under:
the shipped calibration, no whole-ms terms (what a refit without phones gives), d and e from the synthetic phones
of the tasks that touch none of its test devices (``calibration_leak.touches``), and from all synthetic phones.
``--train`` adds the whole calibration refitted (``calibration_leak``'s clean refit, and the same with the real
whole-ms rounds swapped for the synthetic ones, per task and pooled).

    synthetic_phones.py --noise 0.3 --json synth.json [--tasks F1,F4,F5] [--per-task 6] [--range 20,80]
    bench_onboard --mode test --strategies design --budget 20 --json test.json
    synthetic_phones.py --fit synth.json [synth2.json ...] --test test.json [test2.json ...] [--train train.json]

What it showed: the fitted terms follow the noise the synthetic phones are given, which only real phones can tell.

README ("Predictors", beside ``calibration_leak.py``) gives its numbers of December 2026 (1 trial).
"""
from __future__ import annotations

import argparse
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from predictors import data, registry, tasks  # noqa: E402
from predictors.onboard import estimate, loop_ks, prepare_method  # noqa: E402
from predictors.onboard.replay import replay_device  # noqa: E402
from scripts._bench_flags import known_names, number_list, positive_int  # noqa: E402
from scripts._bench_json import write_json  # noqa: E402

bench = SourceFileLoader("bench_onboard", str(ROOT / "scripts" / "bench_onboard")).load_module()
leak = SourceFileLoader("calibration_leak", str(ROOT / "scripts" / "experiments" / "calibration_leak.py")).load_module()


def phone_like(truth: pd.Series, low_ms: float, high_ms: float, share: float, seed: int) -> pd.Series:
    """``truth`` mapped log-affinely onto [low_ms, high_ms] (ranks kept), times ``bench_onboard``'s timing noise
    (``share`` of the log spread), rounded to whole milliseconds (at least 1). Named ``<device>~phone``."""
    logs = np.log(truth.to_numpy(dtype=np.float64))
    span = np.ptp(logs)
    if not span > 0:
        raise ValueError(f"{truth.name}: every latency is the same; it cannot be mapped onto a range")
    scaled = np.exp(np.log(low_ms) + (logs - logs.min()) / span * np.log(high_ms / low_ms))
    noisy = bench.with_timing_noise(pd.Series(scaled, index=truth.index, name=f"{truth.name}~phone"), share, seed)
    return np.maximum(1.0, np.round(noisy)).rename(f"{truth.name}~phone")


def sources(full: dict, per_task: int | None) -> list[str]:
    """The float-timed devices of ``full`` (a real whole-ms phone is what this does without), ``per_task`` of them
    spread over the list (every one for None)."""
    floats = [d for d, s in full.items() if not estimate.is_whole_ms(s.to_numpy())]
    if per_task is None or per_task >= len(floats):
        return floats
    return [floats[i] for i in np.linspace(0, len(floats) - 1, per_task).round().astype(int)]


def replay(args) -> list[dict]:
    runs = []
    for name in args.tasks:
        task = tasks.get_task(name)
        full = data.by_device(task.tables()[0], task.train_devices)
        picked = sources(full, args.per_task)
        settings = bench.settings_for("design", args.budget, args.seed, {})
        for train, targets in bench.cases(task, "train", args.seed, None):
            (held, clean), = targets.items()
            if held not in picked:
                continue
            method = prepare_method(registry.get_method(None, random_state=args.seed),
                                    loop_ks(bench.settings_for("loop", args.budget, args.seed, {})))
            method.pretrain(task.space, train)
            truth = phone_like(clean, *args.range, args.noise, args.seed)
            run = replay_device(method, task.space, truth, settings, tables=train.full, seed=args.seed)
            run.update(strategy="design", task=name, seed=args.seed, source=held)
            runs.append(run)
            last = run["steps"][-1]
            print(f"{name} {truth.name} ({truth.nunique()} values, {truth.min():.0f}-{truth.max():.0f} ms) "
                  f"n={last['n']}: true {last['true_rho']:.3f} raw {last['raw_rho']:.3f}", flush=True)
    return runs


def fit_whole_ms(rounds: list[dict], base=estimate.DEFAULT_CALIBRATION) -> tuple[float, ...]:
    """``base`` with its whole-ms terms (d, e) refitted on ``rounds`` (least mean absolute error in rho, as
    ``estimate.fit_calibration``), (a, b, c) kept: only the coarse-timer rounds' map moves."""
    if len(rounds) < 3:
        raise ValueError(f"fitting the whole-ms terms needs at least 3 rounds, got {len(rounds)}")
    raw, true, n = (np.array([r[k] for r in rounds], dtype=np.float64) for k in ("raw_rho", "true_rho", "n"))
    a, b, c = base[:3]
    z = np.arctanh(np.clip(raw, -0.999, 0.999))
    rest = a + b * z + c / np.maximum(n, 1)
    design = np.column_stack([np.ones(len(z)), z])
    start = np.linalg.lstsq(design, np.arctanh(np.clip(true, -0.999, 0.999)) - rest, rcond=None)[0]
    res = minimize(lambda w: np.abs(np.tanh(rest + design @ w) - true).mean(), start, method="Nelder-Mead",
                   options=dict(maxiter=20000, xatol=1e-6, fatol=1e-9))
    return (a, b, c, *(float(round(v, 3)) for v in res.x))


def allowed(rounds: list[dict], task: tasks.Task) -> list[dict]:
    """The train-replay rounds that hold out or pretrain on none of ``task``'s test devices (the clean refit's)."""
    return [r for r in rounds if not leak.touches(r, task, any_space=False)]


def whole_ms_or_none(rounds: list[dict]) -> tuple[float, ...]:
    """:func:`fit_whole_ms` on ``rounds``; without any, no whole-ms terms (what a refit without phones has)."""
    return fit_whole_ms(rounds) if rounds else estimate.DEFAULT_CALIBRATION[:3] + (0.0, 0.0)


def calibrations(synth: list[dict], train: list[dict]) -> dict:
    """Label -> (task -> the calibration its test rounds are scored under). With ``train`` (real train-replay
    rounds), also the whole calibration refitted with the real whole-ms rounds swapped for the synthetic ones."""
    shipped = estimate.DEFAULT_CALIBRATION
    pooled = fit_whole_ms(synth)
    out = {"shipped": lambda task: shipped, "no whole-ms terms": lambda task: shipped[:3] + (0.0, 0.0),
           "synthetic d, e clean": lambda task: whole_ms_or_none(allowed(synth, task)),
           "synthetic d, e all": lambda task: pooled}
    if train:
        floats = [r for r in train if not r["coarse"]]  # every real whole-ms FBNet round is a phone's
        everything = leak.fit(floats + synth)
        out.update({"refit clean (calibration_leak)": lambda task: leak.fit(allowed(train, task)),
                    "refit clean, synthetic whole ms": lambda task: leak.fit(allowed(floats + synth, task)),
                    "refit all, synthetic whole ms": lambda task: everything})
    return out


def fit_report(args, parser) -> None:
    synth = [r for path in args.fit for r in leak.read_rounds(path, parser)]
    test = [r for path in args.test for r in leak.read_rounds(path, parser)]
    train = leak.read_rounds(args.train, parser) if args.train else []
    if not all(r["coarse"] for r in synth):
        parser.error("--fit: a round of the synthetic replays is not whole ms on FBNet (not this script's replay?)")
    print(f"{len(synth)} synthetic rounds ({len({(r['task'], r['device']) for r in synth})} phones), {len(train)} "
          f"real train rounds, {len(test)} test rounds ({sum(r['coarse'] for r in test)} whole ms)")
    variants = calibrations(synth, train)
    totals = {label: [] for label in variants}
    for name in sorted({r["task"] for r in test}):
        task = tasks.get_task(name)
        own = [r for r in test if r["task"] == name]
        coarse = [r for r in own if r["coarse"]]
        print(f"{name}: {len(own)} test rounds ({len(coarse)} whole ms), {len(allowed(synth, task))} synthetic "
              "rounds clean; test MAE (bias), whole-ms rounds' MAE, calibration")
        for label, coef_of in variants.items():
            try:
                coef = coef_of(task)
            except ValueError as exc:  # e.g. a tiny replay leaves fewer than 3 rounds to fit on
                parser.error(f"{name}, {label}: {exc}")
            mae, bias = leak.error(own, coef)
            totals[label].append((len(own), mae))
            ms = f"{leak.error(coarse, coef)[0]:.4f}" if coarse else "-"
            print(f"  {label:32s} {mae:.4f} ({bias:+.4f}), {ms:6s} {coef}")
    count = sum(n for n, _ in next(iter(totals.values())))
    print("all test rounds MAE: " + ", ".join(f"{label} {sum(n * m for n, m in rows) / count:.4f}"
                                              for label, rows in totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="synthetic_phones.py", description=__doc__.split("\n\n")[0])
    fbnet = [t.name for t in tasks.TASKS.values() if t.space in estimate.COARSE_TIMER_SPACES]
    parser.add_argument("--tasks", type=known_names(fbnet, "task"), default="F1,F4,F5",
                        help="FBNet tasks whose train devices become synthetic phones (default F1,F4,F5: the tasks "
                             "with whole-ms test phones)")
    parser.add_argument("--per-task", type=positive_int, help="at most this many float-timed train devices per task, "
                        "spread over its list (default: all)")
    parser.add_argument("--noise", type=float, default=0.3, metavar="SHARE",
                        help="timing noise, a share of the device's log-latency spread (default 0.3)")
    parser.add_argument("--range", type=number_list, default="20,80", metavar="LOW,HIGH",
                        help="milliseconds of the fastest and slowest arch before noise (default 20,80)")
    parser.add_argument("--budget", type=positive_int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="replay and write the synthetic phones' rounds here")
    parser.add_argument("--fit", nargs="+", metavar="SYNTH.json", help="fit on these replays (this script's)")
    parser.add_argument("--test", nargs="+", metavar="TEST.json", help="--fit: bench_onboard --mode test replays")
    parser.add_argument("--train", metavar="TRAIN.json", help="--fit: also refit the whole calibration on this "
                        "bench_onboard --mode train replay, its real whole-ms rounds swapped for the synthetic ones")
    args = parser.parse_args()
    if args.fit:
        if not args.test:
            parser.error("--fit needs --test (bench_onboard --mode test replay JSONs to score on)")
        fit_report(args, parser)
        return
    if not args.json:
        parser.error("--json is needed to replay (or --fit)")
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.range = [float(v) for v in args.range.split(",")]
    if len(args.range) != 2 or not 0 < args.range[0] < args.range[1]:
        parser.error(f"--range: two milliseconds, low < high, got {args.range}")
    if args.noise < 0:
        parser.error(f"--noise: a share of the log-latency spread, 0 or more, got {args.noise}")
    runs = replay(args)
    write_json(args.json, {"settings": {"mode": "train", "budget": args.budget,
                                        "synthetic": {k: getattr(args, k) for k in ("noise", "range", "per_task")}},
                           "runs": runs}, indent=None)


if __name__ == "__main__":
    main()
