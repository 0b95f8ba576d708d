"""``python -m agents serve --stdio [--cache-dir DIR]``: run the agent on this device.

Protocol lines go to stdout only; logs go to stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents", description="hwl device agent")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="answer the JSON-lines protocol")
    serve.add_argument("--stdio", action="store_true", required=True,
                       help="speak on stdin/stdout (the only transport; SSH channels carry it too)")
    serve.add_argument("--cache-dir", help="hash-keyed model cache: files named <sha256>.onnx")
    serve.add_argument("--cores", help="pin the agent process itself to these CPUs, e.g. '1' or '2,3' "
                                       "(each measurement is pinned to its request's cores)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s agent[%(process)d] %(levelname)s %(name)s: %(message)s")
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if args.cores:
        try:
            cores = {int(c) for c in args.cores.split(",")}
            os.sched_setaffinity(0, cores)
        except (ValueError, OSError) as exc:
            parser.error(f"--cores {args.cores!r}: {exc}; usable cores: {usable}")
    from agents.server import serve_stdio
    return serve_stdio(args.cache_dir, usable_cores=usable)


if __name__ == "__main__":
    sys.exit(main())
