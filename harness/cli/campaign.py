"""`hwl campaign run|status|resume|export`: measurement campaigns in a store."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from harness.cli.common import add_address_flag, add_archs_flags, messages_to, user_path
from harness.cli.devices import add_known_hosts_flag, apply_known_hosts, warn_of_own_known_hosts
from harness.errors import CampaignError
from harness.paths import check_writable
from harness.text import count

DEFAULT_STORE = "lab.db"
DEFAULT_CANARY_EVERY = 50


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("campaign", help="run, resume, inspect and export measurement campaigns")
    sub = p.add_subparsers(dest="campaign_command", required=True)

    run = sub.add_parser("run", help="plan a campaign (archs x devices) and measure it")
    run.add_argument("file", type=user_path, nargs="?", help="campaign TOML file (flags override its settings)")
    run.add_argument("--space", choices=["nb201", "fbnet"], help="search space (required unless the campaign file "
                     "gives it)")
    add_archs_flags(run)
    run.add_argument("--devices", help="comma-separated device profile names or .toml paths")
    run.add_argument("--profile", choices=["quick", "standard"],
                     help="measurement profile for every device (default: each device's own)")
    run.add_argument("--name", help="campaign name (default: derived from the settings)")
    _common(run)
    # --seed beside a campaign file overrides its seed only when given: a default 0 could not say which
    run.set_defaults(func=cmd_run, seed=None)

    # its flags' defaults below are a first run's: a resume not given one takes its last run's (_as_last_run)
    resume = sub.add_parser("resume", help="finish a campaign (after a crash, or a quarantine)",
                            description="Finish a campaign. --artifacts, --artifact-quota-gb, --canary-every and "
                                        "--known-hosts not given are taken from the campaign's last run; the "
                                        "defaults below apply where it had none.")
    resume.add_argument("--name", help="campaign (default: the store's latest)")
    # its help said "else start a local Ray", where a resume goes on on the cluster its campaign last joined
    _common(resume, without_address="the Ray cluster the campaign's last run joined, if any, else start a local Ray")
    resume.set_defaults(func=cmd_resume)

    status = sub.add_parser("status", help="jobs per device and state")
    status.add_argument("--name", help="campaign (default: the store's latest)")
    status.add_argument("--store", type=user_path, default=DEFAULT_STORE,
                        help=f"SQLite store (default {DEFAULT_STORE})")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=cmd_status)

    export = sub.add_parser("export", help="write results as Parquet or a HELP-style wide table")
    export.add_argument("--name", action="append",
                        help="campaign; again for several into one file (default: every campaign measuring "
                             "--device, else the store's latest)")
    export.add_argument("--device", action="append",
                        help="only this device's results; again for several")
    export.add_argument("--store", type=user_path, default=DEFAULT_STORE,
                        help=f"SQLite store (default {DEFAULT_STORE})")
    export.add_argument("--format", choices=["parquet", "help"],
                        help="parquet (one row per result) or help (wide CSV); default: from --out's "
                             "suffix (.parquet, .csv, .csv.gz), else parquet")
    export.add_argument("--out", type=user_path, help="output file, or - for stdout (default: <campaign>.parquet / "
                                      "<campaign>_help.csv; several campaigns or --device: their names joined "
                                      "by +)")
    export.set_defaults(func=cmd_export)


def _common(p, *, without_address: str = "start a local Ray") -> None:
    p.add_argument("--store", type=user_path, default=DEFAULT_STORE, help=f"SQLite store (default {DEFAULT_STORE})")
    p.set_defaults(resume_hint=lambda a: "every finished measurement is stored and the ones in flight are queued "
                                         "again; run the same command again to go on")
    add_address_flag(p, otherwise=without_address)
    p.add_argument("--artifacts", type=user_path,
                   help="ONNX artifact directory (default: beside the store, lab.db -> lab-artifacts)")
    # no default here: a resume given none takes its campaign's last run's (see _as_last_run)
    p.add_argument("--canary-every", type=int,
                   help=f"jobs between drift canaries (0: off; default {DEFAULT_CANARY_EVERY})")
    p.add_argument("--artifact-quota-gb", type=float, help="keep the artifact directory under this size by removing "
                                                          "the least recently used models (re-exported if needed "
                                                          "again; default: keep all)")
    p.add_argument("--no-progress", action="store_true",
                   help="no live table (the final table and the JSON summary line still print)")
    add_known_hosts_flag(p)


def flags_a_resume_needs(args) -> list[str]:
    """The flags of this run (or resume) that its resume needs too, for the resume line it prints: without them
    the line pasted checked host keys against ~/.ssh/known_hosts, started a local Ray beside the cluster, exported
    into another folder or ran canaries at another rate. Paths are absolute: `hwl campaign status` prints the line
    too, wherever it runs."""
    given = {"--address": args.address, "--artifacts": _absolute(args.artifacts),
             "--artifact-quota-gb": args.artifact_quota_gb,
             "--canary-every": args.canary_every,
             "--known-hosts": _absolute(args.known_hosts)}
    return [word for flag, value in given.items() if value is not None for word in (flag, str(value))]


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(Path(path).expanduser())


def _options(args):
    store = Path(args.store).expanduser()
    artifacts = Path(args.artifacts).expanduser() if args.artifacts else store.parent / f"{store.stem}-artifacts"
    canary_every = DEFAULT_CANARY_EVERY if args.canary_every is None else args.canary_every
    if canary_every < 0:
        raise CampaignError(f"--canary-every must be >= 0, got {canary_every}")
    if args.artifact_quota_gb is not None and not args.artifact_quota_gb > 0:
        raise CampaignError(f"--artifact-quota-gb must be > 0, got {args.artifact_quota_gb}")
    from harness.coordinator import CoordinatorOptions  # pandas: imported once the flags are checked

    return CoordinatorOptions(address=args.address, artifact_dir=artifacts, canary_every=canary_every,
                              artifact_quota_gb=args.artifact_quota_gb, resume_flags=tuple(flags_a_resume_needs(args)))


def campaign_spec(args):
    """The campaign `hwl campaign run` asks for: its campaign file's settings, the flags given on top."""
    from harness.campaign import CampaignSpec, check_file_settings, load_campaign_file

    settings = load_campaign_file(args.file) if args.file else {}
    given = {"space": args.space, "archs": args.archs, "seed": args.seed, "devices": args.devices,
             "profile": args.profile, "name": args.name}
    if args.archs is not None and not args.archs.replace(",", "").strip():  # a variable left unset: '--archs $A'
        raise CampaignError(f"--archs {args.archs!r} names no architecture")
    given = {k: v for k, v in given.items() if v is not None}
    from_file = set(settings) - set(given)
    settings.update(given)
    # a flag given empty is no missing setting (beside a file that sets it, it said 'missing'): the checks of its
    # value say what is wrong with it
    missing = [k for k in ("space", "archs", "devices") if not settings.get(k) and k not in given]
    if missing:
        raise CampaignError(f"missing {', '.join('--' + m for m in missing)} (or a campaign file that sets them)")
    if args.file:
        check_file_settings(args.file, settings, from_file)
    devs = settings["devices"]
    if isinstance(devs, str):  # as a campaign file's string: a stray comma names no device
        devs = [d.strip() for d in devs.split(",") if d.strip()]
    return CampaignSpec(space=settings["space"], archs=settings["archs"], devices=tuple(devs),
                        seed=int(settings.get("seed", 0)), measurement=settings.get("profile"),
                        name=settings.get("name"), order_seed=settings.get("order_seed"))


def run(*, store: str, spec, options=None, on_progress=None, resume_flags=(), plan=None) -> dict:
    """Plan (or find) the campaign of ``spec`` and measure what is left of it; returns the summary. ``plan``:
    ``spec``'s, resolved already (``harness.campaign.resolve_plan``)."""
    from harness.campaign import plan_campaign, resolve_plan
    from harness.coordinator import run_campaign
    from harness.ray_cluster import joined
    from harness.store import Store

    if plan is None:
        plan = resolve_plan(spec)  # an unknown device or arch is refused before a store file is made
    warn_of_own_known_hosts(plan.profiles)
    address = options.address if options is not None else None
    # so is a cluster that cannot be joined (no campaign left planned): joined first, then planned
    with joined(address, hosts={p.host.resource for p in plan.profiles}), \
            Store(store if options is None else options.checked_store(store, plan.profiles)) as st:
        cid, plan, created = plan_campaign(st, spec, plan, resume_flags=resume_flags)
        summary = run_campaign(st, cid, options, on_progress=on_progress)
        summary.update(name=plan.name, created=created)
        return summary


def resume(*, store: str, name: str | None = None, options=None, on_progress=None) -> dict:
    from harness.campaign import current_profiles, find_campaign, refresh_reach
    from harness.campaign_lock import flag_values, last_run_flags
    from harness.coordinator import run_campaign
    from harness.store import Store, require_store_file

    require_store_file(store)
    with Store(store) as st:
        cid, cname, _ = find_campaign(st, name)
        last = flag_values(last_run_flags(store, cid))
        options = _as_last_run(_on_its_cluster(options, last, cname), last, cname)
        profiles = current_profiles(st, cid)
        warn_of_own_known_hosts(profiles)
        refresh_reach(st, cid, profiles)  # a device back at another address, say
        summary = run_campaign(st, cid, options, on_progress=on_progress)
        summary.update(name=cname, created=False, resume_flags=options.resume_flags if options else ())
        return summary


def _on_its_cluster(options, last: dict[str, str], name: str):
    """``options`` for a resume given no ``--address``: the Ray cluster the campaign's last run joined, if it joined
    one. A local Ray offers every profile's host resource, so it timed a cluster node's local devices on this
    machine, under their names. ``last``: the last run's flags (``campaign_lock.flag_values``)."""
    from dataclasses import replace

    if options is None or options.address is not None or "--address" not in last:
        return options
    address = last["--address"]
    print(f"hwl campaign: campaign {name} last ran on the Ray cluster at {address}: resuming it there (give --address "
          "to resume it on another cluster, such as a head started here with `ray start --head`)", file=sys.stderr)
    return replace(options, address=address, resume_flags=("--address", address, *options.resume_flags))


# the flags of a campaign's last run that a resume given none of them takes from it (--address: _on_its_cluster)
_KEPT_FOR_RESUME = ("--artifacts", "--artifact-quota-gb", "--canary-every", "--known-hosts")


def _as_last_run(options, last: dict[str, str], name: str):
    """``options`` for a resume, with each flag of :data:`_KEPT_FOR_RESUME` it was not given taken from the
    campaign's last run. `hwl campaign resume --store lab.db`, as README shows it, exported every model again into
    a new folder beside the store, dropped the run's artifact quota and canary rate, and left its own (none) for
    the next resume line. ``last``: the last run's flags (``campaign_lock.flag_values``)."""
    from dataclasses import replace

    from harness.cli.devices import apply_known_hosts

    if options is None:
        return options
    taken = {flag: last[flag] for flag in _KEPT_FOR_RESUME if flag in last and flag not in options.resume_flags}
    if not taken:
        return options
    words = [word for pair in taken.items() for word in pair]
    print(f"hwl campaign: campaign {name} last ran with {' '.join(words)}: resuming with them (give a flag to change "
          "it)", file=sys.stderr)
    if "--known-hosts" in taken:
        apply_known_hosts(argparse.Namespace(known_hosts=taken["--known-hosts"]))
    changes = {"artifact_dir": Path(taken["--artifacts"])} if "--artifacts" in taken else {}
    if "--artifact-quota-gb" in taken:
        changes["artifact_quota_gb"] = float(taken["--artifact-quota-gb"])
    if "--canary-every" in taken:
        changes["canary_every"] = int(taken["--canary-every"])
    return replace(options, **changes, resume_flags=(*options.resume_flags, *words))


def _live(fn, args, **kwargs) -> int:
    from rich.console import Console
    from rich.live import Live

    from harness.campaign import resume_command

    apply_known_hosts(args)  # ssh devices' host keys are checked against this file
    console = Console(stderr=True)
    options = _options(args)
    from harness.report import progress_table  # pandas: imported once a campaign runs, not to refuse its flags

    if args.no_progress or not console.is_terminal:
        summary = fn(options=options, **kwargs)
    else:
        with Live(console=console, refresh_per_second=2) as live:
            summary = fn(options=options, on_progress=lambda snap: live.update(progress_table(snap)), **kwargs)
    console.print(progress_table(summary["devices"], title=f"campaign {summary['name']}"))
    done = sum(d["done"] for d in summary["devices"].values())
    bad = [n for n, d in summary["devices"].items() if d["state"] == "quarantined"]
    print(json.dumps({"campaign": summary["name"], "created": summary["created"], "done_now": done,
                      "wall_s": round(summary["wall_s"], 2), "measure_s": round(summary["measure_s"], 2),
                      "quarantined": bad}))
    flags = summary.get("resume_flags", flags_a_resume_needs(args))  # a resume's: those it took from the last run too
    for name in bad:  # the store keeps its place: say how to go on
        resume = resume_command(args.store, summary["name"], flags)
        device = summary["devices"][name]
        print(quarantine_line(name, device.get("error"), resume, new_settings=device.get("new_settings_needed")),
              file=sys.stderr)
    return 1 if bad else 0


def quarantine_line(device: str, error: str | None, resume: str, *, new_settings: bool = False) -> str:
    """The line that says ``device`` was quarantined for ``error`` and how to go on, by the same command or by
    ``resume``. An error's own full stop is left out: a changed host key's ended the line '...connection.; once'.
    With ``new_settings`` the error itself says how to go on (other settings: a new campaign), which neither
    "once it works again" nor a resume of this campaign can do."""
    why = (error or "?").rstrip(". ")
    if new_settings:
        return f"hwl campaign: device {device} quarantined: {why}"
    return (f"hwl campaign: device {device} quarantined: {why}; once it works again, run the same command to finish "
            f"its jobs (or {resume}, which keeps the settings the campaign was planned with)")


def cmd_run(args) -> int:
    from harness.campaign import resolve_plan

    spec = campaign_spec(args)
    plan = resolve_plan(spec)  # an unknown device or arch refused before pandas, paramiko and Ray are imported
    return _live(run, args, store=args.store, spec=spec, plan=plan, resume_flags=flags_a_resume_needs(args))


def cmd_resume(args) -> int:
    return _live(resume, args, store=args.store, name=args.name)


def status(*, store: str, name: str | None = None):
    """(campaign name, jobs per device and state, who runs it now or None), read-only.

    The store marks a job ``running`` when it is sent to its device, and the coordinator sends
    a device's next job before the current one ends (so the device never idles). A device
    measures one at a time, so its other sent jobs are counted as ``queued``; with no
    coordinator alive none is running, and ``resume`` queues them again.
    """
    from harness.store import Store

    with Store(store, readonly=True) as st:
        return _status_of(st, name)[1:]


def _status_of(st, name: str | None):
    """:func:`status` of the open store ``st``, the campaign's id first."""
    from harness.campaign import find_campaign
    from harness.campaign_lock import holder

    cid, cname, _ = find_campaign(st, name)
    frame, coordinator = st.status(cid), holder(st.path, cid)
    measuring = frame["running"].clip(upper=1) if coordinator else 0
    frame["queued"] += frame["running"] - measuring
    frame["running"] = measuring
    return cid, cname, frame, coordinator


# A coordinator sends a device's next job before the current one ends, so while one runs the newest job still
# marked running was sent at most a job's time ago: 15 minutes covers a slow TVM build and a standard profile.
LOCKLESS_WINDOW_S = 15 * 60


def lockless_coordinator_hint(st, store: str, cid: int, name: str) -> tuple[str | None, str]:
    """For campaign ``cid`` (``name``) of the open store ``st``, which no process holds the lock of: (a warning when
    a job was sent to a device lately and is still marked running, as while a coordinator of an hwl older than the
    campaign lock (7f97a1b, 2026-12-03) runs it, unseen (or for a while after a coordinator crashed), since a resume
    beside it would measure every job again; the resume line, with the flags its last run had). ``store``: the
    store's path as the user gave it, for that line."""
    from harness.campaign import go_on_command
    from harness.campaign_lock import last_run_flags

    sent = st.last_sent(cid)
    resume = go_on_command(store, name, last_run_flags(store, cid), profiles=_profiles(st, cid))
    ago = None if sent is None else time.time() - sent
    if ago is None or ago > LOCKLESS_WINDOW_S:
        return None, resume
    return (f"no process holds its lock, yet a job was sent to a device {ago:.0f} s ago and is still marked running "
            "(a coordinator that crashed leaves it so, and one of an hwl older than 7f97a1b, 2026-12-03, runs without "
            "the lock): a resume beside a coordinator still running would measure its jobs twice, so stop any "
            "first"), resume


def unchecked_hint(st, store: str, cid: int, name: str, devices) -> str | None:
    """For campaign ``cid`` (``name``) of the open store ``st``, with no job queued and no process running it: the
    line saying that its last session stopped before its end canary, and how to go on, when a resume would run that
    canary (see ``Coordinator._device_from_store``; a device with no canary of this campaign is left out, as its
    session's opening one may have been skipped); None when none would. The table alone said the campaign was
    complete, and its export then held latencies no canary had checked for drift."""
    from harness.campaign import go_on_command
    from harness.campaign_lock import flag_values, last_run_flags

    flags = last_run_flags(store, cid)
    every = flag_values(flags).get("--canary-every", DEFAULT_CANARY_EVERY)
    if str(every) == "0":
        return None
    unchecked = []
    for device in devices:  # past the campaign's own last canary on it (one of an earlier campaign: a fresh session)
        jobs = st.jobs_since_canary(cid, device, 0) if st.ran_canary(cid, device) else 0
        if jobs:
            unchecked.append(f"{count(jobs, 'job', 'jobs')} of {device}")
    if not unchecked:
        return None
    return (f"no coordinator is running it, and its last session stopped before its end canary: the latencies of "
            f"{', '.join(unchecked)} are not checked for drift yet; go on with: "
            f"{go_on_command(store, name, flags, profiles=_profiles(st, cid))}")


def _profiles(st, cid: int) -> dict:
    """Campaign ``cid``'s device -> stored profile JSON (the go-on line of an onboarding names its profile file)."""
    devices = st.devices(cid)
    return dict(zip(devices["device"], devices["profile_json"]))


def cmd_status(args) -> int:
    from harness.store import Store

    with Store(args.store, readonly=True) as st:  # once: the table and the hint below say one moment of the store
        cid, cname, frame, coordinator = _status_of(st, args.name)
        lockless = (None if args.json or coordinator or not frame["queued"].sum()
                    else lockless_coordinator_hint(st, args.store, cid, cname))
        unchecked = (None if args.json or coordinator or frame["queued"].sum()
                     else unchecked_hint(st, args.store, cid, cname, frame["device"]))
    if args.json:
        print(json.dumps({"campaign": cname, "coordinator": coordinator, "devices": frame.to_dict(orient="records")}))
        return 0
    from rich.console import Console

    from harness.report import STATUS_LEGEND, status_errors, status_table
    Console().print(status_table(frame, title=f"campaign {cname} ({args.store})"))
    for line in status_errors(frame):
        print(line)
    if frame["failed"].sum() or frame["consecutive_failures"].sum():  # the two counts read alike
        print(STATUS_LEGEND)
    if coordinator:
        print(f"being measured by {coordinator}")
    elif lockless:
        hint, resume = lockless
        print(f"{hint}; if none does, go on with" if hint else "no coordinator is running it; go on with", resume,
              sep=": ")
    elif unchecked:
        print(unchecked)
    return 0


# what each export format writes, by the output file's name
_FORMAT_OF_SUFFIX = {".parquet": "parquet", ".csv": "help", ".csv.gz": "help"}


def export_format(fmt: str | None, out: str | None) -> str:
    """The format to write: ``fmt`` when given, else the one ``out``'s name says, else Parquet.

    A name that says the other format is refused, so a ``.csv.gz`` never holds Parquet bytes.
    """
    name = Path(out).name.lower() if out else ""
    named = next((f for suffix, f in _FORMAT_OF_SUFFIX.items() if name.endswith(suffix)), None)
    if named is None and re.search(r"\.csv\.\w+$", name):  # lab.csv.bz2 held Parquet bytes, or a plain CSV
        raise CampaignError(f"--out {out}: the wide table is written as .csv, or gzipped as .csv.gz; name it so "
                            "(or .parquet for the Parquet export)")
    if fmt and named and fmt != named:
        kind = {"parquet": "Parquet", "help": "CSV"}
        raise CampaignError(f"--out {out} is a {kind[named]} name, but --format {fmt} writes {kind[fmt]}; "
                            "change one of them (.parquet for parquet, .csv or .csv.gz for help)")
    return fmt or named or "parquet"


def _check_read_back(out: Path, fmt: str | None) -> None:
    """An ``--out`` whose ending says no format, refused: lab.parqeut (a typo) or lab.json held Parquet bytes that
    `hwl data import` and the predictor commands refused, as they take a table by its name's ending."""
    suffix = out.suffix.lower()
    if not fmt and suffix and not any(out.name.lower().endswith(s) for s in _FORMAT_OF_SUFFIX):
        raise CampaignError(f"--out {out}: hwl reads a table by its name's ending, and {suffix} is none it reads; "
                            "name it .parquet (one row per result), or .csv / .csv.gz (HELP's wide table)")


def export(*, store: str, fmt: str | None = None, out: str | None = None, name=None,
           device=None) -> tuple[Path, str]:
    """Export campaigns ``name`` (a name or a list; see ``harness.export_selection``), ``device``'s results only
    when given (a name or a list). Returns the path and a line saying what was written there."""
    given, fmt = fmt, export_format(fmt, out)
    from harness.export_selection import select_export  # pandas: after the check of --format and --out's name
    from harness.exporting import export_help, export_parquet
    from harness.store import Store

    names = [name] if isinstance(name, str) else name
    devices = [device] if isinstance(device, str) else device
    with Store(store, readonly=True) as st, st.snapshot():  # the file and its line: one moment of a live store
        ids, chosen = select_export(st, names, devices)
        # a default name stays in the working folder, whatever the campaign's name holds ('/', '..'), and travels:
        # an onboarding batch's colons (onboard:pi:nb201:...) would make scp and rsync read a host name
        label = "+".join(devices or chosen)
        stem = re.sub(r"[^\w.+-]+", "_", label).lstrip(".") or "campaign"
        out = check_writable(out or (f"{stem}.parquet" if fmt == "parquet" else f"{stem}_help.csv"))
        _check_read_back(out, given)
        path = (export_parquet if fmt == "parquet" else export_help)(st, ids, out, devices=devices)
        return path, _export_line(st, ids, chosen, devices, fmt, path)


def _export_line(st, ids: list[int], names: list[str], devices, fmt: str, path) -> str:
    """'wrote 1,234 accepted latencies of 3 devices (campaign c1) to lab.parquet': what the export holds."""
    where = f"j.campaign_id IN ({','.join('?' * len(ids))})"
    if devices:
        where += f" AND j.device IN ({','.join('?' * len(devices))})"
    ok = "r.accepted = 1 AND r.label_ms IS NOT NULL"
    results, latencies, all_devices, cells, archs, devices_with = st.db.execute(
        f"SELECT count(*), coalesce(sum({ok}), 0), count(DISTINCT j.device), "
        f"count(DISTINCT CASE WHEN {ok} THEN j.arch || ' ' || j.device END), "
        f"count(DISTINCT CASE WHEN {ok} THEN j.arch END), count(DISTINCT CASE WHEN {ok} THEN j.device END) "
        f"FROM results r JOIN jobs j ON r.job_id = j.id WHERE {where}", (*ids, *(devices or ()))).fetchone()
    campaigns = f"{'campaign' if len(names) == 1 else 'campaigns'} {', '.join(names)}"
    # a campaign stopped (killed, Ctrl-C, a quarantine) exports what it holds: the line said nothing of the rest
    (left,) = st.db.execute(f"SELECT count(*) FROM jobs j WHERE {where} AND j.state IN ('queued', 'running')",
                            (*ids, *(devices or ()))).fetchone()
    left = f"; {count(left, 'job', 'jobs')} not measured yet: {_to_finish(st, ids, names)}" if left else ""
    if fmt == "help":  # one cell per (architecture, device): the median of its campaigns' labels
        return (f"wrote {count(cells, 'latency', 'latencies')} of {count(devices_with, 'device', 'devices')} on "
                f"{count(archs, 'architecture', 'architectures')} ({campaigns}{left}) to {path}")
    others = results - latencies  # failed attempts, and the ones measured again
    also = (f"; {count(results, 'result', 'results')} with "
            f"{count(others, 'failed or superseded attempt', 'failed or superseded attempts')}" if others else "")
    return (f"wrote {count(latencies, 'accepted latency', 'accepted latencies')} of "
            f"{count(all_devices, 'device', 'devices')} ({campaigns}{also}{left}) to {path}")


def _to_finish(st, ids: list[int], names: list[str]) -> str:
    """How the campaigns ``ids`` (``names``) with jobs left get them measured: a resume, or the coordinator running
    one now, which a resume beside it would not join (it is refused), yet the line told the user to resume it."""
    from harness.campaign_lock import holder

    running = [name for cid, name in zip(ids, names) if holder(st.path, cid)]
    if not running:
        return f"resume {'it' if len(names) == 1 else 'them'}, then export again"
    return (f"{', '.join(running)} {'is' if len(running) == 1 else 'are'} being measured now"
            f"{'' if len(running) == len(names) else ' (resume the others)'}; export again once done")


def cmd_export(args) -> int:
    out = args.out
    if out == "-":  # stdout, for a pipe: hwl campaign export --out - | ...
        if sys.stdout.isatty():
            raise CampaignError("--out -: stdout is a terminal; pipe it into a program or give a file name")
        out = "/dev/stdout"
    path, line = export(store=args.store, fmt=args.format, out=out, name=args.name, device=args.device)
    if export_format(args.format, out) == "help":
        # HELP's format is numbers alone (its readers and ours take every other column for a device): the settings
        # stay in the Parquet export, and a reader of this file knows its devices' settings no more than HELP's
        print(f"note: {path} is HELP's wide table, latencies alone; the settings each device was measured with "
              "(threads, cores, batch size, runtime options) are in the Parquet export (--out FILE.parquet)",
              file=sys.stderr)
    print(line, file=sys.stderr)
    # the file's name goes to stdout (for a script) unless the data went there (a pipe, or stdout redirected to a
    # file), where the line above names it already
    if messages_to(path) is sys.stdout:
        print(path)
    return 0
