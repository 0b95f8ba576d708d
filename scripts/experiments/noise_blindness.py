#!/usr/bin/env python
"""Why is the onboarding's rho estimate optimistic on noisy devices? (research, not the product)

Replays the design (``bench_onboard --mode train --strategies design``: each train device in turn is the new device,
the method pretrains on the others; test devices never read) with or without timing noise (``--noise``, as
``bench_onboard``'s), and records after every round from 5 measurements on: the true rho, the raw model estimate,
what the posterior believes (its fitted noise variance, the function variance it gives the pool) and what the
pool's error really is, split into the added noise and the model's misfit of the noiseless table (all in the
posterior's standardised units: the measured latencies' spread is 1). Beside the raw estimate it records the same
estimate under alternatives confined to it: a noise grid reaching 4 (``wide``) or 12 levels from 1e-3 to 2
(``fine``) for the draws' posterior, the draws at temperature 1, their noise inflated by the Student-t weights
(``posterior.measured_noise_factor``), by the measured set's mean squared leave-one-out z-score (``loo_z2``; 1
where the model's predictive spread is right; shrunk toward 1, ``raw_loo``), and by what a few uniformly random
pool archs' errors say of the draws' spread (``check_ratio``, shrunk; ``raw_check``: what random "check" picks
among the measured would tell, here held out rather than measured, so the model and its picks are unchanged).
``--compare`` also gives each estimate calibrated by a refit on the clean rounds, each device left out in turn.

    noise_blindness.py --noise 0.0 --json clean.json [--tasks N0,F0] [--holdouts 2] [--budget 12]
    noise_blindness.py --noise 0.3 --json noisy.json ...    # and 0.6
    noise_blindness.py --compare clean.json noisy.json     # the same rounds, noisy minus clean; each one's error
    noise_blindness.py --pool-fit train.json noisy.json     # the calibration refitted with noisy rounds pooled in

``--pool-fit`` reads a clean ``bench_onboard --mode train --json`` replay and this script's noisy rounds, refits the
calibration (``estimate.fit_calibration``) on them pooled, with and without the whole-ms terms, each (task, device)
left out of the fit in turn, and prints the error of the clean float-timed, clean whole-ms and noisy rounds.

README ("Noisy devices") gives its numbers of December 2026.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from predictors import registry, tasks  # noqa: E402
from predictors.base import TrainTables  # noqa: E402
from predictors.onboard import loop_ks, posterior, prepare_method  # noqa: E402
from predictors.onboard.estimate import DEFAULT_CALIBRATION, calibrate, fit_calibration  # noqa: E402
from predictors.onboard.settings import STOP_FROM  # noqa: E402
from predictors.onboard.loop import OnboardLoop  # noqa: E402
from predictors.onboard.replay import TableDevice  # noqa: E402
from predictors.protocol import spearman  # noqa: E402
from scripts._bench_flags import known_names, non_negative_int, positive_int  # noqa: E402
from scripts._bench_json import output_path, write_json  # noqa: E402

bench = SourceFileLoader("bench_onboard", str(ROOT / "scripts" / "bench_onboard")).load_module()

GRIDS = {"wide": (1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0, 4.0), "fine": tuple(np.geomspace(1e-3, 2.0, 12))}
PRIOR_DOF = 4  # the checks' variance ratio is shrunk toward 1 as a scaled-inverse-chi-square with this many dof
CHECK_EVERY = 5  # one uniformly random check arch per this many measurements (at least one)


def raw_rho(post, pred, feats, settings, n, seed, *, noise_scale=1.0, temperature=None) -> float:
    """The loop's raw model estimate (``OnboardLoop._adapt``: Gaussian noise, mixed with the leave-one-out residuals'
    from ``loo_mix_above`` on), the draws' noise times ``noise_scale``; one seeded generator per round."""
    rng = np.random.default_rng([seed, n, 7])
    t = settings.model_temperature if temperature is None else temperature
    funcs, noise_sd = post.draws(feats, settings.n_draws, rng)
    predn = (pred - post.y_mean) / post.y_std
    z = rng.standard_normal(funcs.shape)
    rho = float(posterior.spearman_rows(pred, predn + t * (funcs - predn) + noise_scale * noise_sd[:, None] * z).mean())
    if settings.loo_mix_above is not None and n >= settings.loo_mix_above:
        loo = post.loo_residuals()
        z = rng.choice(noise_scale * (loo - loo.mean()), size=funcs.shape)
        rho = (rho + float(posterior.spearman_rows(pred, predn + t * (funcs - predn) + z).mean())) / 2
    return rho


def loo_z2(post) -> float:
    """Mean squared leave-one-out z-score of the measured set (BMA over grid points; 1 where the model's
    predictive spread is right): per grid point ``alpha_i ** 2 / (K^-1)_ii``, the LOO residual over its sd."""
    return float(post.prob @ np.mean(post.alpha ** 2 / np.diagonal(post.kinv, axis1=1, axis2=2), axis=1))


def shrunk(ratio: float, dof: int) -> float:
    """A variance ratio seen on ``dof`` points, shrunk toward 1 by a prior worth ``PRIOR_DOF`` points."""
    return (PRIOR_DOF + dof * ratio) / (PRIOR_DOF + dof)


def check_ratio(loop, truth, seed, count: int) -> float:
    """Squared error of ``count`` uniformly random pool archs (what check picks would measure) over what the
    estimate's draws give them (``t ** 2`` x function variance + fitted noise; 1 where the draws' spread is right)."""
    post, n, t = loop.posterior, len(loop.measured), loop.settings.model_temperature
    picks = np.random.default_rng([seed, n, 11]).choice(len(loop.pool), size=count, replace=False)
    mean, var = post.mean_var(feats=[f[picks] for f in loop.pool_features])
    seen = loop.adapted.to_response(truth.loc[[loop.pool[i] for i in picks]].to_numpy())
    draw_var = t ** 2 * var / post.y_std ** 2 + float(post.prob @ post.noise)
    return float(np.mean(((seen - mean) / post.y_std) ** 2) / np.mean(draw_var))


def check_noise_scale(ratio: float, func: float, noise: float) -> float:
    """The draws' noise sd factor that makes their variance (``func`` + ``noise`` x factor ** 2) ``ratio`` times
    what it was (at least a tenth of the noise sd: a ratio below 1 says the model's spread is too wide)."""
    return float(np.sqrt(max(0.01, (ratio * (func + noise) - func) / noise)))


def with_grid(adapted, archs, y, grid):
    """The posterior of ``adapted``'s measured set under another noise grid (its prediction unchanged)."""
    other = copy.copy(adapted)
    other.__dict__.pop("_measured_fit", None)
    other.noise_grid = grid
    return posterior.fit_posterior(other, archs, y)


def round_row(loop, clean, truth, seed) -> dict:
    """What one round's posterior believes, what the pool's error is, and the raw estimate's alternatives."""
    s, post, adapted, n = loop.settings, loop.posterior, loop.adapted, len(loop.measured)
    rest = [a for a in truth.index if a not in loop.measured]
    archs = sorted(loop.measured, key=str)
    y = np.array([loop.measured[a] for a in archs])
    pred, feats, pool = loop.pool_model, loop.pool_features, loop.pool
    model = loop.estimate_parts["model"]
    noisy, noiseless = (adapted.to_response(t.loc[pool].to_numpy()) for t in (truth, clean))
    row = dict(n=n, true_rho=spearman(adapted.predict(rest), truth.loc[rest].to_numpy()), raw=model.raw_rho,
               coarse=model.coarse, fitted_noise=float(post.prob @ post.noise),
               func_var=float(np.mean(post.mean_var(feats=feats)[1])) / post.y_std ** 2,
               pool_noise=float(np.var((noisy - noiseless) / post.y_std)),
               pool_misfit=float(np.var((noiseless - pred) / post.y_std)))
    for name, grid in GRIDS.items():
        other = with_grid(adapted, archs, y, grid)
        row[f"{name}_noise"] = float(other.prob @ other.noise)
        row[f"raw_{name}"] = raw_rho(other, pred, feats, s, n, seed)
    row["raw_t1"] = raw_rho(post, pred, feats, s, n, seed, temperature=1.0)
    row["raw_tails"] = raw_rho(post, pred, feats, s, n, seed,
                               noise_scale=float(np.sqrt(posterior.measured_noise_factor(post, y))))
    row["loo_z2"] = loo_z2(post)
    row["raw_loo"] = raw_rho(post, pred, feats, s, n, seed, noise_scale=float(np.sqrt(shrunk(row["loo_z2"], n))))
    # the checks' ratio is of the whole draw variance: the noise alone takes what the function part does not;
    # CHECK_EVERY as check picks would be, and 20 (what the idea could give with many checks, unshrunk)
    noise, func = float(post.prob @ post.noise), s.model_temperature ** 2 * row["func_var"]
    count = max(1, n // CHECK_EVERY)
    row["check_ratio"] = check_ratio(loop, truth, seed, count)
    row["raw_check"] = raw_rho(post, pred, feats, s, n, seed,
                               noise_scale=check_noise_scale(shrunk(row["check_ratio"], count), func, noise))
    row["check_ratio_20"] = check_ratio(loop, truth, seed, 20)
    row["raw_check_20"] = raw_rho(post, pred, feats, s, n, seed,
                                  noise_scale=check_noise_scale(row["check_ratio_20"], func, noise))
    return row


def replay(args) -> list[dict]:
    rows = []
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        task = tasks.get_task(name)
        for train, targets in bench.cases(task, "train", args.seed, args.holdouts):
            settings = bench.settings_for("design", args.budget, args.seed, {})
            method = prepare_method(registry.get_method("phys_bayes", random_state=args.seed), loop_ks(settings))
            method.pretrain(task.space, train)
            for device, clean in targets.items():
                truth = bench.with_timing_noise(clean, args.noise, args.seed)

                def on_step(loop, step, clean=clean, truth=truth, device=device):
                    if step.n_measured >= 5 and loop.posterior is not None:
                        rows.append({"task": name, "device": str(device),
                                     **round_row(loop, clean, truth, args.seed)})

                OnboardLoop(method, task.space, list(truth.index), TableDevice(truth), settings,
                            tables=TrainTables(train, train.full).full, device=str(device), on_step=on_step).run()
                last = rows[-1]
                print(f"{name} {device} n={last['n']}: true {last['true_rho']:.3f} raw {last['raw']:.3f} "
                      f"fitted noise {last['fitted_noise']:.3f}, pool noise {last['pool_noise']:.3f} "
                      f"misfit {last['pool_misfit']:.3f}", flush=True)
    return rows


def read_json(path: str, parser: argparse.ArgumentParser, what: str):
    """A JSON file's content, or one line naming what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        parser.error(f"no {what} file {path}")
    except (OSError, ValueError) as exc:
        parser.error(f"{path}: not a {what} JSON ({exc})")


def left_out_calibrated(fit_rows, key, rows, *, whole_ms=True) -> np.ndarray:
    """``rows``' ``key`` estimates calibrated by ``estimate.fit_calibration`` on ``fit_rows`` (the whole-ms terms
    fitted where ``whole_ms``), each (task, device) of ``rows`` left out of the fit it is calibrated by."""
    raw, true, n, coarse = (np.array([r[k] for r in fit_rows], dtype=np.float64)
                            for k in (key, "true_rho", "n", "coarse"))
    fit_device = np.array([f"{r['task']}/{r['device']}" for r in fit_rows])
    device = np.array([f"{r['task']}/{r['device']}" for r in rows])
    estimate = np.empty(len(rows))
    for d in np.unique(device):
        kept = fit_device != d
        coef = fit_calibration(raw[kept], true[kept], n[kept], coarse[kept] if whole_ms else None)
        estimate[device == d] = [calibrate(r[key], r["n"], coef, coarse=bool(r["coarse"]))
                                 for r in rows if f"{r['task']}/{r['device']}" == d]
    return estimate


def compare(clean_path: str, noisy_path: str, parser) -> None:
    """Means over the rounds both replays have (task, device, n), noisy minus clean, and each one's error."""
    clean = {(r["task"], r["device"], r["n"]): r for r in read_json(clean_path, parser, "rounds")}
    noisy = [r for r in read_json(noisy_path, parser, "rounds") if (r["task"], r["device"], r["n"]) in clean]
    print(f"{len(noisy)} rounds in both")
    if not noisy:
        return
    # replays from before the loo and check columns lack them
    has = [k for k in ("true_rho", "raw", "raw_wide", "raw_fine", "raw_t1", "raw_tails", "raw_loo", "raw_check",
                       "raw_check_20", "loo_z2", "check_ratio", "check_ratio_20", "fitted_noise", "wide_noise",
                       "fine_noise", "pool_noise", "pool_misfit", "func_var") if k in noisy[0]]
    for key in has:
        before = np.array([clean[(r["task"], r["device"], r["n"])][key] for r in noisy])
        after = np.array([r[key] for r in noisy])
        print(f"{key:13s} clean {before.mean():.4f}  noisy {after.mean():.4f}  "
              f"difference {np.mean(after - before):+.4f}")
    both_clean = [clean[(r["task"], r["device"], r["n"])] for r in noisy]
    for label, rows in (("clean", both_clean), ("noisy", noisy)):
        for key in [k for k in has if k.startswith("raw")]:
            true = np.array([r["true_rho"] for r in rows])
            err = np.array([r[key] for r in rows]) - true
            cal = np.array([calibrate(r[key], r["n"], coarse=r["coarse"]) for r in rows]) - true
            refit = left_out_calibrated(both_clean, key, rows) - true
            print(f"{label} {key:10s} error {np.abs(err).mean():.3f} (bias {err.mean():+.3f}), "
                  f"calibrated {np.abs(cal).mean():.3f} ({cal.mean():+.3f}), "
                  f"refitted on the clean rounds {np.abs(refit).mean():.3f} ({refit.mean():+.3f})")


def pool_fit(train_path: str, noisy_path: str, parser) -> None:
    """Errors of the calibration refitted on clean train rounds and noisy ones pooled, each device left out."""
    replay_json = read_json(train_path, parser, "bench_onboard replay")
    if not isinstance(replay_json, dict) or "runs" not in replay_json:
        parser.error(f"{train_path}: not a bench_onboard replay JSON (no runs)")
    runs = replay_json["runs"]
    clean = [{**st, "raw": st["raw_rho"], "task": r["task"], "device": r["device"], "kind": "clean"} for r in runs
             for st in r["steps"] if st.get("raw_rho") is not None and st["n"] >= STOP_FROM]
    rounds = clean + [{**r, "kind": "noisy"} for r in read_json(noisy_path, parser, "rounds")]
    kind = np.array([r["kind"] + (" whole-ms" if r["coarse"] else "") for r in rounds])
    raw, true, n, coarse = (np.array([r[k] for r in rounds], dtype=np.float64)
                            for k in ("raw", "true_rho", "n", "coarse"))

    def errors(label, estimate):
        print(label + "  ".join(f"{k}: {np.abs(estimate - true)[kind == k].mean():.3f} "
                                f"({(estimate - true)[kind == k].mean():+.3f})" for k in np.unique(kind)))

    errors("shipped calibration             ", np.array([calibrate(*a, DEFAULT_CALIBRATION, coarse=bool(c))
                                                         for *a, c in zip(raw, n, coarse)]))
    for whole_ms in (False, True):
        estimate = left_out_calibrated(rounds, "raw", rounds, whole_ms=whole_ms)
        errors(f"pooled refit, whole-ms terms {'on ' if whole_ms else 'off'} ", estimate)


def main() -> None:
    parser = argparse.ArgumentParser(prog="noise_blindness.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=known_names(list(tasks.TASKS), "task"), default=",".join(tasks.TASKS))
    parser.add_argument("--noise", type=float, default=0.0, help="timing noise as bench_onboard --noise")
    parser.add_argument("--holdouts", type=positive_int, default=2, help="train devices held out in turn per task")
    parser.add_argument("--budget", type=positive_int, default=12)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--json", type=output_path, help="write the rounds here")
    parser.add_argument("--compare", nargs=2, metavar=("CLEAN", "NOISY"), help="compare two replays' rounds")
    parser.add_argument("--pool-fit", nargs=2, metavar=("TRAIN_REPLAY", "NOISY"),
                        help="refit the calibration with the noisy rounds pooled in")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare, parser)
    elif args.pool_fit:
        pool_fit(*args.pool_fit, parser)
    elif not args.json:
        parser.error("--json is needed to replay (or --compare / --pool-fit)")
    else:
        write_json(args.json, replay(args), indent=None)


if __name__ == "__main__":
    main()
