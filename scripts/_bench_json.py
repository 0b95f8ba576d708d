"""The benchmarks' --json file: checked when the flags are read, written whole when the run ends."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import strict_json, user_path
from harness.errors import UserError
from harness.paths import check_writable, written_whole

RESULTS = Path(__file__).resolve().parents[1] / "bench_results"


def add_json_flag(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json PATH`` (default bench_results/NAME.json), refused at once where it cannot be written: a folder, an
    SQLite store, a folder that cannot be made. It used to fail after the whole run, in a traceback."""
    parser.add_argument("--json", type=output_path, default=str(RESULTS / f"{name}.json"),
                        help=f"write the results here (default bench_results/{name}.json)")


def output_path(text: str) -> Path:
    """argparse type of a file the run writes when it ends (--json, --plot): refused now if it cannot be written."""
    try:
        return check_writable(user_path(text))
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def write_json(path, data, indent: int = 2) -> Path:
    """``data`` as JSON at ``path``, NaN and infinities as null (bare NaN is no JSON). The file takes the old one's
    place only once whole, so a run killed while writing leaves the last complete file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = strict_json(data, indent=indent, default=str) + "\n"
    with written_whole(path) as partial:
        partial.write_text(text)
    return path
