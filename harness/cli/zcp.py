"""`hwl zcp SPACE --archs ... [--store FILE] [--out FILE.parquet]`: compute zero-cost proxies."""
from __future__ import annotations

import sys

from harness.cli.common import add_archs_flags, non_negative_int, positive_float, user_path
from harness.paths import check_outputs
from harness.text import count
from predictors.zcp.errors import ZCPError
from predictors.zcp.names import PROXY_NAMES, check_proxies


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "zcp", help="compute zero-cost proxies of architectures (Ray tasks over all cores, resumable)",
        description="Compute the 12 zero-cost proxies of NB201 or FBNet architectures as Ray tasks. "
                    "Scores go into the store (rerun to resume) and/or a Parquet table with the "
                    "architecture key and one column per proxy.")
    p.add_argument("space", choices=["nb201", "fbnet"])
    add_archs_flags(p, required=True)
    p.add_argument("--dataset", help="dataset the networks are built for (nb201: cifar10 [default], cifar100, "
                                     "ImageNet16-120; fbnet: cifar100 [default], cifar10, imagenet)")
    p.add_argument("--proxies", help=f"comma-separated subset (default all: {','.join(PROXY_NAMES)})")
    p.add_argument("--data", type=user_path, help="CIFAR python directory or image folder (default: a synthetic batch)")
    p.add_argument("--batch-size", type=int, default=64, help="images per proxy batch (default 64)")
    p.add_argument("--data-seed", type=non_negative_int, default=0,
                   help="seed of the synthetic batch / image draw (default 0)")
    p.add_argument("--init-seed", type=non_negative_int, default=0, help="weight initialisation seed (default 0)")
    p.add_argument("--store", type=user_path, help="hwl store to write scores into (and resume from)")
    p.add_argument("--out", type=user_path, help="write a Parquet table: arch key columns + one column per proxy")
    p.add_argument("--workers", type=int, help="CPUs for the local Ray (default: all cores)")
    p.add_argument("--task-timeout-s", type=positive_float, default=900.0,
                   help="stop when no architecture finishes for this long (default 900)")
    p.set_defaults(func=run, resume_hint=_resume_hint)


def _resume_hint(args) -> str:
    if not args.store:
        return "no --store was given, so no score was kept"
    return f"every score computed so far is in the store{_progress(args)}; run the same command again to go on"


def _progress(args) -> str:
    """' (of 200 architectures 37 scored, 163 left)': the store's scores of the command's architectures."""
    from predictors.zcp import ProxyStore
    from spaces import get_space

    try:
        proxies, archs, dataset, batch = _inputs(args)
        with ProxyStore(args.store, readonly=True) as store:
            done = store.done_archs(get_space(args.space).NAME, dataset, batch.run_key(args.init_seed), proxies)
    except Exception:  # noqa: BLE001 - stopped before its inputs or store were made: the stop line says the rest
        return ""
    archs = {str(a) for a in archs}
    scored = len(archs & done)
    return f" (of {count(len(archs), 'architecture', 'architectures')} {scored:,} scored, {len(archs) - scored:,} left)"


def _inputs(args):
    """(proxies, architectures, dataset name, input batch) the command scores."""
    from predictors.zcp import BatchSpec
    from spaces import resolve_archs
    from spaces.cost import dataset_of

    # --proxies "" (an empty shell variable) names no proxy: refused, not taken as all 12
    proxies = check_proxies(None if args.proxies is None else [n.strip() for n in args.proxies.split(",") if n.strip()])
    archs = resolve_archs(args.space, args.archs, seed=args.seed)
    return proxies, archs, dataset_of(args.space, args.dataset).name, BatchSpec(args.data, args.batch_size,
                                                                                 args.data_seed)


def run(args) -> int:
    if not args.store and not args.out:
        raise ZCPError("give --store FILE and/or --out FILE.parquet, or the scores would be lost")
    if args.out and not str(args.out).lower().endswith((".parquet", ".pq")):
        raise ZCPError(f"--out {args.out}: the table is written as Parquet; give a .parquet file name")
    # never over the store it scores into: the Parquet took the store's place, every score gone
    check_outputs({"--out": args.out}, {"--store": args.store, "--data": args.data})
    if args.workers is not None and args.workers < 1:
        raise ZCPError(f"--workers must be at least 1, got {args.workers}")
    proxies, archs, dataset, batch = _inputs(args)
    # pandas and torch: imported to score, not to refuse a flag's value (--proxies nope)
    from predictors.zcp import ProxyStore, run_table, run_proxies, write_parquet

    store = ProxyStore(args.store) if args.store else None
    done = [0]

    def progress(result):
        done[0] += 1
        if sys.stderr.isatty() or done[0] % 50 == 0:
            print(f"\r{count(done[0], 'architecture', 'architectures')} scored",
                  end="" if sys.stderr.isatty() else "\n", file=sys.stderr)

    try:
        report = run_proxies(args.space, archs, dataset=dataset, proxies=proxies, batch=batch, store=store,
                             workers=args.workers, seed=args.init_seed, task_timeout_s=args.task_timeout_s,
                             on_result=progress)
        if done[0] and sys.stderr.isatty():
            print(file=sys.stderr)
        line = f"{len(report.results)} scored, {report.skipped} already in the store, {len(report.failed)} failed"
        if report.results or report.failed:  # a rerun that finds every score stored starts no worker to report on
            peak = max((r["peak_rss_mb"] for r in report.results), default=float("nan"))
            cpus = count(report.workers or 0, "CPU", "CPUs")
            line += f" in {report.seconds:.1f} s on {cpus}; peak worker RSS {peak:.0f} MiB"
        print(line)
        for arch, message in list(report.failed.items())[:5]:
            print(f"  failed {arch}: {message}")
        if args.out:
            run_key = batch.run_key(args.init_seed)
            wide = run_table(args.space, archs, report, store, dataset, run_key, proxies)
            path = write_parquet(wide, args.out, space=args.space, dataset=dataset, input_key=run_key)
            print(f"wrote {count(len(wide), 'row', 'rows')} x {count(len(proxies), 'proxy', 'proxies')} to {path}")
    finally:
        if store is not None:
            store.close()
    return 1 if report.failed else 0
