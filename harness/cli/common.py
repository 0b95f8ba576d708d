"""Flags shared by several subcommands, defined once."""
from __future__ import annotations


def add_archs_flags(parser, *, required: bool = False) -> None:
    parser.add_argument(
        "--archs", required=required,
        help="architectures: 'all' (nb201), 'random:N' (with --seed), a comma-separated list of "
             "indices or keys (FBNet keys separated by ';'), or @FILE with one per line",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random:N (default 0)")
