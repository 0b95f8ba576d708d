"""The main job behind ``scripts/demo`` (``python -m scripts.demo_main``).

Runs a real measurement campaign on this machine's local device profiles (onnxruntime with 1
and 2 threads by default; ``--devices`` adds ``local-torch-1t`` or ``local-tvm-1t``) over a few
dozen seeded NB201 architectures with the quick profile: local Ray, one actor per device,
exports as Ray tasks, results in an SQLite store. Then it exports the results to Parquet and
prints each device's median latency and the Spearman correlation between devices. Last, the
predictor step: pretrain on the public tables, adapt to the first device with 10 of its fresh
measurements, and print rho on the rest beside the copy and HWL-ridge baselines. Then `hwl onboard`
on the first device (its own store, 10 measurements chosen by the loop), checked against the
campaign's measurements of that device which the onboarding did not make. The first device is
the one pinned to a core of its own; the 2-thread one shares its cores with Ray and the
onboarding's own work, which the measurements show.

Running it again measures nothing twice: the campaign is found in the store and only what is
missing is measured.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from harness.campaign import CampaignSpec, plan_campaign, resolve_plan
from harness.cli.common import non_negative_int, positive_int, user_path
from harness.coordinator import CoordinatorOptions, run_campaign
from harness.exporting import export_parquet, wide_table
from harness.report import medians_table, progress_table, spearman_table
from harness.store import Store
from scripts._bench_flags import exit_code

ROOT = Path(__file__).resolve().parents[1]
SHOTS = 10  # the predictor step's adaptation samples; it scores rho on at least 3 more


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo",
                                     description="hwl demo: a measurement campaign on this machine")
    parser.add_argument("--archs", type=positive_int, default=30,
                        help=f"random NB201 architectures (default 30; the predictor step needs {SHOTS + 3})")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="draws the architectures (default 0)")
    parser.add_argument("--devices", default="local-ort-1t,local-ort-2t",
                        help="device profiles (default local-ort-1t,local-ort-2t; also: local-torch-1t, "
                             "local-tvm-1t, slower here)")
    parser.add_argument("--onboard-budget", type=non_negative_int, default=10,
                        help="measurements for the onboarding step on the first device (default 10; 0: skip it)")
    parser.add_argument("--out", type=user_path, default=str(ROOT / "out" / "demo"),
                        help=f"store, artifacts and exports (default {ROOT / 'out' / 'demo'})")
    args = parser.parse_args(argv)
    args.out = Path(args.out)
    if args.archs < SHOTS + 3:
        parser.error(f"--archs {args.archs}: the predictor step adapts with {SHOTS} measurements and scores rho on "
                     f"at least 3 more; give {SHOTS + 3} or more")
    from predictors.onboard.settings import MIN_BUDGET, WHY_MIN_BUDGET  # here: 2 s of imports --help need not wait

    if 0 < args.onboard_budget < MIN_BUDGET:  # refused by the onboarding step, after the whole campaign had run
        parser.error(f"--onboard-budget {args.onboard_budget}: give at least {MIN_BUDGET}, or 0 to skip the onboarding "
                     f"step: {WHY_MIN_BUDGET}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder for the store, artifacts and exports")
    return exit_code(lambda: run(args), parser.prog)  # an unknown device, a store of another version: one line


def run(args) -> int:
    console = Console(width=max(Console().width, 100))
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    spec = CampaignSpec(space="nb201", archs=f"random:{args.archs}", seed=args.seed, devices=devices,
                        measurement="quick")
    plan = resolve_plan(spec)  # an unknown device is refused before a store is made for it
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with Store(args.out / "lab.db") as store:
        cid, plan, created = plan_campaign(store, spec, plan)
        console.print(f"campaign {plan.name}: {len(plan.archs)} NB201 archs x {len(devices)} devices "
                      f"({'new' if created else 'found in the store: only what is missing is measured'})")
        options = CoordinatorOptions(artifact_dir=args.out / "artifacts")
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            summary = run_campaign(store, cid, options,
                                   on_progress=lambda snap: live.update(progress_table(snap, title=plan.name)))
        console.print(progress_table(summary["devices"], title=f"campaign {plan.name}"))
        parquet = export_parquet(store, cid, args.out / f"{plan.name}.parquet")
        wide = wide_table(store, cid)
        n_flagged = store.db.execute(
            "SELECT count(*) FROM results r JOIN jobs j ON r.job_id = j.id WHERE j.campaign_id = ? AND "
            "r.accepted = 1 AND r.outcome != 'ok'", (cid,)).fetchone()[0]
    measured = [d for d in devices if d in wide.columns]
    console.print(medians_table(wide, measured, title="per-device latency of the accepted results (ms)"))
    if len(measured) > 1:
        console.print(spearman_table(wide, measured, title=f"Spearman rho between devices ({len(wide)} archs)"))
    console.print(f"results: {parquet} (one row per attempt; 'accepted' marks each job's answer)")
    if n_flagged:
        console.print(f"{n_flagged} accepted results stayed unstable after 3 attempts (a busy machine); "
                      "their flags are in the export")
    first = wide.set_index("arch_index")[measured[0]].dropna() if measured else None
    if first is not None and len(first) < SHOTS + 3:  # measurements failed: no traceback after the campaign
        console.print(f"predictor step skipped: {measured[0]} has {len(first)} accepted measurements, it needs "
                      f"{SHOTS + 3}")
    elif first is not None:
        from scripts.demo_predict import few_shot_table
        console.print(few_shot_table(first, measured[0], k=SHOTS, seed=args.seed))
    if measured and args.onboard_budget > 0:
        from scripts.demo_onboard import onboarding_table
        table, lines = onboarding_table(measured[0], wide.set_index("arch_index")[measured[0]], args.out,
                                        budget=args.onboard_budget, seed=args.seed)
        for line in lines:
            console.print(line)
        console.print(table)
    console.print(f"measurement time inside the agents {summary['measure_s']:.1f} s; "
                  f"demo wall time {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
