"""Processes found in /proc by their command line, as a user would find them."""
import time
from pathlib import Path


def processes_with(marker: str, grace_s: float = 2.0) -> list[int]:
    """Processes whose command line holds ``marker``, once those just sent SIGKILL had ``grace_s`` to end."""
    deadline = time.monotonic() + grace_s
    while True:
        pids = []
        for d in Path("/proc").iterdir():
            try:  # cmdline separates its words with NULs: "sleep 31.5" never matched "sleep\0" "31.5" before
                if d.name.isdigit() and marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    pids.append(int(d.name))
            except OSError:
                continue
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def started(marker: str, timeout_s: float = 20.0) -> list[int]:
    """The processes whose command line holds ``marker``, once there is one (or none after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not (pids := processes_with(marker, grace_s=0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids
