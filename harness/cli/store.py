"""`hwl store backup|check|recover`: a store's consistent copy while a campaign writes it, whether it is sound and
what it holds, and the rows of a damaged one copied into a new store."""
from __future__ import annotations

from harness.cli.common import user_path
from harness.text import count


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("store", help="back up, check or recover a store (also while a campaign writes to it)")
    sub = p.add_subparsers(dest="store_command", required=True)
    _copying(sub, "backup", cmd_backup, help="copy a store as of one moment, also while a campaign writes it "
                                             "(copying lab.db alone loses what is still in lab.db-wal)",
             dest="the backup's file (a store itself: give it as --store)")
    check = sub.add_parser("check", help="SQLite's integrity check of a store, and what it holds")
    check.add_argument("store", type=user_path, metavar="STORE", help="the store (lab.db)")
    check.set_defaults(func=cmd_check)
    _copying(sub, "recover", cmd_recover, help="copy the rows of a damaged store that can still be read into a new "
                                               "store", dest="the new store's file")


def _copying(sub, name: str, func, *, help: str, dest: str) -> None:
    """A subcommand that copies STORE into DEST."""
    p = sub.add_parser(name, help=help)
    p.add_argument("store", type=user_path, metavar="STORE", help="the store (lab.db)")
    p.add_argument("dest", type=user_path, metavar="DEST", help=dest)
    p.add_argument("--force", action="store_true", help="replace DEST when it exists")
    p.set_defaults(func=func)


def cmd_backup(args) -> int:
    from harness.store_backup import backup_store

    dest, held = backup_store(args.store, args.dest, overwrite=args.force)
    print(f"backed up {args.store} to {dest} ({dest.stat().st_size / 2**20:.1f} MiB, integrity ok): {held.line()}")
    return 0


def cmd_check(args) -> int:
    from harness.store_backup import check_store

    problems, counts = check_store(args.store)
    holds = counts.line() if counts else "a damaged page keeps its counts from being read"
    if problems == ["ok"]:
        print(f"{args.store}: integrity ok: {holds}")
        return 0
    found = count(len(problems), "problem", "problems") + (" or more" if len(problems) >= 20 else "")
    print(f"{args.store} is damaged: SQLite's integrity check found {found} (first: {problems[0]}); {holds}; "
          f"`hwl store recover {args.store} NEW.db` copies the rows that can still be read into a new store")
    return 1


def cmd_recover(args) -> int:
    from harness.store_backup import recover_store

    got = recover_store(args.store, args.dest, overwrite=args.force)
    lost = (f"; {count(got.damaged_stretches, 'damaged stretch', 'damaged stretches')} of rows stepped over"
            if got.damaged_stretches else "; no row was unreadable")
    orphans = (f", {count(got.orphans, 'row', 'rows')} whose parent row was lost (a result whose job was, say)"
               if got.orphans else "")
    again = (f"; {count(got.requeued, 'job', 'jobs')} whose answer was lost queued again: `hwl campaign resume "
             f"--store {args.dest}` measures them" if got.requeued else "")
    print(f"recovered {args.store} into {args.dest} (integrity ok): {got.counts.line()}{lost}{orphans}{again}")
    return 0
