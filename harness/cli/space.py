"""`hwl space list|sample`: print architectures of a search space."""
from __future__ import annotations

import sys

from harness.cli.common import non_negative_int
from spaces import get_space, nb201


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("space", help="list or sample architectures of a search space")
    sub = p.add_subparsers(dest="space_command", required=True)
    lst = sub.add_parser("list", help="print every architecture (nb201) as index,arch_str")
    lst.add_argument("space", choices=["nb201"])
    lst.add_argument("--format", choices=["csv", "keys"], default="csv",
                     help="csv: INDEX,ARCH_STR lines under a header; keys: arch strings alone (default csv)")
    lst.set_defaults(func=run_list)
    smp = sub.add_parser("sample", help="print N seeded random architecture keys")
    smp.add_argument("space", choices=["nb201", "fbnet"])
    smp.add_argument("--n", type=int, required=True, help="how many architectures")
    smp.add_argument("--seed", type=non_negative_int, default=0, help="seed of the draw (default 0)")
    smp.set_defaults(func=run_sample)


def run_list(args) -> int:
    out = sys.stdout
    if args.format == "csv":
        out.write("arch_index,arch_str\n")
    for i in range(nb201.N_ARCHS):
        s = nb201.to_string(i)
        out.write(f"{i},{s}\n" if args.format == "csv" else s + "\n")
    return 0


def run_sample(args) -> int:
    space = get_space(args.space)
    keys = space.sample(args.n, args.seed)
    for key in keys:
        print(f"{key},{nb201.to_string(key)}" if space is nb201 else key)
    return 0
