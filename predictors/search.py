"""Predictor-guided, hardware-aware search (paper section 5, "NAS search effectiveness").

Sample-based loop of the paper (after BRP-NAS): evaluate 10 random candidates, then repeatedly
train the accuracy predictor on everything evaluated so far, predict every candidate not yet
evaluated, and evaluate the 10 predicted best. Hardware awareness: a latency predictor is
adapted to the target device with ``n_latency`` (20) measurements of it, and only candidates
predicted to meet ``max_latency_ms`` are considered (a measured latency replaces the prediction).
Both kinds of evaluation count against the budget: the latency measurements first, then one
per accuracy evaluation, and one more latency measurement whenever an evaluated candidate becomes
the best so far without a measured latency: a latency predictor adapted with 20 samples is not
exact near the limit, so the answer is always confirmed on the device (a candidate measured over
the limit drops out). Because of that confirmation, candidates predicted up to ``slack`` (10 %)
over the limit are searched too: the best architectures sit right at the limit. The answer is
the best evaluated candidate that is measured (or, when the budget ran out first, predicted) to
be feasible.

The "evaluations" are look-ups in tables (:class:`Oracle`), so the search can be benchmarked
against random search (same latency filter, same budget) and against the true optimum under
the constraint, which the tables reveal.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from harness.errors import UserError
from predictors.accuracy import AccuracyMLP

log = logging.getLogger(__name__)

DEFAULT_BATCH = 10
DEFAULT_LATENCY_SAMPLES = 20
NEAR_OPTIMUM_PCT = 0.5
DEFAULT_SLACK = 0.1


class SearchError(UserError):
    """A search that cannot run as asked (no feasible candidate, budget too small, ...)."""


@dataclass(frozen=True)
class Problem:
    """Candidates with their true accuracy (%) and true latency (ms) on the device.

    Parameters
    ----------
    accuracy : pandas.Series
        True accuracy per candidate arch (the index is the candidate list).
    latency_ms : pandas.Series
        True latency on the target device, same index.
    max_latency_ms : float
    """

    accuracy: pd.Series
    latency_ms: pd.Series
    max_latency_ms: float

    @classmethod
    def from_tables(cls, accuracy: pd.Series, latency_ms: pd.Series, max_latency_ms: float, candidates=None):
        """Candidates known to both tables (optionally restricted to ``candidates``): a Series each, indexed by arch;
        a missing value (NaN: a failed measurement) leaves its arch out."""
        if not max_latency_ms > 0:
            raise SearchError(f"the latency limit must be a positive number of ms, got {max_latency_ms}")
        for what, values in (("accuracy", accuracy), ("latency_ms", latency_ms)):
            if not isinstance(values, pd.Series):  # a whole accuracy table was taken as one, and searched on
                raise SearchError(f"{what} must be a pandas Series indexed by arch (one column of a table, as "
                                  f"accuracy['cifar10']), got {type(values).__name__}")
        # a NaN latency was a candidate, and the search then adapted on it; a NaN accuracy was searched on
        accuracy, latency_ms = accuracy.dropna(), latency_ms.dropna()
        common = accuracy.index.intersection(latency_ms.index)
        if candidates is not None and len(common):
            candidates = pd.Index(list(candidates))
            if not len(kept := common.intersection(candidates)):  # it said no arch had both, which they had
                raise SearchError(f"none of the {len(candidates)} candidates is among the {len(common)} archs with "
                                  f"both an accuracy and a latency: give them as the tables' index names them "
                                  f"({common.tolist()[0]!r}; a candidate was {candidates.tolist()[0]!r})")
            common = kept
        if len(common) == 0:
            raise SearchError("no architecture has both an accuracy and a latency")
        common = common.sort_values()
        return cls(accuracy.loc[common].astype(np.float64), latency_ms.loc[common].astype(np.float64),
                   float(max_latency_ms))

    @property
    def candidates(self) -> list:
        return list(self.accuracy.index)

    def optimum(self) -> tuple[object, float, float]:
        """(arch, accuracy, latency_ms) of the truly best feasible candidate."""
        feasible = self.latency_ms <= self.max_latency_ms
        if not feasible.any():
            raise SearchError(f"no candidate meets {self.max_latency_ms} ms on this device (fastest: "
                              f"{self.latency_ms.min():.3g} ms)")
        arch = self.accuracy[feasible].idxmax()
        return arch, float(self.accuracy[arch]), float(self.latency_ms[arch])


class Oracle:
    """Evaluations by table look-up, each distinct one counted once."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.accuracy_evals: dict = {}
        self.latency_evals: dict = {}

    @property
    def used(self) -> int:
        return len(self.accuracy_evals) + len(self.latency_evals)

    def accuracy(self, arch) -> float:
        self.accuracy_evals[arch] = float(self.problem.accuracy[arch])
        return self.accuracy_evals[arch]

    def latency(self, arch) -> float:
        self.latency_evals[arch] = float(self.problem.latency_ms[arch])
        return self.latency_evals[arch]


@dataclass
class SearchResult:
    """Outcome of one search run.

    Attributes
    ----------
    arch : object
        The answer: best evaluated candidate predicted feasible (None if none was found).
    accuracy, latency_ms : float
        Its true accuracy and true latency.
    feasible : bool
        Whether its true latency meets the limit.
    evaluations : int
        Evaluations used (latency measurements + accuracy evaluations).
    trajectory : list of tuple
        (evaluations used, answer arch) after every accuracy evaluation.
    """

    arch: object
    accuracy: float
    latency_ms: float
    feasible: bool
    evaluations: int
    trajectory: list = field(default_factory=list)

    def evals_to_near_optimum(self, problem: Problem, pct: float = NEAR_OPTIMUM_PCT):
        """Evaluations after which the answer is truly feasible and within ``pct`` accuracy points of the
        constrained optimum and stays so to the end of the run, the answer it returns; None if it does not end
        there. (The first such answer was counted: a run whose answer moved on to an unconfirmed candidate over
        the limit counted as within 0.5 % beside its infeasible answer.)"""
        _, best, _ = problem.optimum()
        since = None
        for used, arch in self.trajectory:
            near = (arch is not None and problem.latency_ms[arch] <= problem.max_latency_ms
                    and problem.accuracy[arch] >= best - pct)
            since = (used if since is None else since) if near else None
        return since


def adapt_latency(method, oracle: Oracle, n_latency: int, rng: np.random.Generator, device: str | None = None):
    """Measure ``n_latency`` candidates chosen by the (pretrained) method; the adapted copy."""
    archs = list(method.choose(n_latency, oracle.problem.candidates, rng))
    latencies = [oracle.latency(a) for a in archs]
    return method.adapt(archs, latencies, device=device)


class LatencyView:
    """What the search believes about latency: predictions, overridden by measurements.

    ``in_pool``: worth evaluating (predicted within ``(1 + slack)`` x the limit, and not measured
    over it); the slack lets candidates just above a slightly pessimistic prediction in, since
    the answer is confirmed on the device anyway. ``eligible``: may be the answer (measured within
    the limit, or not measured and predicted within it).
    """

    def __init__(self, predicted_ms, oracle: Oracle, slack: float):
        self.oracle = oracle
        self.limit = oracle.problem.max_latency_ms
        self.predicted = pd.Series(np.asarray(predicted_ms, dtype=np.float64), index=oracle.problem.candidates)
        self.slack = float(slack)

    def latency(self, arch) -> float:
        return self.oracle.latency_evals.get(arch, self.predicted[arch])

    def in_pool(self, arch) -> bool:
        return self.latency(arch) <= self.limit * (1.0 + (0.0 if arch in self.oracle.latency_evals else self.slack))

    def eligible(self, arch) -> bool:
        return self.latency(arch) <= self.limit


def _best(oracle: Oracle, keep) -> object:
    scored = {a: acc for a, acc in oracle.accuracy_evals.items() if keep(a)}
    return max(scored, key=scored.get) if scored else None


def _evaluate(view: LatencyView, arch, budget: int, trajectory: list) -> None:
    """One accuracy evaluation; then measure the best evaluated candidate's latency while it is
    unconfirmed and the budget lasts, so the answer is confirmed on the device."""
    oracle = view.oracle
    oracle.accuracy(arch)
    best = _best(oracle, view.in_pool)
    while best is not None and best not in oracle.latency_evals and oracle.used < budget:
        oracle.latency(best)
        best = _best(oracle, view.in_pool)
    trajectory.append((oracle.used, _best(oracle, view.eligible)))


def _check_budget(budget: int, n_latency: int) -> None:
    if n_latency < 1:
        raise SearchError(f"the latency predictor needs at least 1 measurement, got {n_latency}")
    if budget <= n_latency:
        raise SearchError(f"a budget of {budget} evaluations leaves nothing for accuracy after {n_latency} "
                          "latency measurements: raise --budget")


def check_candidates(problem: Problem, n_latency: int, *, proxies: bool = False) -> None:
    """Refuse latency samples that measure every candidate: the candidates are only the archs the
    device's table has a latency for (an evaluation is a look-up), and a small table may have few;
    with ``proxies`` (a zcp encoding) only those the proxy table scored, which may be fewer still."""
    n = len(problem.candidates)
    if n_latency >= n:
        what = ("a latency in the device's table, an accuracy and proxy scores" if proxies
                else "both a latency in the device's table and an accuracy")
        larger = "latency or proxy table" if proxies else "latency table"
        raise SearchError(f"{n} candidate architectures (the archs with {what}) are too few for {n_latency} latency "
                          f"measurements and a search: give a larger {larger} or --latency-samples below {n}")


def check_spendable(problem: Problem, budget: int) -> None:
    """Refuse a budget no search over the candidates can spend. Each evaluation is one candidate's accuracy or its
    latency, each counted once, so a search ends after at most twice the candidates; asked for more (a budget of
    10**9 meant as "no limit"), it went on until it had evaluated every candidate, training the accuracy predictor
    after every batch of 10 (on NB201's 15,625: still running after 5 minutes, where a budget of 50 takes 14 s)."""
    most = 2 * len(problem.candidates)
    if budget > most:
        raise SearchError(f"--budget {budget} is more than a search over {len(problem.candidates)} candidate "
                          f"architectures can spend (each one's accuracy and latency once: {most} evaluations); "
                          f"give at most {most}")


def _finish(view: LatencyView, trajectory: list) -> SearchResult:
    oracle, p = view.oracle, view.oracle.problem
    arch = _best(oracle, view.eligible)
    if arch is None:
        return SearchResult(None, float("nan"), float("nan"), False, oracle.used, trajectory)
    return SearchResult(arch, float(p.accuracy[arch]), float(p.latency_ms[arch]),
                        bool(p.latency_ms[arch] <= p.max_latency_ms), oracle.used, trajectory)


def _start(problem: Problem, latency_method, budget: int, n_latency: int, seed: int, device, slack: float):
    _check_budget(budget, n_latency)
    check_candidates(problem, n_latency)
    check_spendable(problem, budget)
    if slack < 0:
        raise SearchError(f"the latency slack must be >= 0, got {slack}")
    rng = np.random.default_rng([seed, 0x5EA])
    oracle = Oracle(problem)
    adapted = adapt_latency(latency_method, oracle, n_latency, rng, device)
    view = LatencyView(adapted.predict(problem.candidates), oracle, slack)
    pool = [a for a in problem.candidates if view.in_pool(a)]
    if not pool:  # the run ends with no answer (reported as such), not with an error
        log.warning("the latency predictor finds no candidate under %g ms", problem.max_latency_ms)
    return rng, view, pool


def predictor_search(problem: Problem, latency_method, *, budget: int, encoding: str = "vec", proxies=None,
                     n_latency: int = DEFAULT_LATENCY_SAMPLES, batch: int = DEFAULT_BATCH, epochs: int = 250,
                     seed: int = 0, device: str | None = None, slack: float = DEFAULT_SLACK) -> SearchResult:
    """The paper's sample-based loop under a latency limit (see the module docstring).

    Parameters
    ----------
    problem : Problem
    latency_method : FewShotMethod
        Pretrained latency method predicting ms; adapted here with ``n_latency`` measurements.
    budget : int
        Total evaluations (latency measurements + accuracy evaluations).
    encoding : {"vec", "zcp", "zcpvec"}
        Encoding of the accuracy predictor (zcp ones need ``proxies`` for every candidate).
    slack : float
        Candidates predicted up to ``(1 + slack)`` x the limit are searched (see ``LatencyView``).
    """
    rng, view, pool = _start(problem, latency_method, budget, n_latency, seed, device, slack)
    oracle = view.oracle
    trajectory = []

    def evaluate(archs):
        for arch in archs:
            if oracle.used < budget:
                _evaluate(view, arch, budget, trajectory)

    if not pool:
        return _finish(view, trajectory)
    left = budget - oracle.used
    first = [pool[i] for i in rng.choice(len(pool), size=min(batch, left, len(pool)), replace=False)]
    evaluate(first)
    while oracle.used < budget:
        rest = [a for a in pool if a not in oracle.accuracy_evals and view.in_pool(a)]
        if not rest:
            break
        seen = list(oracle.accuracy_evals)
        # Ranks, not raw accuracies: NB201 accuracy is bimodal (degenerate cells sit at ~10 %), and
        # a squared loss on raw values spends the small sample fitting that gap, not the ranking.
        ranks = rankdata([oracle.accuracy_evals[a] for a in seen]) / len(seen)
        model = AccuracyMLP(encoding, proxies=proxies, epochs=epochs, random_state=seed).fit(seen, ranks)
        order = np.argsort(-model.predict(rest), kind="stable")
        evaluate([rest[i] for i in order[:min(batch, budget - oracle.used)]])
    return _finish(view, trajectory)


def random_search(problem: Problem, latency_method, *, budget: int, n_latency: int = DEFAULT_LATENCY_SAMPLES,
                  seed: int = 0, device: str | None = None, slack: float = DEFAULT_SLACK) -> SearchResult:
    """Random candidates from the same latency-filtered pool, same confirmation and budget."""
    rng, view, pool = _start(problem, latency_method, budget, n_latency, seed, device, slack)
    trajectory = []
    for i in rng.permutation(len(pool)):
        if view.oracle.used >= budget:
            break
        if view.in_pool(pool[i]):
            _evaluate(view, pool[i], budget, trajectory)
    return _finish(view, trajectory)


def compare(problem: Problem, latency_method, *, budget: int, seeds=range(10), encoding: str = "vec",
            proxies=None, n_latency: int = DEFAULT_LATENCY_SAMPLES, batch: int = DEFAULT_BATCH, epochs: int = 250,
            device: str | None = None, slack: float = DEFAULT_SLACK) -> dict:
    """Predictor search and random search over ``seeds`` against the true constrained optimum."""
    opt_arch, opt_acc, opt_lat = problem.optimum()
    runs = {"predictor": [], "random": []}
    for seed in seeds:
        runs["predictor"].append(predictor_search(problem, latency_method, budget=budget, encoding=encoding,
                                                  proxies=proxies, n_latency=n_latency, batch=batch, epochs=epochs,
                                                  seed=seed, device=device, slack=slack))
        runs["random"].append(random_search(problem, latency_method, budget=budget, n_latency=n_latency, seed=seed,
                                            device=device, slack=slack))
    summary = {name: summarise_runs(problem, results) for name, results in runs.items()}
    return {"optimum": {"arch": _plain(opt_arch), "accuracy": opt_acc, "latency_ms": opt_lat},
            "candidates": len(problem.candidates),
            "feasible_candidates": int((problem.latency_ms <= problem.max_latency_ms).sum()),
            "budget": budget, "n_latency": n_latency, "encoding": encoding, "seeds": list(seeds),
            "summary": summary, "runs": runs}


def summarise_runs(problem: Problem, results: list[SearchResult]) -> dict:
    """Mean true accuracy, feasibility rate, regret and evaluations to within 0.5 % over runs."""
    _, opt_acc, _ = problem.optimum()
    acc = np.array([r.accuracy if r.feasible else np.nan for r in results])
    near = [r.evals_to_near_optimum(problem) for r in results]
    reached = [n for n in near if n is not None]
    return {"runs": len(results), "feasible_rate": float(np.mean([r.feasible for r in results])),
            "mean_accuracy": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "mean_regret": float(opt_acc - np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "near_optimum_rate": len(reached) / len(results) if results else 0.0,
            "mean_evals_to_near_optimum": float(np.mean(reached)) if reached else None,
            "evals_to_near_optimum": near}


def merged_tables(shipped: pd.DataFrame, given: pd.DataFrame) -> pd.DataFrame:
    """The shipped table's devices with the given table's: the given one wins for every device it
    holds (a lab's own raspi4 measurements), so no device gets two latencies for one arch."""
    return pd.concat([shipped[~shipped["device"].isin(set(given["device"]))], given], ignore_index=True)


def setup(*, device: str, max_latency_ms: float, accuracy_table, dataset: str = "cifar10", space: str = "nb201",
          latency_table=None, store=None, train_devices=None, method: str | None = None, n_pretrain: int = 900,
          encoding: str = "vec", zcp_table=None, zcp_store=None, zcp_run: str | None = None, seed: int = 0,
          budget: int | None = None, n_latency: int = DEFAULT_LATENCY_SAMPLES):
    """Everything a search needs: ``(problem, pretrained latency method, proxies or None)``.

    The target device's latencies come from ``latency_table`` (a file), ``store`` or the shipped
    HELP table; the candidates are the archs that table has a latency for (and that have an
    accuracy). The latency method (registry name, default the recommended one) is pretrained on
    ``train_devices`` (default: every other device of the HELP table and of the given table),
    ``n_pretrain`` archs each. Only NB201 has an accuracy table. ``budget`` and ``n_latency`` are
    checked against the candidates before the pretraining.
    """
    from predictors import data, registry
    from predictors.accuracy import read_accuracy_table
    from predictors.protocol import pretrain_sample

    if space != "nb201":
        raise SearchError(f"search needs an accuracy table, and only nb201 has one (got --space {space})")
    if method in registry.RANK_ONLY:  # the limit is in ms: another device's ms or a FLOP count cannot meet it
        raise SearchError(f"method {method!r} ranks architectures but does not predict this device's latency in ms, "
                          "which the limit is checked against; use one of "
                          f"{', '.join(registry.latency_methods())}")
    registry.get_class(registry.chosen(method), latency_only=True)  # an unknown name fails before any table is read
    accuracy = read_accuracy_table(accuracy_table)
    # in any case, as hwl export and hwl zcp read a dataset's name (imagenet16-120)
    dataset = next((c for c in accuracy.columns if c.lower() == str(dataset).lower()), dataset)
    if dataset not in accuracy.columns:
        raise SearchError(f"unknown dataset {dataset!r}; the accuracy table has {', '.join(accuracy.columns)}")
    if budget is not None:
        _check_budget(budget, n_latency)
    # as adapt --store: a measured device without a label is not 'unknown'
    from harness.unanswered_devices import read_answered
    target_table = read_answered(store, space, [device], lambda: data.load_table(space, path=latency_table,
                                                                                 store=store))
    target = data.by_device(target_table, [device])[device]
    proxies = None
    if encoding != "vec":
        from predictors.zcp import proxy_frame
        from predictors.zcp.table import parse_run_name

        dataset_run, input_key = parse_run_name(zcp_run) if zcp_run else (None, None)  # a store of several runs
        proxies = proxy_frame(space, store=zcp_store, path=zcp_table, dataset=dataset_run, input_key=input_key)
    candidates = None if proxies is None else proxies.index
    problem = Problem.from_tables(accuracy[dataset].dropna(), target, max_latency_ms, candidates)
    check_candidates(problem, n_latency, proxies=proxies is not None)
    if budget is not None:
        check_spendable(problem, budget)
    problem.optimum()  # no candidate under the limit: said before the pretraining, not after
    pool_table = data.help_table(space)
    if latency_table is not None or store is not None:
        pool_table = merged_tables(pool_table, target_table)
    if train_devices is None:
        train_devices = sorted(d for d in data.devices_of(pool_table) if d != device)  # not the file's row order
    elif device in train_devices:
        raise SearchError(f"the target device {device!r} cannot also be a train device")
    train = data.by_device(pool_table, train_devices)
    if store is not None:  # the store's table is a median over every setting (and import) of a device name
        from harness.device_settings import check_one_setting
        stored = set(data.devices_of(target_table))
        check_one_setting(store, space, [device, *(d for d in train_devices if d in stored)])
    latency_method = registry.get_method(method, random_state=seed).pretrain(space, pretrain_sample(train, n_pretrain,
                                                                                                    seed))
    return problem, latency_method, proxies


def _plain(arch):
    return int(arch) if isinstance(arch, (np.integer, int)) else arch


__all__ = ["DEFAULT_BATCH", "DEFAULT_LATENCY_SAMPLES", "DEFAULT_SLACK", "LatencyView", "NEAR_OPTIMUM_PCT", "Oracle",
           "Problem", "SearchError", "SearchResult", "adapt_latency", "check_candidates", "check_spendable",
           "compare", "merged_tables", "predictor_search", "random_search", "setup", "summarise_runs"]
