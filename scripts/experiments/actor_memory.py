#!/usr/bin/env python
"""Does a device actor's memory grow per call, without the measuring child? (research, not the product)

bench_soak's device actor grew by 0.65 MiB per 1,000 jobs. A real job takes about 0.3 s, mostly the
agent's measuring child, so a soak of the 10,000s of calls that tell a start-up from a leak takes hours.
This drives a real device actor (a ``DeviceWorker`` under Ray, with hwl's Ray settings) through the
actor's own part of a job only: a Ray call (two in flight, as the coordinator sends them) that takes
the device's locks, does one request/reply round trip with its real agent (``ping``) and returns a
real measurement record (one measured at the start). It prints the actor's RSS as the calls add up,
then after ``malloc_trim`` (the C library's free heap given back).

    nice -n 10 .venv/bin/python scripts/experiments/actor_memory.py [--calls 30000]
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from harness.device_worker import DeviceWorker, device_locks  # noqa: E402
from harness.profiles import load_profile  # noqa: E402
from harness.ray_cluster import ray_session  # noqa: E402
from scripts._agent_bench import tiny_conv_onnx  # noqa: E402
from tests.campaign_helpers import write_profile  # noqa: E402

MIB = 1024 * 1024


class RoundTripWorker(DeviceWorker):
    """A device worker whose call does the actor's part of a job and answers with a kept record."""

    record: dict | None = None

    def keep(self, record: dict) -> None:
        self.record = record

    def round_trip(self, job: dict) -> dict:
        with device_locks(self.profile.lock_keys):
            rtt_s = self.ping()
        return {**(self.record or {}), "job": job, "rtt_s": rtt_s}

    def rss_mib(self, trim: bool = False) -> float:
        if trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        return psutil.Process().memory_info().rss / MIB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30000)
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="hwl-actor-mem-") as tmp:
        tmp = Path(tmp)
        profile = load_profile(str(write_profile(tmp, "actor-mem", thermal_domain="actor-mem")))
        model = tiny_conv_onnx(tmp / "tiny_conv.onnx")
        with ray_session(hosts=[profile.host.resource], temp_dir=str(tmp / "ray")):
            actor = ray.remote(concurrency_groups={"status": 1})(RoundTripWorker).options(
                num_cpus=0, max_restarts=0, max_task_retries=0,
                resources={profile.host.resource: 0.001}).remote(profile.to_dict())
            record = ray.get(actor.measure.remote({"job_id": 0, "attempt": 1, "space": "nb201", "arch": "0",
                                                   "model": model["path"], "sha256": model["sha256"]}))
            ray.get(actor.keep.remote(record))
            print(f"record: {record['outcome']}; calls, seconds, actor RSS MiB", flush=True)
            marks = sorted({m for m in (1000, 2000, 5000, 10000, 20000, 40000, 80000) if m < args.calls}
                           | {args.calls})
            done, refs, t0 = 0, [], time.perf_counter()
            for mark in marks:
                while done < mark:
                    refs.append(actor.round_trip.remote({"job_id": done, "attempt": 1}))
                    if len(refs) >= 2:
                        ray.get(refs.pop(0))
                    done += 1
                ray.get(refs)
                refs = []
                print(f"{done:7d} {time.perf_counter() - t0:7.0f} {ray.get(actor.rss_mib.remote()):9.2f}", flush=True)
            print(f"after malloc_trim: {ray.get(actor.rss_mib.remote(trim=True)):.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
