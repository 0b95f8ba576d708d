"""Every process a measurement started, found and killed, those that left its process group too.

A process that calls setsid (a command template that daemonizes, a runtime that starts a server) leaves the
measuring child's process group, so killing the group missed it: it ran on, on the device's cores, beside every
later measurement. On Linux the measuring child makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``):
an orphan among its descendants is then re-parented to it, not to init, so while it lives every process it
started is in its tree, which ``/proc`` shows. Elsewhere (macOS, the BSDs) there is neither: only the process group
is killed, and a process that left it runs on. A child that dies on its own (a crash, the OOM killer) ends its
subreaping too: what had left its group is re-parented to init and runs on. The agent, its parent, is no subreaper,
as its own short-lived processes (``nvidia-smi`` for the fingerprint) run beside a measurement.

Kept to the standard library (ctypes and /proc): the agent bundle needs numpy and a runtime only.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
COMMAND_CHARS = 120


def become_subreaper() -> bool:
    """Linux: have this process's orphaned descendants re-parented to it. False where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    """Each live process's parent, from /proc (empty where there is no /proc); zombies are left out."""
    parents = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return parents
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path("/proc", name, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]  # the command in parentheses may hold spaces
        if state != "Z":
            parents[int(name)] = int(ppid)
    return parents


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid``, nearest first."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(0), [])
        found += below
        todo += below
    return found


def describe(pid: int) -> str:
    """``pid: command line`` (shortened), for a log line or a record."""
    try:
        argv = Path("/proc", str(pid), "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
        command = argv.decode(errors="replace") or "?"
    except OSError:
        command = "?"
    return f"{pid}: {command[:COMMAND_CHARS]}"


def kill_descendants(pid: int) -> list[str]:
    """SIGKILL every process below ``pid``; what was killed, described. Each is stopped first and the tree walked
    again until no new one shows, so none starts another while the rest are killed (its orphan would escape)."""
    stopped: dict[int, str] = {}
    while True:
        tree = descendants(pid)
        new = [p for p in tree if p not in stopped]
        if not new:
            break
        for p in new:
            stopped[p] = describe(p)
            _signal(p, signal.SIGSTOP)
    # The last walk is the frozen tree: a pid stopped but gone from it ended meanwhile and may be another's now.
    killed = [p for p in stopped if p in tree]
    for p in stopped:
        _signal(p, signal.SIGKILL if p in killed else signal.SIGCONT)
    for p in killed:  # orphans re-parented to this process: reap them (elsewhere their parent or init does)
        try:
            os.waitpid(p, 0)
        except ChildProcessError:
            pass
    return [stopped[p] for p in killed]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
