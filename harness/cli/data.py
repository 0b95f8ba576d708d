"""`hwl data import FILE... --store lab.db`: public latency tables into a store."""
from __future__ import annotations

import json
import sys

from harness.cli.common import user_path
from harness.text import count


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="import public latency tables into a store")
    sub = p.add_subparsers(dest="data_command", required=True)
    imp = sub.add_parser("import", help="import long or wide tables (.parquet/.csv, hwl's own exports) or "
                                        "HELP latency .pt files")
    imp.add_argument("files", type=user_path, nargs="+", metavar="FILE")
    imp.add_argument("--store", type=user_path, default="lab.db", help="SQLite store (default lab.db)")
    imp.add_argument("--space", choices=["nb201", "fbnet"], help="default: detected from the table")
    imp.add_argument("--device", help="device name of every row: a table without a device column (or with one "
                                      "device, renamed), a HELP .pt file (default: its file name)")
    imp.add_argument("--wide", action="store_true",
                     help="the table has one latency column per device (hwl campaign export --format help, "
                          "HELP's *_wide.csv.gz)")
    imp.add_argument("--mapping", type=user_path, help="HELP index mapping (str_arch2idx.pt / arch.pt); default: found "
                                       "next to the file or in its parent folder")
    imp.set_defaults(func=cmd_import)


def import_files(*, store: str, files: list[str], space=None, device=None, mapping=None,
                 wide=False) -> list[dict]:
    from harness.errors import UserError
    from harness.importers import check_sources, read_table_file, store_table
    from harness.store import Store

    # each is read for one kind of file only: given for none of the files, it was accepted and ignored
    help_files = [f for f in files if str(f).lower().endswith(".pt")]
    if mapping is not None and not help_files:
        raise UserError(f"--mapping gives the architectures of HELP's .pt files; {files[0]} names its own")
    if wide and len(help_files) == len(files):
        raise UserError(f"--wide reads a table of one column per device; {files[0]} is a HELP .pt file")
    # every file read and checked before the store is opened: a bad one imports nothing, makes no store
    tables = [(f, *read_table_file(f, space=space, device=device, mapping=mapping, wide=wide)) for f in files]
    check_sources(None, tables)  # two of them naming one device
    out = []
    # the checks and the writes under one write lock: another import (or campaign) between them would pass the
    # same checks, and the store would hold one device from two files
    with Store(store) as st, st.transaction():
        check_sources(st, tables)  # before any is stored: a clash imports none of them
        for f, sp, rows in tables:
            devices = len({d for _, d, _ in rows})
            same = store_table(st, f, sp, rows)
            stored = sum(1 for _, d, _ in rows if d not in same)
            out.append({"file": f, "space": sp, "rows": len(rows), "stored": stored, "devices": devices,
                        "already": same})
    return out


def cmd_import(args) -> int:
    for line in import_files(store=args.store, files=args.files, space=args.space, device=args.device,
                             mapping=args.mapping, wide=args.wide):
        # "stored": what this import added; a table already in the store adds 0, so a script summing it counts right
        print(json.dumps({key: line[key] for key in ("file", "space", "rows", "stored")}))
        n, devices = line["rows"], line["devices"]
        latencies = count(n, f"{line['space']} latency", f"{line['space']} latencies")
        if len(line["already"]) == devices:  # the same table again, under this name or another
            print(f"{line['file']}: its {latencies} {'is' if n == 1 else 'are'} already in {args.store} (imported "
                  f"from {', '.join(sorted(set(line['already'].values())))}); nothing changed", file=sys.stderr)
            continue
        print(f"imported {latencies} of {count(devices, 'device', 'devices')} from {line['file']} into {args.store}",
              file=sys.stderr)
    return 0
