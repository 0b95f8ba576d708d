"""Flags shared by several subcommands, defined once, their value types, and output helpers."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys


def non_negative_int(text: str) -> int:
    """argparse type of a seed (numpy takes whole numbers >= 0 only)."""
    return _whole_number(text, 0)


def positive_int(text: str) -> int:
    """argparse type of a number of things."""
    return _whole_number(text, 1)


def positive_float(text: str) -> float:
    """argparse type of a time limit or another amount above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _whole_number(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {value}")
    return value


def user_path(text: str) -> str:
    """argparse type of a file or folder flag: a leading ``~`` expanded, which no shell does after ``=``
    (``--out=~/p.pt``): a writer wrote into a folder named ``~`` in the working folder, or failed with a traceback."""
    return os.path.expanduser(text)


def comma_list(text: str | None) -> list[str] | None:
    """The names of a comma-separated flag (``--devices a, b``), spaces around them and empty ones dropped; None
    when the flag was not given."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def add_address_flag(parser, *, otherwise: str = "start a local Ray") -> None:
    """``--address`` of the commands that run a campaign: RAY_ADDRESS as its default, as Ray reads it (a local
    Ray's ray.init(num_cpus=...) failed on it with a traceback); ``otherwise`` says what the command does without
    either."""
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                        help=f"join this Ray cluster (default: RAY_ADDRESS if set, else {otherwise})")


def add_archs_flags(parser, *, required: bool = False) -> None:
    parser.add_argument(
        "--archs", required=required,
        help="architectures: 'all' (nb201), 'random:N' (with --seed), a comma-separated list of "
             "indices, inclusive index ranges (nb201: 0-9,20) or keys (FBNet keys separated by ';'), "
             "or @FILE with one per line",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed for random:N (default 0)")


def add_table_flags(parser, *, what: str = "latency table", file_flag: str = "--table") -> None:
    """A latency table from a CSV/Parquet file or from a harness store (``--store lab.db``)."""
    parser.add_argument(file_flag, type=user_path, dest="table", metavar="FILE",
                        help=f"{what}: CSV or Parquet with columns arch_index or arch_str (or arch / arch_ops / "
                             "op_idx_key), device, latency_ms")
    parser.add_argument("--store", type=user_path, metavar="DB", help=f"read the {what} from a harness store (lab.db); "
                        "works while a campaign is still writing to it")


def read_in_model_space(model, space: str, read):
    """``read(space)`` for a model file of ``space``. When it fails on an arch that reads in the other space (an
    FBNet measurements file for an NB201 model, say), the error names the model's space: the user never gave it."""
    from harness.errors import UserError
    from spaces.errors import ArchError

    try:
        return read(space)
    except ArchError as exc:
        try:
            read("fbnet" if space == "nb201" else "nb201")
        except (ArchError, UserError):
            raise exc from None  # a bad arch of the model's own space, an unreadable file: the line as it is
        raise UserError(f"{model} is an {space} model, and {exc}") from None


def messages_to(*outputs):
    """Where a command prints its own lines: stderr when one of its output files is stdout or another
    stream (``--out /dev/stdout > model.pt``), so the lines do not land in the data; else stdout."""
    from harness.paths import names_a_stream

    return sys.stderr if any(p is not None and names_a_stream(p) for p in outputs) else sys.stdout


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` with NaN and infinities as null: Python writes them bare, which JSON readers refuse."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
