"""What else ran on the measured cores during a timed window (measurement-method.md rule 7).

Linux counts, per core, the time spent in each state (``/proc/stat``, in clock ticks). Over one window, the busy
time of the cores this process may run on (user + nice + system + irq + softirq) minus this process's own CPU time
(all its threads) is the time something else took there: another user's job, a cron job, a browser, the kernel's
interrupt work. ``steal`` (a hypervisor running another guest on our virtual core) is kept apart. Both are
fractions of the cores' time over the window (cores x wall time).

Interrupts count as foreign: where the kernel accounts them apart (IRQ_TIME_ACCOUNTING) they are in irq/softirq and
not in our own time; where it does not, they are charged to whatever ran, ourselves included, and cancel out.

The per-core counters move in whole ticks (``SC_CLK_TCK``, 10 ms on most kernels), so one window's figure is good
to about two ticks over its length: 0.02 of a 1 s window on one core, 0.2 of the quick profile's 0.1 s window.
Where the counters cannot be read (no ``/proc/stat``: macOS, Windows; a container that hides or renumbers the
host's cores, or shows counters that do not advance) the load is unknown, never zero, and timing goes on as before.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

PROC_STAT = "/proc/stat"
BUSY_FIELDS = (0, 1, 2, 5, 6)  # user, nice, system, irq, softirq (guest time is already in user / nice)
STEAL_FIELD = 7
IDLE_FIELDS = (3, 4)  # idle, iowait


def tick_s() -> float:
    """Seconds per tick of the /proc/stat counters."""
    return 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Snapshot:
    wall_ns: int
    own_ns: int
    busy: int  # ticks, summed over the cores
    steal: int
    total: int


class CoreLoadWatch:
    """Measures each timed window's foreign CPU time on the cores this process may run on.

    ``start()`` before a window, ``stop()`` after it: a dict ``{"foreign_cpu_frac", "steal_frac", "window_s"}``,
    or None when the counters cannot be read (``unknown`` says why).
    """

    def __init__(self, cores=None, *, stat_path: str = PROC_STAT):
        self.stat_path = stat_path
        self.unknown = ""
        if cores:
            self.cores = tuple(sorted(cores))
        elif hasattr(os, "sched_getaffinity"):
            self.cores = tuple(sorted(os.sched_getaffinity(0)))
        else:
            self.cores, self.unknown = (), "this system does not say which cores the process may run on"
        self._before: _Snapshot | None = None
        if not self.unknown:
            self._read()  # a first read says now, not at the first window, whether the counters are there

    def _read(self) -> _Snapshot | None:
        try:
            with open(self.stat_path) as f:
                text = f.read()
        except OSError:
            self.unknown = f"{self.stat_path} is not readable on this system"
            return None
        rows = {}
        for line in text.splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit():
                try:
                    rows[int(name[3:])] = [int(v) for v in rest.split()]
                except ValueError:  # a line no kernel writes: say so, and measure on
                    self.unknown = f"{self.stat_path} has a line that is not counters: {line[:80]!r}"
                    return None
        missing = [c for c in self.cores if c not in rows or len(rows[c]) <= STEAL_FIELD]
        if missing:
            self.unknown = f"core {missing[0]} is not listed in {self.stat_path} (a container that hides it?)"
            return None
        picked = [rows[c] for c in self.cores]
        return _Snapshot(wall_ns=time.perf_counter_ns(), own_ns=time.process_time_ns(),
                         busy=sum(r[i] for r in picked for i in BUSY_FIELDS),
                         steal=sum(r[STEAL_FIELD] for r in picked),
                         total=sum(r[i] for r in picked for i in BUSY_FIELDS + IDLE_FIELDS + (STEAL_FIELD,)))

    def start(self) -> None:
        self._before = None if self.unknown else self._read()

    def stop(self) -> dict | None:
        before, self._before = self._before, None
        after = None if before is None else self._read()
        if after is None:
            return None
        tick = tick_s()
        window_s = (after.wall_ns - before.wall_ns) / 1e9
        cores_s = window_s * len(self.cores)
        if cores_s <= 0:
            return None
        counted_s = (after.total - before.total) * tick
        if cores_s >= 10 * tick and counted_s < cores_s / 2:  # the counters should advance with the clock
            self.unknown = (f"the counters of {self.stat_path} did not advance with the clock ({counted_s:.2f} s "
                            f"counted in {cores_s:.2f} s of the cores' time)")
            return None
        foreign_s = (after.busy - before.busy) * tick - (after.own_ns - before.own_ns) / 1e9
        return {"foreign_cpu_frac": round(foreign_s / cores_s, 4),
                "steal_frac": round((after.steal - before.steal) * tick / cores_s, 4),
                "window_s": round(window_s, 6)}

    def summary(self, windows) -> dict:
        """The record's ``core_load``: the cores, the tick, and per window the fractions (or why unknown)."""
        if self.unknown or any(w is None for w in windows):
            return {"cores": list(self.cores), "unknown": self.unknown or "a window's counters were not read"}
        return {"cores": list(self.cores), "tick_s": tick_s(), "source": self.stat_path,
                "foreign_cpu_frac": [w["foreign_cpu_frac"] for w in windows],
                "steal_frac": [w["steal_frac"] for w in windows], "window_s": [w["window_s"] for w in windows]}


__all__ = ["CoreLoadWatch", "tick_s"]
