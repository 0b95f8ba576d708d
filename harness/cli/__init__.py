"""The ``hwl`` command: a thin argparse layer over library functions.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` (registers flags, sets ``func``) and the function it sets,
which takes the parsed args and returns an exit code. Library code never prints; only
these modules do. User mistakes (``USER_ERRORS``) print one line and exit 2; any other
exception keeps its traceback, so user mistakes and bugs look different. Ctrl-C prints one line
(with the command's ``resume_hint(args)``, when it sets one) and exits 130; SIGTERM (``kill``, a
service manager stopping hwl) does the same and exits 143.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import re
import signal
import sys
import threading

from harness import __version__
from harness.errors import USER_ERRORS
from harness.paths import forget_made_folders, remove_made_folders

# Subcommand modules, in the order `hwl --help` lists them.
COMMAND_MODULES = [
    "space",
    "export",
    "measure",
    "campaign",
    "data",
    "store",
    "profile",
    "devices",
    "zcp",
    "search",
    "train",
    "adapt",
    "predict",
    "evaluate",
    "onboard",
]


# Modules that register commands named otherwise than the module itself.
MODULE_COMMANDS = {"devices": ("deploy", "undeploy", "status", "logs")}
# Every command -> the module that registers it, in the order `hwl --help` lists them.
COMMANDS = {cmd: m for m in COMMAND_MODULES for cmd in MODULE_COMMANDS.get(m, (m,))}


def _modules_for(argv: list[str]) -> list[str]:
    """Only the module of the command given is imported (some pull in torch or sklearn, and
    `hwl campaign status` should not wait for them); all of them for `hwl --help`."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return [COMMANDS[first]] if first in COMMANDS else list(COMMAND_MODULES)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwl", description="Hardware-latency measurement harness and predictors.")
    parser.add_argument("--version", action="version", version=f"hwl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr: -v info, -vv debug (default: warnings only)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(sys.argv[1:] if argv is None else argv):
        importlib.import_module(f"harness.cli.{name}").add_parser(subparsers)
    for command in subparsers.choices.values():
        _name_subcommands(command)
    return parser


def _name_subcommands(parser: argparse.ArgumentParser) -> None:
    """A missing subcommand named by its choices, as the usage shows them: `hwl campaign` said "the following
    arguments are required: campaign_command", the name of a variable."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if action.metavar is None and action.choices:
            action.metavar = "{" + ",".join(action.choices) + "}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so a command stops the same clean way."""


# Tells SIGTERM from Ctrl-C: Ray's blocking calls re-raise a Terminated as a plain KeyboardInterrupt.
_sigterm_seen = threading.Event()


def _terminate(signum, frame):
    _sigterm_seen.set()
    raise Terminated()


def _say_store_damaged(args, exc: Exception) -> int:
    """Exit status 2 after one line when ``exc`` is SQLite finding the store damaged; else ``exc`` goes on up,
    with its traceback."""
    from harness.store_backup import damaged_store_line

    line = damaged_store_line(exc, getattr(args, "store", None))
    if line is None:
        raise exc
    print(f"hwl {args.command}: error: {line}", file=sys.stderr)
    return 2


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but the words argparse leaves over after a command's options go to its ``trailing``
    positional (nargs='*'). argparse fills that positional, empty, at the first positional before an option, so
    `hwl export nb201 --out art 5` (or `... -- -1`) ended in 'unrecognized arguments'. Options it does not know
    stay an error, as before."""
    args, extra = parser.parse_known_args(argv)
    field = getattr(args, "trailing", None)
    taken, left, dashes = [], [], False
    for word in extra:
        if field and word == "--" and not dashes:
            dashes = True
        elif field and (dashes or not word.startswith("-") or _NEGATIVE_NUMBER.fullmatch(word)):
            taken.append(word)
        else:
            left.append(word)
    if left:
        parser.error(f"unrecognized arguments: {' '.join(left)}")
    if taken:
        setattr(args, field, [*getattr(args, field), *taken])
    return args


_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")  # what argparse takes for a positional, not an option


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:  # paramiko logs a traceback for every refused connection; we say it in one line
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    _sigterm_seen.clear()
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        remove_made_folders()  # refused: the folders its checks made for its outputs go too
        print(f"hwl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `hwl space list | head`
        return 0
    except OSError as exc:  # pandas' DatabaseError is one too
        if exc.errno != errno.ENOSPC and "[Errno 28]" not in str(exc):  # pyarrow keeps the errno in its text
            return _say_store_damaged(args, exc)
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"hwl {args.command}: error: no space left on the device{where}; free space there and run the command "
              "again (what was written before is kept whole)", file=sys.stderr)
        return 1
    except Exception as exc:
        return _say_store_damaged(args, exc)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: one line that says how to go on, not a traceback
        hint = getattr(args, "resume_hint", None)
        terminated = _sigterm_seen.is_set()
        how = "terminated" if terminated else "interrupted"
        print(f"hwl {args.command}: {how}" + (f"; {hint(args)}" if hint else ""), file=sys.stderr)
        return 143 if terminated else 130  # 128 + the signal, as a shell reports it
    finally:
        forget_made_folders()  # in-process callers (tests) run main again: start each command afresh
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
