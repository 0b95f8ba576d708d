"""The main job behind ``scripts/demo`` (``python -m scripts.demo_main``).

For now: export a handful of NB201 and FBNet architectures into the artifact store, run each
once in onnxruntime, and print what was done. Later issues grow this into a measurement
campaign and a predictor run.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from harness.export import export_many
from spaces import fbnet, nb201
from spaces.cost import flops_params

ROOT = Path(__file__).resolve().parents[1]
# A fixed, varied handful: index 0, the best CIFAR-10 cell (6111), the all-conv3x3 cell, a
# cell whose output is disconnected, plus seeded random FBNet keys.
NB201_ARCHS = [0, 6111, nb201.to_index("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                                       "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
               min(nb201.disconnected_indices())]


def run_once_ms(path: str, shape) -> float:
    """Load the model in onnxruntime (1 thread, CPU) and time one inference."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros(shape, dtype=np.float32)}
    session.run(None, feed)  # warm-up
    start = time.perf_counter_ns()
    session.run(None, feed)
    return (time.perf_counter_ns() - start) / 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="hwl demo: export a handful of architectures and run them")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "onnx", help="artifact store")
    parser.add_argument("--fbnet", type=int, default=2, help="random FBNet architectures (default 2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    console = Console(width=max(Console().width, 120))
    jobs = [("nb201", NB201_ARCHS), ("fbnet", fbnet.sample(args.fbnet, seed=0))]
    table = Table(title=f"Exported to {args.out} and run once in onnxruntime (1 thread)")
    for col in ("space", "arch", "dataset", "MMACs", "params", "ONNX KiB", "sha256", "export s", "max abs err",
                "run ms"):
        left = col in ("space", "arch", "dataset", "sha256")
        table.add_column(col, justify="left" if left else "right", no_wrap=True,
                         max_width=16 if col == "arch" else None, overflow="ellipsis")
    start = time.perf_counter()
    for space, archs in jobs:
        if not archs:
            continue
        with console.status(f"exporting {len(archs)} {space} architectures"):
            records = export_many(space, archs, args.out, workers=args.workers)
        flops, params = flops_params(space, [r.arch for r in records], records[0].dataset)
        for rec, macs, n_params in zip(records, flops, params):
            arch = str(rec.arch) if space == "nb201" else fbnet.to_idx_key(fbnet.parse(rec.arch))
            table.add_row(space, arch, rec.dataset, f"{macs / 1e6:.1f}", f"{n_params / 1e3:.0f}k",
                          f"{rec.onnx_bytes / 1024:.0f}", rec.sha256[:10],
                          "cached" if rec.cache_hit else f"{rec.export_s:.2f}", f"{rec.max_abs_err:.1e}",
                          f"{run_once_ms(rec.path, rec.input_shape):.2f}")
    console.print(table)
    console.print(f"done in {time.perf_counter() - start:.1f} s; run again to see the cache hits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
