"""The strict evaluation protocol of ``predictor-protocol.md``.

For each trial seed:

1. draw N architectures per train device with the seed (default 900 NB201 / 4000 FBNet) and
   ``pretrain`` a fresh method on them (``train.full`` keeps the whole train tables as lookup);
2. for each k and each test device, ask the method which k architectures to measure
   (``choose``; it never sees target latencies), adapt a *deep copy* on exactly those k
   (``adapt`` returns a new object, so no test device sees another's samples);
3. score Spearman rho between prediction and truth over every architecture of the test
   device's table except the k measured ones, with the final adapted model.

Per k: per device mean over trials, then mean over devices; ``std`` is the standard deviation
over trials of the device-mean score. One result dict per (task, method, k)::

    {"task", "method", "k", "trials", "mean", "std", "per_device", "settings", "seeds", "seconds"}
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from harness.errors import UserError
from predictors import data, registry
from predictors.base import FewShotMethod, TrainTables, UnusableMeasurementsError
from predictors.tasks import Task, get_task

log = logging.getLogger(__name__)

DEFAULT_N_PRETRAIN = {"nb201": 900, "fbnet": 4000}
DEFAULT_SAMPLES = (5, 10, 20)
DEFAULT_TRIALS = 5
MIN_SCORED = 5  # archs left to score on a test device after its k measurements
FEW_SCORED = 50  # fewer left than this: rho is scored anyway, with a warning that it is a noisy number


class EvaluationError(UserError):
    """An evaluation that cannot run as asked (k too large, no trials, ...)."""


def pretrain_sample(full: dict[str, pd.Series], n: int, seed: int) -> TrainTables:
    """N archs per train device drawn with ``seed`` (all of a device's archs if it has fewer)."""
    rng = np.random.default_rng([seed, 0x7E7])
    sample = {}
    for device, series in full.items():
        if n >= len(series):
            sample[device] = series
        else:
            picked = np.sort(rng.choice(len(series), size=n, replace=False))
            sample[device] = series.iloc[picked]
    return TrainTables(sample, full)


def held_out_pretraining(full: dict[str, pd.Series], held: str, space: str, *, family: bool = False) -> dict:
    """The train tables without ``held`` (and, with ``family``, without every device of its family).

    Leaving the family out (gpu, cpu, mobile, ... in the shipped ``devices.csv``) makes the held
    device unlike every device the method pretrains on. Empty when nothing is left.
    """
    mine = None
    if family:
        families = data.help_devices(space).set_index("device")["family"]
        mine = families.get(held)  # a device missing from devices.csv has no family to leave out
    return {d: s for d, s in full.items() if d != held and (mine is None or families.get(d) != mine)}


def spearman(pred, truth) -> float:
    """Spearman rho; 0.0 for a constant prediction (no ranking information), NaN (without scipy's
    warning) for a constant truth, which has no ranking to score."""
    pred = np.asarray(pred, dtype=np.float64)
    if not np.all(np.isfinite(pred)):
        raise EvaluationError("the method predicted non-finite values")
    if len(truth) < 2 or np.ptp(np.asarray(truth, dtype=np.float64)) == 0:
        return float("nan")
    if np.ptp(pred) == 0:
        return 0.0
    return float(spearmanr(pred, truth).statistic)


def sample_counts(samples) -> list[int]:
    """The k values of ``samples``, one k or several, sorted and each once (``samples=10`` was "'int' object is
    not iterable")."""
    return sorted({int(k) for k in ([samples] if isinstance(samples, (int, np.integer)) else samples)})


def check_scorable(device: str, truth: pd.Series, k: int) -> None:
    """Refuse a test device on which rho after k measurements can be undefined or next to meaningless.

    Rho is scored over the archs left after k; it needs at least ``MIN_SCORED`` of them (over 2 it
    is only +-1), and they must not all share one latency, whichever k are measured.
    """
    n = len(truth)
    if n - k < MIN_SCORED:
        left = "nothing" if n <= k else f"only {n - k} architecture{'s' if n - k > 1 else ''}"
        # k is at least 1: a table of MIN_SCORED archs or fewer cannot be scored with any k
        fix = (f"k at most {n - MIN_SCORED}" if n > MIN_SCORED
               else f"measure at least {k + MIN_SCORED} of its architectures, or leave the device out")
        raise EvaluationError(f"k={k} leaves {left} to score on test device {device!r}: its table has only {n} "
                              f"architecture{'s' if n > 1 else ''} and rho needs {MIN_SCORED} left ({fix})")
    counts = truth.value_counts()
    if len(counts) == 1:
        raise EvaluationError(f"test device {device!r} has one latency for every architecture "
                              f"({counts.index[0]:g} ms): there is no ranking to score")
    if counts.iloc[0] >= n - k:
        raise EvaluationError(f"{counts.iloc[0]} of the {n} latencies of test device {device!r} are "
                              f"{counts.index[0]:g} ms: k={k} measurements can leave only that value to score")


def evaluate(make_method: Callable[[], FewShotMethod] | FewShotMethod | str, task: Task | str, *,
             samples=DEFAULT_SAMPLES, trials: int = DEFAULT_TRIALS, n_pretrain: int | None = None, first_seed: int = 0,
             method_name: str | None = None) -> list[dict]:
    """Run the strict protocol; one result dict per k (see module docstring).

    Parameters
    ----------
    make_method : callable, FewShotMethod or str
        Returns a fresh, unfitted method (called once per trial); or an unfitted method (a deep copy per
        trial, :func:`method_factory`), or a method's registered name (``registry.METHODS``).
    task : Task or str
        Train devices, test devices and their tables; or a built-in task's name (``tasks.TASKS``).
    samples : int or iterable of int
        The k values (measurements per test device).
    trials : int
        Number of seeds, ``first_seed .. first_seed + trials - 1``.
    n_pretrain : int, optional
        Pretraining archs per train device (default 900 NB201, 4000 FBNet).

    Raises
    ------
    EvaluationError
        k < 1, trials < 1, or a test device that rho cannot score after k measurements (fewer than
        ``MIN_SCORED`` archs left, or one latency for all of them: ``check_scorable``).
    """
    make_method, task = _method_maker(make_method), get_task(task) if isinstance(task, str) else task
    samples = sample_counts(samples)
    if not samples or samples[0] < 1:
        raise EvaluationError(f"every k must be a positive integer, got {samples}")
    if trials < 1:
        raise EvaluationError(f"trials must be at least 1, got {trials}")
    n_pretrain = DEFAULT_N_PRETRAIN[task.space] if n_pretrain is None else int(n_pretrain)
    if n_pretrain < 1:
        raise EvaluationError(f"n_pretrain must be positive, got {n_pretrain}")
    train_table, test_table = task.tables()
    full = data.by_device(train_table, task.train_devices)
    targets = data.by_device(test_table, task.test_devices)
    for device, truth in targets.items():
        check_scorable(device, truth, samples[-1])
        left = len(truth) - samples[-1]
        if left < FEW_SCORED:  # a small custom table (a 30-arch campaign export): the numbers stand, with a word
            log.warning("k=%d leaves only %d architectures to score on test device %r (its table has %d): rho over "
                        "fewer than %d is a noisy number; measure more of its architectures for a steadier one",
                        samples[-1], left, device, len(truth), FEW_SCORED)
    seeds = []  # grown trial by trial: memory follows the work done, whatever --trials says
    scores = {k: [] for k in samples}
    seconds = {k: 0.0 for k in samples}
    name = method_name
    for t in range(trials):
        seed = first_seed + t
        seeds.append(seed)
        start = time.perf_counter()
        method = _seeded(make_method(), seed)
        name = name or method.name
        method.pretrain(task.space, pretrain_sample(full, n_pretrain, seed))
        pretrain_s = time.perf_counter() - start
        for k in samples:
            seconds[k] += pretrain_s
            start = time.perf_counter()
            scores[k].append([score_device(method, truth, k, seed=seed, device_number=j)
                              for j, truth in enumerate(targets.values())])
            seconds[k] += time.perf_counter() - start
        log.info("%s %s trial %d (seed %d): %s", task.name, name, t, seed,
                 {k: round(float(np.mean(scores[k][t])), 4) for k in samples})
    settings = {"space": task.space, "n_pretrain": n_pretrain, "train_devices": list(task.train_devices),
                "test_devices": list(targets), "protocol": "strict",
                "params": _params_of(make_method),
                "seconds": "pretraining + choosing + adaptation + prediction, summed over trials"}
    results = []
    for k in samples:
        per_trial = np.asarray(scores[k]).mean(axis=1)
        per_device = np.asarray(scores[k]).mean(axis=0)
        results.append({
            "task": task.name, "method": name, "k": k, "trials": trials,
            "mean": float(per_device.mean()), "std": float(per_trial.std(ddof=1)) if trials > 1 else 0.0,
            "per_device": {d: float(v) for d, v in zip(targets, per_device)},
            "settings": settings, "seeds": seeds, "seconds": round(seconds[k], 3),
        })
    return results


def score_device(method: FewShotMethod, truth: pd.Series, k: int, *, seed: int, device_number: int) -> float:
    """Adapt a copy of ``method`` on k archs of one test device; rho on all the others."""
    rng = np.random.default_rng([seed, device_number, k])
    candidates = list(truth.index)
    chosen = list(method.choose(k, candidates, rng))
    if len(chosen) != k or len(set(chosen)) != k:
        raise EvaluationError(f"{type(method).__name__}.choose returned {len(set(chosen))} distinct archs, not k={k}")
    unknown = set(chosen) - set(candidates)
    if unknown:
        raise EvaluationError(f"{type(method).__name__}.choose named archs outside the test table: "
                              f"{sorted(map(str, unknown))[:3]}")
    try:
        adapted = method.adapt(chosen, truth.loc[chosen].to_numpy(), device=str(truth.name))
    except UnusableMeasurementsError as exc:  # archs it cannot adapt on (HELP: its references), as `hwl adapt` says
        raise EvaluationError(f"{type(method).__name__} cannot adapt to test device {truth.name!r} on k={k} "
                              f"architectures of its table: {exc}") from None
    if adapted is method:
        raise EvaluationError(f"{type(method).__name__}.adapt must return a new object (strict protocol rule 3)")
    rest = truth.drop(index=chosen)
    return spearman(adapted.predict(list(rest.index)), rest.to_numpy())


def _method_maker(method) -> Callable[[], FewShotMethod]:
    """What ``evaluate`` calls once per trial for a fresh method: ``method`` itself, a copy of a method (it was
    called: 'PhysBayes' object is not callable), or a registered name's new method."""
    if isinstance(method, FewShotMethod):
        return method_factory(method)
    if isinstance(method, str):
        registry.get_class(registry.chosen(method))  # an unknown name is one line naming the valid ones
        return lambda: registry.get_method(method)
    if not callable(method):
        raise EvaluationError(f"evaluate needs a method, its name or a function returning a new one; got "
                              f"{type(method).__name__} {method!r}")
    return method


def _seeded(method: FewShotMethod, seed: int) -> FewShotMethod:
    """A method with ``random_state=None`` gets the trial seed, so trials differ but repeat."""
    try:
        if "random_state" in method.get_params(deep=False) and method.get_params()["random_state"] is None:
            method.set_params(random_state=seed)
    except AttributeError:
        pass
    return method


def _params_of(make_method) -> dict:
    try:
        params = make_method().get_params(deep=False)
    except Exception:  # a factory that is not an estimator: settings stay informative only
        return {}
    return {k: v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v)
            for k, v in params.items()}


def method_factory(method: FewShotMethod) -> Callable[[], FewShotMethod]:
    """A factory of unfitted copies of ``method`` (its parameters kept)."""
    return lambda: copy.deepcopy(method)


__all__ = ["DEFAULT_N_PRETRAIN", "DEFAULT_SAMPLES", "DEFAULT_TRIALS", "EvaluationError", "FEW_SCORED", "MIN_SCORED",
           "check_scorable", "evaluate", "method_factory", "pretrain_sample", "sample_counts", "score_device",
           "spearman"]
