"""`hwl onboard DEVICE`: measure few architectures on a new device, adapt, stop when sure.

Writes the adapted predictor (``--out``), a predicted latency table for every candidate
architecture (Parquet: arch, predicted_ms, uncertainty; ``--table``, default beside ``--out``)
and a report (JSON; ``--report``), and prints the report. Every measurement goes through a
campaign into ``--store``; running the same command again resumes where it stopped.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.cli.common import add_address_flag, messages_to, non_negative_int, user_path
from harness.cli.devices import add_known_hosts_flag, apply_known_hosts
from harness.errors import DeviceQuarantined, UserError
from harness.paths import check_outputs
from spaces.selection import arch_file

DEFAULT_STORE = "lab.db"


def add_parser(subparsers) -> None:
    from predictors import registry
    from predictors.onboard.settings import STRATEGIES

    p = subparsers.add_parser("onboard", help="onboard a new device: measure few, adapt, predict the whole space")
    p.add_argument("device", help="device profile name or .toml file")
    p.add_argument("--space", choices=["nb201", "fbnet"], required=True, help="search space to predict")
    p.add_argument("--budget", type=int, default=30, help="most measurements in all, at least 2 (default 30)")
    p.add_argument("--target-rho", type=float,
                   help="stop once the estimated Spearman rho reaches this, with an interval narrow enough to trust "
                        "(default: none, spend the whole --budget)")
    p.add_argument("--store", type=user_path,
                   default=DEFAULT_STORE, help=f"SQLite store (default {DEFAULT_STORE}); resumed from")
    p.add_argument("--out", type=user_path, required=True, help="adapted predictor file to write (e.g. predictor.pt)")
    p.add_argument("--table", type=user_path,
                   help="predicted table, Parquet (default: --out with .parquet, e.g. predictor.parquet)")
    p.add_argument("--report", type=user_path, help="report, JSON (default: --out with .json, e.g. predictor.json)")
    # the rank-only baselines are refused (their numbers are not the device's ms), so not offered here
    p.add_argument("--method", help=f"few-shot method (default {registry.RECOMMENDED}); one of "
                                    f"{', '.join(registry.latency_methods())}")
    p.add_argument("--candidates", help="architectures the predictor covers: all (nb201 default), random:N, a list "
                                        "or @FILE (default for fbnet: the public tables' archs)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of random:N candidates, the picks and the method (default 0)")
    p.add_argument("--initial", type=int,
                   help="picks of the method's design before the first adaptation (default 3 for a method with a "
                        "closed-form posterior, the recommended one, which then measures where it is least sure; "
                        "5 for others, whose design goes on)")
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="how the picks after --initial are chosen (default: loop for a method with a closed-form "
                        "posterior, design for others). loop: where the adapted model is least sure; design: the "
                        "method's design only, which reads no latency: devices onboarded with the same store, "
                        "candidates and seed get the same picks; "
                        "diverse: spread over the architectures' features; random: the strict protocol's picks")
    p.add_argument("--batch-size", type=int, help="measurements per later round (default 1: re-adapt after each)")
    p.add_argument("--profile", choices=["quick", "standard"], help="measurement profile (default: the device's)")
    add_address_flag(p)
    p.add_argument("--artifacts", type=user_path,
                   help="ONNX artifact directory (default: beside the store, lab.db -> lab-artifacts)")
    p.add_argument("--canary-every", type=int, default=50, help="jobs between drift canaries (default 50; 0: off)")
    add_known_hosts_flag(p)
    p.set_defaults(func=cmd_onboard, resume_hint=lambda a: "every finished measurement is stored; run the same "
                                                           "`hwl onboard` again to go on from there")


def run(*, device: str, space: str, out, store: str = DEFAULT_STORE, budget: int = 30, target_rho=None,
        table=None, report=None, method=None, candidates=None, seed: int = 0, initial=None, batch_size=None,
        strategy=None, profile=None, address=None, artifacts=None, canary_every: int = 50, on_step=None):
    """Keyword form of the command (tests call it without argparse); returns the ``Onboarding``."""
    from predictors.onboard.settings import MIN_BUDGET, WHY_MIN_BUDGET

    if budget < MIN_BUDGET:
        raise UserError(f"--budget must be at least {MIN_BUDGET}, got {budget}: {WHY_MIN_BUDGET}")
    if target_rho is not None and not 0.0 < target_rho < 1.0:  # 1 was taken, and never reached: a budget spent
        raise UserError(f"--target-rho must be in (0, 1), got {target_rho}: the estimated rho stays below 1, so a "
                        "target of 1 would never stop the onboarding; leave it out to spend the whole --budget")
    out = Path(out).expanduser()  # --out=~/p.pt: no shell expands a tilde after '=', and the writers differ on it
    if out.suffix == ".parquet":
        raise UserError(f"--out {out} is the predictor file (e.g. predictor.pt); the table goes to --table")
    table_flag = "--table" if table else "--table (by default --out's name with .parquet)"
    table = Path(table).expanduser() if table else out.with_suffix(".parquet")
    if table.suffix != ".parquet":
        raise UserError(f"--table {table}: the predicted table is written as Parquet (.parquet)")
    report_flag = "--report" if report else "--report (by default --out's name with .json)"
    report = Path(report).expanduser() if report else out.with_suffix(".json")
    store_path = Path(store).expanduser()
    for path in (out, table, report):  # the store may not exist yet, so check_outputs cannot tell it by its header
        if path.expanduser().resolve() == store_path.expanduser().resolve():
            raise UserError(f"{path} is the store (--store); give the onboarding's outputs other file names")
    inputs = {"--candidates": arch_file(candidates),
              "the device profile": device if str(device).endswith(".toml") else None}  # a resume reads them again
    check_outputs({"--out": out, table_flag: table, report_flag: report}, inputs)  # before any measurement
    if canary_every < 0:
        raise UserError(f"--canary-every must be >= 0, got {canary_every}")
    settings = loop_settings(initial, batch_size, strategy)
    from harness.profiles import load_profiles
    from predictors import registry

    # harness.onboard checks both again; here an unknown name is refused before the imports below
    load_profiles([device])
    registry.get_class(registry.chosen(method), latency_only=True)
    from harness.coordinator import CoordinatorOptions  # Ray, scipy, pandas: after the checks, so a refusal is quick
    from harness.onboard import onboard

    options = CoordinatorOptions(address=address, canary_every=canary_every, artifact_dir=Path(artifacts).expanduser()
                                 if artifacts else store_path.parent / f"{store_path.stem}-artifacts")
    return onboard(device=device, space=space, store=store, budget=budget, target_rho=target_rho, out=out,
                   table_out=table, report_out=report, method=method, candidates=candidates, seed=seed,
                   measurement=profile, options=options, settings=settings,
                   on_step=on_step)


def loop_settings(initial=None, batch_size=None, strategy=None):
    """The ``OnboardSettings`` of the command's pick flags; None leaves a field at its default (the strategy's
    then depends on the method, ``OnboardSettings.for_method``). Checked now, not after Ray has started."""
    from predictors.onboard import OnboardSettings

    fields = {}
    for flag, field, value in (("--initial", "n_initial", initial), ("--batch-size", "batch_size", batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
        if value is not None:
            fields[field] = value
    if strategy is not None:  # argparse's choices checked it; OnboardSettings.check does for other callers
        fields["strategy"] = strategy
    return OnboardSettings(**fields)


def cmd_onboard(args) -> int:
    from rich.console import Console

    apply_known_hosts(args)
    console = Console(stderr=True)

    def on_step(loop, step):
        from predictors.onboard.report import progress_line  # scipy, pandas: once run() has checked the flags

        console.print(progress_line(step.n_measured, step.estimate), style="dim", markup=False)

    try:
        result = run(device=args.device, space=args.space, out=args.out, store=args.store, budget=args.budget,
                     target_rho=args.target_rho, table=args.table, report=args.report, method=args.method,
                     candidates=args.candidates, seed=args.seed, initial=args.initial, batch_size=args.batch_size,
                     strategy=args.strategy,
                     profile=args.profile, address=args.address, artifacts=args.artifacts,
                     canary_every=args.canary_every, on_step=on_step)
    except DeviceQuarantined as exc:  # as `campaign run` with a quarantined device: one line, exit 1
        print(f"hwl onboard: {exc}", file=sys.stderr)
        return 1
    from predictors.onboard.report import text_lines

    stream = messages_to(*result.files.values())
    for line in text_lines(result.report):
        print(line, file=stream)
    print(json.dumps({"files": result.files}), file=stream)
    return 0
