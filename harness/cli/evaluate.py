"""`hwl evaluate`: score a method with the strict protocol on a task or on your own devices.

``--task N0|F0..F5`` runs a task of the suite; ``--space S --train-devices a,b --test-table
FILE`` (or ``--store DB``) runs a user-defined task named ``custom`` whose test devices are
the table's devices. Without ``--method`` the recommended method runs.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli.common import (add_table_flags, comma_list, messages_to, non_negative_int, positive_int,
                               strict_json, user_path)
from harness.errors import UserError
from harness.paths import check_outputs, written_whole
from predictors import registry, tasks

if TYPE_CHECKING:
    from rich.console import Console


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a latency predictor with the strict few-shot protocol")
    p.add_argument("--task", help=f"task of the suite: {', '.join(tasks.TASKS)}")
    p.add_argument("--method", help=f"method name (default: {registry.RECOMMENDED}); one of "
                                    f"{', '.join(registry.method_names())}")
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                   help="method parameter (Python literal), repeatable, e.g. --set robust_iters=1")
    p.add_argument("--samples", default="5,10,20", help="k values, comma-separated (default 5,10,20)")
    p.add_argument("--trials", type=positive_int, help="seeds (default 5: predictors.protocol.DEFAULT_TRIALS)")
    p.add_argument("--first-seed", type=non_negative_int, default=0,
                   help="seed of the first trial; trial i uses FIRST_SEED + i (default 0)")
    p.add_argument("--n-pretrain", type=positive_int,
                   help="pretraining archs per train device (default 900 nb201, 4000 fbnet)")
    p.add_argument("--space", choices=["nb201", "fbnet"], help="search space of a custom task")
    p.add_argument("--train-devices", help="custom task: comma-separated train devices of HELP's table")
    p.add_argument("--test-devices", help="custom task: only these devices of the test table")
    add_table_flags(p, what="custom task's test table", file_flag="--test-table")
    p.add_argument("--json", type=user_path, help="write the results as JSON here")
    p.add_argument("--plot", type=user_path, help="write a rho-against-k figure here (.png)")
    p.add_argument("--heatmap", type=user_path,
                   help="write the Spearman correlation heatmap of the task's devices here (.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console  # imported when used, not for `hwl --help`

    _check_outputs(args)  # before the evaluation, which may take hours, not after it
    task = build_task(task=args.task, space=args.space, train_devices=comma_list(args.train_devices),
                      test_devices=comma_list(args.test_devices), test_table=args.table, store=args.store)
    results = evaluate(task=task, method=args.method, params=parse_params(args.set),
                       samples=parse_samples(args.samples), trials=args.trials, first_seed=args.first_seed,
                       n_pretrain=args.n_pretrain)
    out = messages_to(args.json, args.plot, args.heatmap)  # stderr when an output is stdout
    print_results(results, Console(file=out))
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}", file=out)
    if args.plot:
        from predictors.plots import plot_rho_vs_k

        print(f"wrote {plot_rho_vs_k(results, args.plot)}", file=out)
    if args.heatmap:
        print(f"wrote {heatmap(task, args.heatmap)}", file=out)
    return 0


def _check_outputs(args) -> None:
    check_outputs({"--json": args.json, "--plot": args.plot, "--heatmap": args.heatmap},
                  {"--test-table": args.table, "--store": args.store})  # never over a table it reads
    figures = [p for p in (args.plot, args.heatmap) if p]
    if figures:
        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
        for path in figures:
            if Path(path).suffix.lower().lstrip(".") not in formats:
                raise UserError(f"{path}: matplotlib writes figures as {', '.join('.' + f for f in sorted(formats))}; "
                                "give one of those suffixes")


def heatmap(task, path):
    """Device correlation heatmap of the train and test devices of the evaluated task."""
    import pandas as pd

    from predictors.plots import plot_device_heatmap

    train, test = task.tables()
    return plot_device_heatmap(pd.concat([train, test], ignore_index=True).drop_duplicates(["arch", "device"]), path)


def evaluate(*, task=None, method=None, params=None, samples=(5, 10, 20), trials=None, first_seed=0,
             n_pretrain=None, space=None, train_devices=None, test_devices=None, test_table=None,
             store=None) -> list[dict]:
    """Results of the strict protocol (see ``predictors.protocol.evaluate``)."""
    the_task = build_task(task=task, space=space, train_devices=train_devices, test_devices=test_devices,
                          test_table=test_table, store=store)
    name = registry.chosen(method)
    params = dict(params or {})
    registry.get_method(name, **params)  # fail early on a bad name or parameter
    from predictors import protocol  # scipy and scikit-learn: imported to run, not to refuse a method's name
    try:
        return protocol.evaluate(lambda: registry.get_method(name, **params), the_task, samples=samples,
                                 trials=protocol.DEFAULT_TRIALS if trials is None else trials, n_pretrain=n_pretrain,
                                 first_seed=first_seed, method_name=name)
    except (ValueError, TypeError) as exc:
        if not params:
            raise  # a bug, not a value the user chose: keep its traceback
        # the constructors only store --set values (scikit-learn's contract), so a wrong one (alpha=-1,
        # alpha=abc) fails in the fit: a traceback from inside scikit-learn, naming no flag
        given = " ".join(f"{k}={v!r}" for k, v in params.items())
        raise UserError(f"method {name!r} cannot run with --set {given}: {type(exc).__name__}: {exc}") from None


def build_task(*, task=None, space=None, train_devices=None, test_devices=None, test_table=None, store=None):
    """``task``: a task name or an already built ``tasks.Task`` (returned as it is)."""
    if isinstance(task, tasks.Task):
        return task
    custom = any(v is not None for v in (space, train_devices, test_devices, test_table, store))
    if task and custom:
        raise UserError("give --task, or --space/--train-devices/--test-devices with --test-table/--store for a "
                        "custom task, not both")
    if task:
        return tasks.get_task(task)
    if not custom:
        raise UserError(f"give --task ({', '.join(tasks.TASKS)}) or --space, --train-devices and --test-table")
    if space is None or not train_devices or (test_table is None and store is None):
        raise UserError("a custom task needs --space, --train-devices and --test-table FILE (or --store DB)")
    # pandas: imported for a custom task's table, not for a task of the suite nor to refuse a task's name
    from harness.device_settings import check_one_setting
    from harness.unanswered_devices import read_answered
    from predictors import data

    # a device the store measures but has no label of is not 'unknown'
    table = read_answered(store, space, test_devices, lambda: data.load_table(space, path=test_table, store=store))
    task = tasks.custom_task(space, train_devices, table, test_devices=test_devices)
    if store is not None:  # the store's table is a median over every setting a device was measured with
        check_one_setting(store, space, task.test_devices)
    return task


def parse_samples(text: str) -> list[int]:
    try:
        ks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--samples must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise UserError(f"--samples must be positive integers, got {text!r}")
    twice = next((k for i, k in enumerate(ks) if k in ks[:i]), None)
    if twice is not None:  # the same trials again, and a second row for it
        raise UserError(f"--samples names k={twice} twice")
    return ks


def parse_params(items) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects PARAM=VALUE, got {item!r}")
        if key.strip() in params:  # the last one would win without a word
            raise UserError(f"--set gives {key.strip()} twice")
        try:
            params[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            # A bare word is a string value (--set response=ms); anything else was meant as a literal.
            if not re.fullmatch(r"[A-Za-z_][\w.\-]*", value.strip()):
                raise UserError(f"--set {item!r}: {value!r} is neither a Python literal nor a plain word") from None
            params[key.strip()] = value.strip()
    return params


def write_json(path, results: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as target:
        target.write_text(strict_json({"results": results}, indent=2) + "\n")
    return path


def print_results(results: list[dict], console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # the columns said: a std of 0.000 after one trial read as a spread measured to be nil
    table = Table(title="Spearman rho, strict protocol (mean over devices of per-device trial means)")
    for col in ("task", "method", "k", "trials", "mean", "std", "seconds"):
        table.add_column(col, justify="left" if col in ("task", "method") else "right")
    for r in results:
        table.add_row(r["task"], r["method"], str(r["k"]), str(r["trials"]), f"{r['mean']:.3f}",
                      f"{r['std']:.3f}" if r["trials"] > 1 else "-", f"{r['seconds']:.1f}")
    console = console or Console()
    console.print(table)
    console.print("(std: of the device mean over the trials, - for one trial; seconds: pretraining, picks, adaptation "
                  "and prediction, summed over the trials)", soft_wrap=True)
    # Per device in a table of its own, a device per row and a result per column: as a column of the table
    # above, a terminal 80 wide cut each entry to "titan_rtx_1=0.9…", no rho left to read.
    one_run = len({(r["task"], r["method"]) for r in results}) == 1
    devices = list(dict.fromkeys(d for r in results for d in r["per_device"]))
    per = Table(title="rho per test device (trial mean)")
    per.add_column("device", no_wrap=True)
    for r in results:
        per.add_column(f"k={r['k']}" if one_run else f"{r['task']} {r['method']} k={r['k']}", justify="right")
    for d in devices:
        per.add_row(d, *(f"{r['per_device'][d]:.3f}" if d in r["per_device"] else "-" for r in results))
    if devices:
        console.print(per)
