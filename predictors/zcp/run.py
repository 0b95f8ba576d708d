"""Compute proxies for many architectures: one model at a time per worker, as Ray tasks.

:func:`score_arch` scores one architecture in the calling process (seeded build, every proxy on
a deep copy, model freed after). :func:`run_proxies` fans it out as Ray tasks over the local
machine's cores (or an already connected cluster): one CPU and one torch thread per task, at
most ``max_in_flight`` tasks submitted at a time (backpressure, so 15,625 architectures never
sit in the object store at once), results taken as they complete with ``ray.wait`` and a
timeout, and written to the store by the driver as they arrive. Architectures whose scores are
already in the store are skipped, so a killed run resumes where it stopped.

Memory: a worker holds one network and one deep copy at a time; workers are recycled every
``WORKER_MAX_CALLS`` tasks so fragmentation cannot grow without bound. Each result carries the
worker's peak RSS.
"""
from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from predictors.zcp.errors import ZCPError
from predictors.zcp.inputs import BatchSpec, load_batch
from predictors.zcp.names import check_proxies
from spaces import fbnet, get_space, nb201
from spaces.cost import dataset_of

log = logging.getLogger(__name__)

WORKER_MAX_CALLS = 200
DEFAULT_TASK_TIMEOUT_S = 900.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_model(space: str, arch, dataset: str | None, seed: int):
    """The torch network of ``arch``, weights initialised from ``seed``."""
    import torch

    torch.manual_seed(int(seed))
    if get_space(space) is nb201:
        from spaces.nb201_net import build_nb201
        return build_nb201(arch, dataset)
    from spaces.fbnet_net import build_fbnet
    return build_fbnet(arch, dataset)


def score_arch(space: str, arch, inputs, targets, *, dataset: str | None = None, proxies=None,
               seed: int = 0) -> dict:
    """Scores of one architecture: ``{"arch", "scores", "seconds", "peak_rss_mb"}``."""
    from predictors.zcp.proxies import score_model

    model = build_model(space, arch, dataset, seed)
    try:
        scores, seconds = score_model(model, inputs, targets, proxies)
    finally:
        # Reference counting frees the network here; a full gc.collect() per architecture
        # would cost ~0.4 s (more than the cheap proxies), so workers are recycled instead.
        del model
    return {"arch": arch, "scores": scores, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def _score_in_worker(space, arch, batch, dataset, proxies, seed) -> dict:
    import torch

    torch.set_num_threads(1)  # one core per task: Ray runs one task per CPU
    inputs, targets = batch
    return score_arch(space, arch, inputs, targets, dataset=dataset, proxies=proxies, seed=seed)


@dataclass
class RunReport:
    """What :func:`run_proxies` did.

    Attributes
    ----------
    results : list of dict
        One :func:`score_arch` dict per architecture computed in this run.
    skipped : int
        Architectures already complete in the store.
    failed : dict
        arch -> error message of tasks that raised (rerun to retry them).
    seconds : float
        Wall time of the run.
    workers : int
        CPUs Ray scheduled on.
    """

    results: list = field(default_factory=list)
    skipped: int = 0
    failed: dict = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0


def run_proxies(space: str, archs, *, dataset: str | None = None, proxies=None, batch: BatchSpec | None = None,
                store=None, workers: int | None = None, seed: int = 0, max_in_flight: int | None = None,
                task_timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
                on_result: Callable[[dict], None] | None = None) -> RunReport:
    """Score ``archs`` with Ray tasks; write each to ``store`` (a ``ProxyStore``) as it arrives.

    Parameters
    ----------
    space : {"nb201", "fbnet"}
    archs : sequence
        Canonical keys (``spaces.resolve_archs``).
    dataset : str, optional
        Dataset the networks are built for (classes, resolution); the space's default if None.
    proxies : sequence of str, optional
        Default: all 12.
    batch : BatchSpec, optional
        Input batch (default: synthetic, 64 images, seed 0).
    store : ProxyStore, optional
        Done archs are skipped and new scores stored; without it nothing is kept but the report.
    workers : int, optional
        CPUs for a local Ray started here (default: every core). Ignored when Ray is already
        initialised (the run then uses that cluster and leaves it running).
    seed : int
        Weight-initialisation seed (the same for every architecture).
    max_in_flight : int, optional
        Tasks submitted but not finished (default: 2 x workers).
    task_timeout_s : float
        If no task finishes for this long, the run stops with ``ZCPError``.

    Raises
    ------
    ZCPError
        Unknown proxy, bad data, or a stalled run.
    """
    import ray

    from harness.ray_cluster import ray_session

    space = get_space(space).NAME
    ds = dataset_of(space, dataset)
    proxies = check_proxies(proxies)
    batch = batch or BatchSpec()
    todo = list(archs)
    report = RunReport()
    run_key = batch.run_key(seed)  # the weights' seed too: other weights score otherwise
    if store is not None:
        done = store.done_archs(space, ds.name, run_key, proxies)
        keep = [a for a in todo if str(a) not in done]
        report.skipped = len(todo) - len(keep)
        todo = keep
    if not todo:
        return report
    inputs = load_batch(space, ds.name, batch)  # load (and check) once, before starting Ray
    # ray_session keeps a caller's own Ray, and puts the CLI's SIGTERM handler (a clean stop) back
    with ray_session(num_cpus=workers or os.cpu_count() or 1):
        start = time.perf_counter()
        try:
            report.workers = int(ray.cluster_resources().get("CPU", 1))
            limit = max_in_flight or 2 * report.workers
            remote = ray.remote(num_cpus=1, max_calls=WORKER_MAX_CALLS, max_retries=0)(_score_in_worker)
            batch_ref = ray.put(inputs)
            pending: dict = {}
            queue = iter(todo)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < limit:
                    arch = next(queue, None)
                    if arch is None:
                        exhausted = True
                        break
                    pending[remote.remote(space, arch, batch_ref, ds.name, proxies, seed)] = arch
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=task_timeout_s)
                if not ready:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise ZCPError(f"no proxy task finished in {task_timeout_s:.0f} s ({len(pending)} running); "
                                   "the finished architectures are stored: rerun to resume")
                for ref in ready:
                    arch = pending.pop(ref)
                    try:
                        result = ray.get(ref, timeout=task_timeout_s)
                    except (ray.exceptions.RayError, ZCPError) as exc:
                        log.warning("proxies of %s failed: %s", arch, exc)
                        report.failed[arch] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        continue
                    if store is not None:
                        store.add(space, ds.name, run_key, arch, result["scores"], result["seconds"],
                                  result["peak_rss_mb"])
                    report.results.append(result)
                    if on_result is not None:
                        on_result(result)
        finally:
            report.seconds = time.perf_counter() - start
    return report


def key_columns(space: str, archs) -> pd.DataFrame:
    """The architecture key columns of an output table (NB201: arch_index, arch_str;
    FBNet: arch_ops, op_idx_key)."""
    archs = list(archs)
    if get_space(space) is nb201:
        index = [int(a) for a in archs]
        return pd.DataFrame({"arch_index": index, "arch_str": [nb201.to_string(i) for i in index]})
    keys = [fbnet.canonical(str(a)) for a in archs]
    return pd.DataFrame({"arch_ops": keys, "op_idx_key": [fbnet.to_idx_key(fbnet.parse(k)) for k in keys]})


def wide_table(space: str, long: pd.DataFrame, archs=None) -> pd.DataFrame:
    """One row per architecture (key columns first), one column per proxy, from a long table
    with ``arch``, ``proxy``, ``score`` columns; restricted to (and ordered as) ``archs``."""
    if len(long) == 0:
        raise ZCPError("no proxy scores to tabulate")
    wide = long.pivot_table(index="arch", columns="proxy", values="score", aggfunc="first", dropna=False)
    wide.columns = [str(c) for c in wide.columns]
    wide.index = [str(a) for a in wide.index]
    order = [str(a) for a in (archs if archs is not None else wide.index)]
    missing = [a for a in order if a not in wide.index]
    if missing:
        raise ZCPError(f"{len(missing)} architecture(s) have no stored scores, e.g. {missing[0]!r}")
    wide = wide.loc[order]
    keys = key_columns(space, [int(a) for a in order] if get_space(space) is nb201 else order)
    return pd.concat([keys, wide.reset_index(drop=True)], axis=1)


def results_long(space: str, results) -> pd.DataFrame:
    """Long table (arch, proxy, score, seconds) of :func:`score_arch` results."""
    rows = [(str(r["arch"]), name, value, r["seconds"][name]) for r in results for name, value in r["scores"].items()]
    return pd.DataFrame(rows, columns=["arch", "proxy", "score", "seconds"])


__all__ = ["DEFAULT_TASK_TIMEOUT_S", "RunReport", "build_model", "key_columns", "peak_rss_mb", "results_long",
           "run_proxies", "score_arch", "wide_table"]
