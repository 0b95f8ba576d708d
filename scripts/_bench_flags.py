"""argparse types of the benchmarks' number flags, so a bad value is one usage line, not a traceback after setup."""
from __future__ import annotations

import argparse

from harness.cli.common import non_negative_int, positive_float, positive_int

__all__ = ["count_list", "non_negative_int", "positive_float", "positive_int"]


def count_list(text: str) -> str:
    """A comma-separated list of whole numbers >= 1 (``5,10,20``), checked and kept as text: the scripts split it
    themselves, and their JSON records it as given."""
    for item in text.split(","):
        try:
            positive_int(item.strip())
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None
    return text
