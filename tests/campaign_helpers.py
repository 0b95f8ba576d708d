"""Shared pieces of the campaign tests: fast device profiles written into a folder."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
HWL = [str(REPO / ".venv" / "bin" / "hwl")] if (REPO / ".venv" / "bin" / "hwl").exists() else ["hwl"]

# A short timing policy: a measurement takes a fraction of a second.
FAST_POLICY = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 2, "window_min_runs": 5,
               "window_min_s": 0.03, "cooldown_s": 0.0}


def write_profile(folder: Path, name: str, *, runtime: str = "onnxruntime", options: dict | None = None,
                  policy: dict | None = None, cores=(1,), thermal_domain: str = "test-cpu",
                  recover: str | None = None, push: str | None = None) -> Path:
    """A device profile file of this machine; returns its path. ``push`` makes it a command-transport device
    (a phone through its tool), which needs ``runtime="command"``."""
    cores = [c for c in cores if c < (os.cpu_count() or 1)] or [0]
    policy = FAST_POLICY if policy is None else policy
    lines = [f'name = "{name}"', 'device_class = "cpu"', f'thermal_domain = "{thermal_domain}"', "",
             "[host]", 'name = "local"', f'transport = "{"command" if push else "local"}"',
             *([f"recover = {json.dumps(recover)}"] if recover else []),
             *([f"push = {json.dumps(push)}"] if push else []), "",
             "[runtime]", f'kind = "{runtime}"', "threads = 1", f"cores = {list(cores)}", "",
             "[runtime.options]"]
    for key, value in (options or {}).items():
        lines.append(f"{key} = {json.dumps(value)}" if isinstance(value, str) else  # a TOML basic string
                     f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    lines += ["", "[measurement]", 'profile = "quick"', "cooldown_s = 0.0", "", "[measurement.policy]"]
    lines += [f"{k} = {v}" for k, v in policy.items()]
    path = Path(folder) / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def exported_models(cache: Path, dest: Path, archs: str, *, batch_size: int = 1) -> Path:
    """``dest``, an artifact folder that holds these NB201 models already, so a campaign over it exports
    none: each is exported once a session into ``cache`` (the ``model_cache`` fixture) and copied.
    In a campaign each export costs a Ray worker seconds of torch (import, export, check) on CPUs
    the devices measure on; tests of stopping, resuming or reaching a device need the files, not
    the exports, which test_campaign_ray and test_export test."""
    from harness.artifacts import ArtifactStore
    from harness.export import ExportConfig, export_one
    from spaces import resolve_archs

    for arch in resolve_archs("nb201", archs):
        export_one("nb201", arch, cache, batch_size=batch_size)  # found there after the first time
        art = ArtifactStore(cache).get(ExportConfig.make("nb201", arch, None, batch_size).to_dict())
        ArtifactStore(dest).put(art.path.read_bytes(), art.config, art.meta)
    return dest


def leftover_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line mentions ``marker`` (a per-test Ray temp dir) or that run
    with ``RAY_TMPDIR=marker`` (Ray renames some daemons, e.g. ``ray::DashboardAgent``)."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            if any(marker in part for part in (proc.info["cmdline"] or [])) or has_env(proc.pid, marker):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def leftover_names(marker: str) -> list[str]:
    """Names of :func:`leftover_processes` still alive (one may exit between the look and its name)."""
    names = []
    for proc in leftover_processes(marker):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            names.append(proc.name())
    return names


def has_env(pid: int, marker: str) -> bool:
    # read /proc directly: a renamed process (setproctitle) pads its environ with NULs, and
    # psutil's parser stops at the first empty entry
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"RAY_TMPDIR={marker}".encode() in data.split(b"\0")


def kill_leftovers(marker: str) -> list[int]:
    """SIGKILL, by pid, what a test's Ray left behind; returns the pids."""
    pids = []
    for proc in leftover_processes(marker):
        try:
            os.kill(proc.pid, signal.SIGKILL)
            pids.append(proc.pid)
        except ProcessLookupError:
            pass
    return pids


def hwl(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*HWL, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# How long signal_when waits for its moment: a guard against a hung hwl, not a measure of speed. Under load every
# record of a test's device may come out contended, and each job then takes 3 attempts (rule 18): no job of a 6-job
# campaign was done after 180 s (load 25 on 2 cores), when the old wait ran out and sent the signal anyway.
MOMENT_WAIT_S = 600


def signal_when(args, ray_tmp, ready, sig, *, between=None, between_ready=None, env=None):
    """Start `hwl *args` (with ``env`` added to the environment), wait until ``ready()``, send ``sig``. With
    ``between``, first wait until ``between_ready()`` (default ``ready``) and call ``between(pid)``. ``sig`` may also
    be a function of the pid that does something else to the process tree. Returns (stderr, exit status, stdout)."""
    # a shell without job control starts background jobs with SIGINT ignored; Ctrl-C must reach hwl
    proc = subprocess.Popen([*HWL, *args], env={**os.environ, **(env or {}), "RAY_TMPDIR": ray_tmp},
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def wait_until(condition):
        deadline = time.monotonic() + MOMENT_WAIT_S
        while proc.poll() is None and not condition():
            assert time.monotonic() < deadline, f"the moment to signal hwl did not come within {MOMENT_WAIT_S} s"
            time.sleep(0.1)
        assert proc.poll() is None, ("hwl ended before the moment to signal it came", proc.communicate())

    try:
        if between:
            wait_until(between_ready or ready)
            between(proc.pid)
        wait_until(ready)
        sig(proc.pid) if callable(sig) else os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            kill_leftovers(ray_tmp)
    return stderr, proc.returncode, stdout
