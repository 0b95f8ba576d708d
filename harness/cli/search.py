"""`hwl search`: predictor-guided search for the most accurate architecture under a latency limit."""
from __future__ import annotations

import functools

from harness.cli.common import (add_table_flags, comma_list, messages_to, non_negative_int, strict_json,
                                user_path)
from harness.errors import UserError
from harness.paths import check_outputs, written_whole
from harness.text import count

# The latency method is pretrained once and shared by every run, so its seed is not --seed: a run is then the
# same whichever seed the command started from.
PRETRAIN_SEED = 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="hardware-aware search: best accuracy under a latency limit on a device",
        description="The paper's sample-based loop: train an accuracy predictor on what has been evaluated, "
                    "predict every candidate, evaluate the top 10, repeat. Latency comes from a predictor "
                    "adapted to the device with --latency-samples of its measurements; accuracy from "
                    "--accuracy-table (../shared/data/nb201_accuracy.csv works). Both count against --budget. "
                    "Compared with random search and the true optimum under the limit over --seeds runs. "
                    "Evaluations are look-ups in the tables, so the candidates are the archs the device's "
                    "latency table holds.")
    p.add_argument("--space", choices=["nb201"], default="nb201", help="search space (default nb201, the only one)")
    p.add_argument("--dataset", default="cifar10", help="cifar10 (default), cifar100 or ImageNet16-120")
    p.add_argument("--device", required=True, help="target device (a device of the latency table)")
    p.add_argument("--max-latency-ms", type=float, required=True, help="latency limit on the device")
    p.add_argument("--budget", type=int, default=50, help="evaluations: latency measurements + accuracy (default 50)")
    p.add_argument("--accuracy-table", type=user_path, required=True, metavar="FILE",
                   help="NB201 accuracies (arch_index, cifar10_test_acc, ...); ../shared/data/nb201_accuracy.csv")
    add_table_flags(p, what="latency table of the device", file_flag="--latency-table")
    p.add_argument("--train-devices", help="comma-separated devices the latency method pretrains on "
                                           "(default: every other device)")
    p.add_argument("--method", help="latency method (registry name; default the recommended one)")
    p.add_argument("--latency-samples", type=int, default=20, help="device measurements to adapt with (default 20)")
    p.add_argument("--encoding", choices=["vec", "zcp", "zcpvec"], default="vec",
                   help="accuracy predictor encoding (default vec; zcp ones need --zcp-table or --zcp-store)")
    p.add_argument("--zcp-table", type=user_path, metavar="FILE", help="proxy table from `hwl zcp --out`")
    p.add_argument("--zcp-store", type=user_path, metavar="DB", help="store `hwl zcp --store` wrote to")
    p.add_argument("--zcp-run", metavar="RUN", help="which proxy run of a --zcp-store that holds several "
                                                     "(DATASET|INPUT_KEY, as the store's error lists them)")
    p.add_argument("--seeds", type=int, default=10, help="runs to average (default 10)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="first run's seed (default 0); a run depends on its own seed only, so --seed 3 --seeds 1 "
                        "repeats the fourth run of --seed 0 --seeds 10")
    p.add_argument("--json", type=user_path, metavar="PATH", help="write every run and the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    # before the search, and never over the store or a table it reads
    check_outputs({"--json": args.json}, {"--accuracy-table": args.accuracy_table, "--latency-table": args.table,
                                          "--store": args.store, "--zcp-table": args.zcp_table,
                                          "--zcp-store": args.zcp_store})
    if args.zcp_run and not args.zcp_store:
        raise UserError("--zcp-run picks a run of --zcp-store DB; give the store too")
    if args.encoding != "vec" and not (args.zcp_table or args.zcp_store):
        raise UserError(f"--encoding {args.encoding} needs --zcp-table FILE or --zcp-store DB (from `hwl zcp`)")
    if args.encoding == "vec" and (args.zcp_table or args.zcp_store):  # the search ran on Vec, the proxies unread
        flag = "--zcp-store" if args.zcp_store else "--zcp-table"
        raise UserError(f"{flag} gives the proxies of --encoding zcp or zcpvec; --encoding vec (the default) reads "
                        "none: add --encoding zcp, or leave the flag out")
    from predictors import registry

    registry.get_class(registry.chosen(args.method), latency_only=True)  # setup checks it too; here before sklearn
    from predictors.search import NEAR_OPTIMUM_PCT, compare, setup  # scipy, scikit-learn: after the flags' checks
    from spaces import nb201

    problem, method, proxies = setup(
        device=args.device, max_latency_ms=args.max_latency_ms, accuracy_table=args.accuracy_table,
        dataset=args.dataset, space=args.space, latency_table=args.table, store=args.store,
        train_devices=comma_list(args.train_devices), method=args.method,
        encoding=args.encoding, zcp_table=args.zcp_table, zcp_store=args.zcp_store, zcp_run=args.zcp_run,
        seed=PRETRAIN_SEED, budget=args.budget, n_latency=args.latency_samples)
    result = compare(problem, method, budget=args.budget, seeds=range(args.seed, args.seed + args.seeds),
                     encoding=args.encoding, proxies=proxies, n_latency=args.latency_samples, device=args.device)
    first = result["runs"]["predictor"][0]
    say = functools.partial(print, file=messages_to(args.json))  # stderr when the JSON goes to stdout
    say(f"{args.space} {args.dataset} on {args.device}, latency <= {args.max_latency_ms:g} ms, budget {args.budget} "
        f"({count(args.latency_samples, 'latency measurement', 'latency measurements')}), "
        f"{count(result['candidates'], 'candidate', 'candidates')} "
        f"({result['feasible_candidates']} truly feasible)")
    if result["candidates"] < nb201.N_ARCHS:  # evaluations are look-ups: only archs with a latency can be searched
        # with a ZCP encoding an arch without proxies cannot be encoded either: name that source too
        source = f"--zcp-store {args.zcp_store}" if args.zcp_store else f"--zcp-table {args.zcp_table}"
        zcp = f" and proxies in {source}" if args.encoding != "vec" else ""
        say(f"  the candidates are the archs with a latency in {args.device}'s table, an accuracy{zcp}, "
            f"not all {nb201.N_ARCHS} of the space")
    if first.arch is None:
        say(f"seed {args.seed}: no evaluated architecture met the limit within the budget")
    else:
        say(f"seed {args.seed}: best {first.arch} {nb201.to_string(int(first.arch))}")
        say(f"  true accuracy {first.accuracy:.2f} %, true latency {first.latency_ms:.3f} ms "
            f"({'meets' if first.feasible else 'VIOLATES'} the limit), "
            f"{count(first.evaluations, 'evaluation', 'evaluations')} used")
    opt = result["optimum"]
    say(f"true optimum under the limit: {opt['arch']} {opt['accuracy']:.2f} % at {opt['latency_ms']:.3f} ms")
    say(f"over {count(args.seeds, 'seed', 'seeds') + ':':<15} mean acc  feasible  within 0.5 %  evals to 0.5 %")
    for name, s in result["summary"].items():
        evals = "-" if s["mean_evals_to_near_optimum"] is None else f"{s['mean_evals_to_near_optimum']:.1f}"
        say(f"  {name:<22}{s['mean_accuracy']:8.2f}  {s['feasible_rate']:8.0%}  {s['near_optimum_rate']:12.0%}"
            f"  {evals:>14}")
    # "0.5 %" alone reads as relative; it is accuracy points, and the mean is over the runs that got there
    say(f"  (within {NEAR_OPTIMUM_PCT:g} %: meets the limit and is at most {NEAR_OPTIMUM_PCT:g} accuracy points "
        "below the optimum; evals to it: mean over the runs that got there)")
    if args.json:
        with written_whole(args.json) as target:
            target.write_text(strict_json(to_json(result), indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


def to_json(result: dict) -> dict:
    """The comparison with each run as a plain dict."""
    out = {k: v for k, v in result.items() if k != "runs"}
    out["runs"] = {name: [{"arch": _plain(r.arch), "accuracy": r.accuracy, "latency_ms": r.latency_ms,
                           "feasible": r.feasible, "evaluations": r.evaluations} for r in runs]
                   for name, runs in result["runs"].items()}
    return out


def _plain(arch):
    return None if arch is None else int(arch) if str(arch).lstrip("-").isdigit() else str(arch)
