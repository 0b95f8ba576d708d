"""`hwl export SPACE [ARCH ...] --out DIR`: export architectures to ONNX, one JSON line each."""
from __future__ import annotations

import json
import sys

from harness.cli.common import add_archs_flags, user_path
from harness.errors import UserError
from harness.export import iter_export
from harness.paths import check_writable_folder
from spaces import resolve_archs
from spaces.cost import FBNET_DATASETS, NB201_DATASETS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export architectures to ONNX into a content-addressed store",
        description="Export NB201 / FBNet architectures to ONNX (opset 17), check each against "
                    "PyTorch in onnxruntime, and print one JSON line per architecture: "
                    '{"space", "arch", "path", "sha256", "export_s", "max_abs_err", ...}.',
    )
    p.add_argument("space", choices=["nb201", "fbnet"])
    p.add_argument("arch", nargs="*",
                   help="NB201 indices or arch strings; FBNet keys (22 comma-separated op names or an op-index key)")
    add_archs_flags(p)
    p.add_argument("--out", type=user_path, required=True, metavar="DIR", help="artifact store directory")
    p.add_argument("--dataset",
                   help=f"nb201: {', '.join(NB201_DATASETS)} (default cifar10); "
                        f"fbnet: {', '.join(FBNET_DATASETS)} (default cifar100)")
    p.add_argument("--batch-size", type=int, default=1, help="batch dimension of the input (default 1)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: number of cores)")
    p.set_defaults(func=run, trailing="arch")  # `hwl export nb201 --out art 5`: 5 is an arch too


def run(args) -> int:
    if args.arch and args.archs:
        raise UserError("give architectures either as arguments or with --archs, not both")
    if not args.arch and not args.archs:
        raise UserError("no architectures given: pass them as arguments or with --archs "
                        "(all, random:N, a comma-separated list, or @FILE)")
    archs = resolve_archs(args.space, args.arch or args.archs, seed=args.seed)
    check_writable_folder(args.out, what=f"the artifact folder {args.out}")
    for record in iter_export(args.space, archs, args.out, dataset=args.dataset,
                              batch_size=args.batch_size, workers=args.workers):
        sys.stdout.write(json.dumps(record.summary()) + "\n")
        sys.stdout.flush()
    return 0
