"""`hwl store backup|check`: a store's consistent copy while a campaign writes it, and what it holds."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("store", help="back up or check a store (also while a campaign writes to it)")
    sub = p.add_subparsers(dest="store_command", required=True)

    backup = sub.add_parser("backup", help="copy a store as of one moment, also while a campaign writes it "
                                           "(copying lab.db alone loses what is still in lab.db-wal)")
    backup.add_argument("store", metavar="STORE", help="the store (lab.db)")
    backup.add_argument("dest", metavar="DEST", help="the backup's file (a store itself: give it as --store)")
    backup.add_argument("--force", action="store_true", help="replace DEST when it exists")
    backup.set_defaults(func=cmd_backup)


def cmd_backup(args) -> int:
    from harness.store_backup import backup_store

    dest, held = backup_store(args.store, args.dest, overwrite=args.force)
    print(f"backed up {args.store} to {dest} ({dest.stat().st_size / 2**20:.1f} MiB, integrity ok): {held.line()}")
    return 0
