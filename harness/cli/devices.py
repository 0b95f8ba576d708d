"""`hwl deploy | undeploy | status | logs`: agents on the lab's devices over SSH."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness.cli.common import positive_int, user_path
from harness.errors import UserError
from harness.text import without_name

DEFAULT_ARTIFACTS = Path("~/.cache/hwl/artifacts")


def add_known_hosts_flag(parser) -> None:
    parser.add_argument("--known-hosts", type=user_path, metavar="FILE",
                        help="known_hosts file to verify host keys against, for devices whose profile names "
                             "none (its own known_hosts wins; default ~/.ssh/known_hosts)")


def _devices_flags(parser, *, all_help: str = "every ssh profile that hwl knows") -> None:
    parser.add_argument("devices", nargs="*", metavar="DEVICE", help="device profile names or .toml paths")
    parser.set_defaults(trailing="devices")  # `hwl status pi-1 --json pi-2`: pi-2 too (harness.cli._parse)
    parser.add_argument("--all", action="store_true", help=all_help)
    add_known_hosts_flag(parser)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("deploy", help="put the agent on ssh devices, install the runtime, self-test")
    _devices_flags(p)
    p.add_argument("--trust-new-host", action="store_true",
                   help="record an unknown host key in known_hosts instead of refusing it")
    p.add_argument("--no-selftest", action="store_true", help="skip the self-test measurement")
    p.add_argument("--artifacts", type=user_path,
                   help=f"where the self-test model is exported (default {DEFAULT_ARTIFACTS}; not with --no-selftest)")
    p.add_argument("--tvm-libraries", type=user_path, metavar="LOCAL_DIR",
                   help="copy the TVM libraries scripts/build_tvm_libraries wrote there into each device's "
                        "runtime.options.library_dir (only those missing or different; sha256 checked)")
    p.add_argument("--prune", action="store_true",
                   help="with --tvm-libraries: remove from each library_dir the libraries LOCAL_DIR no longer holds "
                        "(only files named <sha256>.so[.sha256] as deploy writes them; never a link or another file)")
    p.set_defaults(func=cmd_deploy)

    p = subparsers.add_parser("undeploy", help="remove the agent and its files from ssh devices")
    _devices_flags(p)
    p.set_defaults(func=cmd_undeploy)

    p = subparsers.add_parser("status", help="reachable?, agent version, runtime, last self-test, quarantined?")
    _devices_flags(p, all_help="every profile that hwl knows (ssh, local and command devices)")
    p.add_argument("--store", type=user_path, help="store whose campaigns say which devices are quarantined")
    p.add_argument("--json", action="store_true", help="print JSON (every field) instead of a table")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("logs", help="the tail of a device agent's log")
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("-n", "--lines", type=positive_int, default=100, help="lines from the end (default 100)")
    add_known_hosts_flag(p)
    p.set_defaults(func=cmd_logs)


def apply_known_hosts(args) -> None:
    """--known-hosts reaches every Host made in this process (and local Ray's workers)."""
    if getattr(args, "known_hosts", None):  # paramiko: imported for the flag only, not before a command's checks
        from harness.remote.connect import KNOWN_HOSTS_ENV
        from harness.remote.known_hosts import read_known_hosts

        path = Path(args.known_hosts).expanduser().resolve()
        read_known_hosts(path)  # a folder or a binary file: refused before any device is reached
        os.environ[KNOWN_HOSTS_ENV] = str(path)


def warn_of_own_known_hosts(profiles) -> None:
    """One line for each ssh device that --known-hosts does not reach: its profile's own ``known_hosts`` wins, so
    the flag was taken and, for that device, silently not used (an unknown key recorded in the profile's file)."""
    from harness.remote.connect import KNOWN_HOSTS_ENV

    given = os.environ.get(KNOWN_HOSTS_ENV)
    for p in profiles:
        own = p.host.known_hosts
        # both resolved: HWL_KNOWN_HOSTS may come from the user's environment as written, not from the flag
        if given and p.host.transport == "ssh" and own and \
                Path(own).expanduser().resolve() != Path(given).expanduser().resolve():
            print(f"hwl: {p.name} checks host keys against {own}, the known_hosts of its profile {p.source}, not "
                  f"--known-hosts {given}", file=sys.stderr)


def _profiles(args, *, ssh_only: bool = True):
    profiles = _named_profiles(args, ssh_only=ssh_only)
    warn_of_own_known_hosts(profiles)
    return profiles


def _named_profiles(args, *, ssh_only: bool):
    from harness.profiles import available_profiles, load_profile, load_profiles

    if getattr(args, "all", False):
        if args.devices:
            raise UserError("give device names or --all, not both")
        profiles = [load_profile(path) for path in available_profiles().values()]
        profiles = [p for p in profiles if p.host.transport == "ssh" or not ssh_only]
        if not profiles:
            raise UserError("no ssh device profiles found: write one with `hwl profile new NAME --transport ssh ...`")
        return profiles
    if not args.devices:
        raise UserError("name at least one device (a profile name or .toml file), or use --all")
    return load_profiles(args.devices)


# A host's errors name the device, as they must where nothing else does (`hwl logs`): after 'pi-1: error: ' it is "it"
_NAMED_AGAIN = (("cannot reach {} at ", "cannot reach it at "),
                ("lost the connection to {} (", "lost the connection to it ("))


def named_once(name: str, message: str) -> str:
    """``message`` for a line that starts with the device's ``name``, without the name again: a session's own
    prefix ('pi-1: error: pi-1: ...') or a host's error ('pi-1: error: cannot reach pi-1 at ...': 'it')."""
    message = without_name(name, message)
    for said, instead in _NAMED_AGAIN:
        message = message.replace(said.format(name), instead, 1)
    return message


def _print_failures(group) -> None:
    for name, exc in group.failed.items():
        print(f"{name}: error: {named_once(name, str(exc))}", file=sys.stderr)


def cmd_deploy(args) -> int:
    from harness.paths import check_writable_folder

    if args.prune and not args.tvm_libraries:
        raise UserError("--prune removes the TVM libraries that the --tvm-libraries folder no longer holds: give "
                        "--tvm-libraries LOCAL_DIR too")
    if args.no_selftest and args.artifacts:  # taken, and nothing exported there
        raise UserError("--artifacts is where the self-test model is exported, and --no-selftest exports none: "
                        "give one of them")
    args.artifacts = args.artifacts or str(DEFAULT_ARTIFACTS)
    apply_known_hosts(args)
    profiles = _profiles(args)
    from harness.remote.lab import deploy_devices  # paramiko: imported once the devices are known
    from harness.remote.selftest import selftest_failed

    libraries = _tvm_libraries(args.tvm_libraries, profiles) if args.tvm_libraries else None
    if not args.no_selftest:  # the self-test model is exported there: a file in the way ended in a traceback
        check_writable_folder(args.artifacts, what=f"the artifact folder {args.artifacts}")
    group = deploy_devices(profiles, artifact_dir=Path(args.artifacts).expanduser(),
                           trust_new_host=args.trust_new_host, selftest=not args.no_selftest,
                           tvm_libraries=libraries, prune=args.prune)
    failed_tests = 0
    for name, done in group.succeeded.items():
        report, stale, record = done["report"], done["stale"], done["selftest"] or {}
        test = {} if stale else record  # another setup's record is not this setup's self-test
        line = {"device": name, "changed": report.changed, "agent": report.bundle,
                "machine": report.facts.machine, "python": ".".join(map(str, report.facts.python_version)),
                "steps": report.steps, "selftest": test.get("outcome"), "selftest_message": test.get("message"),
                "selftest_error": test.get("error"),
                "selftest_ms": test.get("median_ms"), "fingerprint_id": test.get("fingerprint_id"),
                "selftest_other_setup": f"{record.get('outcome')}, {stale}" if stale else None}
        print(json.dumps(line))
        if stale:
            print(f"{name}: not self-tested (--no-selftest); its last self-test ({record.get('outcome')}) was {stale}, "
                  "so it says nothing of this setup", file=sys.stderr)
        if not args.no_selftest and selftest_failed(done["selftest"]):  # a lab script must not start a campaign on it
            why, outcome = test.get("message") or "(no message)", _outcome_label(test["outcome"], test.get("error"))
            print(f"{name}: self-test failed ({outcome}): {why}", file=sys.stderr)
            failed_tests += 1
    _print_failures(group)
    return 0 if group.ok and not failed_tests else 1


def _tvm_libraries(folder: str, profiles):
    """--tvm-libraries, checked before any device is reached: the folder's libraries, each hashing as recorded,
    and every profile's library_dir."""
    from harness.remote.tvm_libraries import LocalLibraries, library_dir_of

    for profile in profiles:
        library_dir_of(profile)
    return LocalLibraries.read(Path(folder).expanduser())


def cmd_undeploy(args) -> int:
    from harness.remote.lab import undeploy_devices

    apply_known_hosts(args)
    group = undeploy_devices(_profiles(args))
    for name, what in group.succeeded.items():
        print(f"{name}: {what}")
    _print_failures(group)
    return 0 if group.ok else 1


def _device_states(store: str | None) -> dict:
    """Latest state of each device over the store's campaigns (quarantined or active)."""
    if not store:
        return {}
    from harness.store import Store

    with Store(store, readonly=True) as st:  # says when the store is missing
        frame = st.query("SELECT device, state, error FROM campaign_devices ORDER BY updated_at")
    # pandas 3 reads a NULL error beside another device's text as NaN, which is truthy and no str: None here
    return {row.device: {"state": row.state, "error": row.error if isinstance(row.error, str) else None}
            for row in frame.itertuples()}


def cmd_status(args) -> int:
    from agents.protocol import MEASURED_OUTCOMES

    apply_known_hosts(args)
    states = _device_states(args.store)
    profiles, unreadable = _status_profiles(args)
    from harness.remote.connect import deploy_command  # paramiko: imported once the devices are known
    from harness.remote.lab import device_status

    rows = [device_status(p, device_states=states) for p in profiles] + unreadable
    profiles += [None] * len(unreadable)
    # exit 1 otherwise, in both forms: an unreachable device, and one reached that cannot measure (no agent there)
    all_usable = all(r["usable"] is not False for r in rows)
    if args.json:
        print(json.dumps(rows))
        return 0 if all_usable else 1
    from rich.console import Console

    console = Console()
    table = _status_table(rows, STATUS_COLUMNS)
    # at 80 columns (a pipe, a log) all the columns cut their headers to 'trans…', 'selft…', 'self…'
    narrow = console.measure(table, options=console.options.update_width(10_000)).maximum > console.width
    if narrow:
        table = _status_table(rows, [c for c in STATUS_COLUMNS if c not in WIDE_ONLY])
    console.print(table)
    if narrow:
        print(f"({' and '.join(WIDE_ONLY)} left out to fit {console.width} columns; --json gives them)")
    # the column's '-' said nothing of why (a profile file status cannot read is a row of its own, said below)
    if any(r["reachable"] is None and r["transport"] == "command" for r in rows):
        print("(reachable -: a command device is reached through its own tool, which hwl status does not run)")
    for profile, r in zip(profiles, rows):  # in full, one line each: a column cut them to a few letters a line
        if r["error"]:
            print(f"{r['device']}: {named_once(r['device'], r['error'])}")
        if r["note"]:  # where status looked, for a device a campaign may run elsewhere
            print(f"{r['device']}: {r['note']}")
        if r["selftest"] and r["selftest"] not in MEASURED_OUTCOMES:  # why it measured nothing, which deploy said once
            kind = f" ({r['selftest_error']})" if r["selftest_error"] else ""
            print(f"{r['device']}: last self-test {r['selftest']}{kind}: {r['selftest_message'] or '(no message)'}")
        if r["selftest_other_setup"]:  # the profile's runtime settings or hwl's agent changed since
            print(f"{r['device']}: last self-test was {r['selftest_other_setup']}, so it says nothing of this setup; "
                  f"`{deploy_command(profile)}` self-tests it")
    return 0 if all_usable else 1


def _status_profiles(args) -> tuple[list, list[dict]]:
    """The profiles `hwl status` shows, and with --all a status row (not usable, its error) for each profile file
    that cannot be read: one typo in one file of the profile folder hid every other device of the lab."""
    from harness.errors import ProfileError
    from harness.profiles import available_profiles, load_profile

    if not getattr(args, "all", False) or args.devices:
        return _profiles(args, ssh_only=False), []
    from harness.remote.lab import status_row  # paramiko: not to refuse an unknown device name

    profiles, unreadable = [], []
    for name, path in available_profiles().items():
        try:
            profiles.append(load_profile(path))
        except ProfileError as exc:
            unreadable.append(status_row(name, usable=False, error=str(exc)))
    warn_of_own_known_hosts(profiles)
    return profiles, unreadable


STATUS_COLUMNS = ("device", "transport", "runtime", "reachable", "agent", "self-test", "state")
WIDE_ONLY = ("transport", "agent")  # the columns a narrow terminal goes without


def _status_table(rows: list[dict], columns):
    from rich.table import Table

    table = Table(title="devices")
    for col in columns:  # names and answers are never cut: at 80 columns every local-ort-* read 'local…'
        table.add_column(col, no_wrap=col in ("device", "reachable", "state"))
    for r in rows:
        ms = f" {r['selftest_ms']:.3f} ms" if r["selftest_ms"] is not None else ""
        cells = {"device": r["device"], "transport": r["transport"], "runtime": r["runtime"],
                 "reachable": {True: "yes", False: "NO", None: "-"}[r["reachable"]], "agent": r["agent"] or "",
                 "self-test": _selftest_label(r) + ms, "state": r["state"] or ""}
        table.add_row(*(cells[col] for col in columns))
    return table


def _selftest_label(row: dict) -> str:
    """A status row's self-test: 'stale' for a record of another setup (why is below the table: 'stale' fits
    the column at 80 characters), else its outcome."""
    return "stale" if row["selftest_other_setup"] else _outcome_label(row["selftest"], row["selftest_error"])


def _outcome_label(outcome: str | None, error: str | None) -> str:
    """'ok', 'load_error', 'refused: CoresUnavailable' (the agent's error class), or '' for none."""
    return f"{outcome}: {error}" if error else outcome or ""


def cmd_logs(args) -> int:
    from harness.profiles import load_profile

    apply_known_hosts(args)
    profile = load_profile(args.device)
    from harness.remote.lab import device_logs  # paramiko: not to refuse an unknown device name

    warn_of_own_known_hosts([profile])
    sys.stdout.write(device_logs(profile, lines=args.lines))
    return 0
