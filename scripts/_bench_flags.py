"""The benchmarks' command line: argparse types of their number flags, so a bad value is one usage line, not a
traceback after setup, and user errors met later (an unknown device or task) as one line too."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.cli.common import non_negative_int, positive_float, positive_int
from harness.errors import USER_ERRORS

__all__ = ["core", "core_ints", "core_list", "count_list", "exit_code", "known_names", "name_list",
           "non_negative_int", "number_list", "positive_float", "positive_int"]


def exit_code(main, prog: str | None = None) -> int:
    """``main()``'s exit code; a user error (an unknown device, task or profile, a missing table) is one line and
    exit code 2, as hwl says it, where it was a traceback. The line starts with ``prog`` (default: the script's
    file name)."""
    try:
        return main() or 0
    except USER_ERRORS as exc:
        print(f"{prog or Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 2


def count_list(text: str) -> str:
    """A comma-separated list of whole numbers >= 1 (``5,10,20``), checked and kept as text: the scripts split it
    themselves, and their JSON records it as given."""
    return _checked_list(text, positive_int)


def checkpoints_in_budget(parser, given: str | None, budget: int, default: tuple[int, ...]) -> str:
    """The measurement counts a replay reports, as text: those ``given`` (one past the budget is refused: its column
    would repeat the last round's numbers under a count never reached), or the ``default`` counts within the
    budget and the budget itself. The default alone refused every budget under its largest count."""
    if given is None:
        return ",".join(map(str, sorted({k for k in default if k <= budget} | {budget})))
    if max(int(k) for k in given.split(",")) > budget:
        parser.error(f"--checkpoints {given}: past the budget of {budget}")
    return given


def number_list(text: str) -> str:
    """A comma-separated list of numbers > 0 (latency limits, scales: ``5,25``), checked and kept as text."""
    return _checked_list(text, positive_float)


def _checked_list(text: str, each) -> str:
    for item in text.split(","):
        try:
            each(item.strip())
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None
    return text


def name_list(text: str) -> str:
    """A comma-separated list of names (tasks, strategies, devices) naming at least one, kept as text: the scripts
    skip empty items, so ``--tasks "$TASKS"`` with TASKS unset selected nothing and printed an empty table."""
    if not any(item.strip() for item in text.split(",")):
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give one or more, comma-separated")
    return text


def known_names(valid, what: str):
    """The type of a flag listing some of ``valid`` (``what`` names one: ``"space"``): :func:`name_list`, each item
    one of ``valid``, kept as text. bench_zcp --spaces foo timed FBNet without a word (anything not nb201 was)."""
    def check(text: str) -> str:
        unknown = [item for item in (i.strip() for i in name_list(text).split(",")) if item and item not in valid]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {', '.join(map(repr, unknown))}; "
                                             f"valid: {', '.join(valid)}")
        return text
    return check


def core(text: str) -> int:
    """A core this process may run on: the measuring child pins itself there, and an other one failed in it with
    OSError's traceback inside the benchmark's message."""
    value = non_negative_int(text)
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {value}  # macOS: no affinity
    if value not in allowed:
        raise argparse.ArgumentTypeError(f"core {value} is not one this process may run on "
                                         f"({','.join(map(str, sorted(allowed)))})")
    return value


def core_list(text: str) -> str:
    """Comma-separated cores (``0,1``; empty items skipped, as the scripts split it), each checked by :func:`core` and
    the text kept; none at all (``''``) measured unpinned, so it is refused as :func:`name_list` refuses it."""
    for item in (i.strip() for i in name_list(text).split(",")):
        if item:
            core(item)
    return text


def core_ints(text: str) -> list[int]:
    """The cores of a :func:`core_list` flag's text, its empty items skipped as that check skips them: ``0,`` and
    ``0, `` are core 0, where the scripts' own splits ended in int()'s ValueError traceback."""
    return [int(item) for item in text.split(",") if item.strip()]
