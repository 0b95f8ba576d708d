#!/usr/bin/env python
"""A small stand-alone benchmark tool in the style of TFLite's ``benchmark_model``.

It is what the command transport drives in the tests (README's phone runs onnxruntime_perf_test): it loads an ONNX
file with onnxruntime, runs it ``--runs`` times and prints one line per run
(``run 3: 0.412 ms``) plus a summary line. A phone or FPGA profile points at the vendor's
own tool instead; this one lets the same path be exercised on any machine.
"""
import argparse
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", required=True, help="ONNX model file")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(args.graph, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(args.warmup):
        session.run(None, feed)
    times = []
    for i in range(args.runs):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        print(f"run {i}: {times[-1]:.4f} ms")
    print(f"count={len(times)} avg={np.mean(times):.4f} ms median={np.median(times):.4f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
