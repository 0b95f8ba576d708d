"""Environment fingerprint of the device, taken once per agent session (rule 4).

Everything is read from /proc, /sys, ``platform`` and package metadata, so no runtime is
imported. Unreadable fields are left out rather than guessed. The fingerprint id is a hash of
the *stable* fields only (hardware, kernel, versions), so two sessions on the same unchanged
device share an id while load, temperature and frequency vary freely.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from agents import __version__

log = logging.getLogger(__name__)

# Distribution names whose versions the record keeps (read without importing them).
RUNTIME_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "torch": ("torch",),
                         "tvm": ("apache-tvm",), "numpy": ("numpy",)}
STABLE_FIELDS = ("agent_version", "machine", "kernel", "cpu_model", "cpu_count", "mem_total_kb",
                 "python", "runtime_versions", "gpus")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _meminfo() -> dict:
    out = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            out[name] = int(rest.split()[0])
    return out


def _cpufreq() -> dict:
    """Governor and cur/min/max kHz per core, where cpufreq exists (absent in most VMs)."""
    cores = {}
    for d in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        core = d.parent.name
        cores[core] = {k: _read(d / f) for k, f in (("governor", "scaling_governor"),
                                                   ("cur_khz", "scaling_cur_freq"),
                                                   ("min_khz", "scaling_min_freq"),
                                                   ("max_khz", "scaling_max_freq"))
                       if _read(d / f) is not None}
    return cores


def _temperatures_c() -> dict:
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw, kind = _read(zone / "temp"), _read(zone / "type") or zone.name
        if raw and raw.lstrip("-").isdigit():
            temps[f"{zone.name}:{kind}"] = int(raw) / 1000.0
    throttle = _read("/sys/devices/platform/soc/soc:firmware/get_throttled")  # Raspberry Pi
    if throttle is not None:
        temps["pi_throttled"] = throttle
    return temps


def hottest_c() -> float | None:
    """Highest temperature any thermal zone reports, or None where there are no sensors."""
    temps = [v for v in _temperatures_c().values() if isinstance(v, float)]
    return max(temps) if temps else None


def _gpus() -> list[dict]:
    """NVIDIA GPUs via nvidia-smi (name, driver, clocks); empty when there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu"
    try:
        out = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return []
    keys = query.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in out.splitlines() if line.strip()]


def runtime_versions() -> dict:
    """Installed versions of the runtimes, from package metadata (nothing is imported)."""
    out = {}
    for name, dists in RUNTIME_DISTRIBUTIONS.items():
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def collect() -> dict:
    """The fingerprint as a JSON-able dict (stable and volatile fields together)."""
    mem = _meminfo()
    gpus = _gpus()
    stable_gpus = [{k: g.get(k) for k in ("name", "driver_version", "memory.total")} for g in gpus]
    return {
        "agent_version": __version__,
        "hostname": platform.node(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_kb": mem.get("MemTotal"),
        "mem_available_kb": mem.get("MemAvailable"),
        "load_avg": list(os.getloadavg()),
        "cpufreq": _cpufreq(),
        "temperatures_c": _temperatures_c(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "runtime_versions": runtime_versions(),
        "gpus": stable_gpus,
        "gpu_state": gpus,
    }


def fingerprint_id(fp: dict) -> str:
    """16 hex digits of sha256 over the stable fields (see ``STABLE_FIELDS``)."""
    stable = {k: fp.get(k) for k in STABLE_FIELDS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["STABLE_FIELDS", "collect", "fingerprint_id", "hottest_c", "runtime_versions"]
