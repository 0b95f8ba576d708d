"""Every process a measurement started, found and killed, those that left its process group too.

A process that calls setsid (a command template that daemonizes, a runtime that starts a server) leaves the
measuring child's process group, so killing the group missed it: it ran on, on the device's cores, beside every
later measurement. On Linux the measuring child makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``):
an orphan among its descendants is then re-parented to it, not to init, so while it lives every process it
started is in its tree, which ``/proc`` shows. A child that dies on its own (a crash, the OOM killer, a ``kill -9``)
ends its subreaping too: what it left is re-parented to init, out of every tree the agent watches. So each job
also carries a mark, ``HWL_JOB_MARK=<random>`` in the measuring child's environment, which every process it starts
inherits and ``/proc/PID/environ`` shows to the same user: :func:`kill_job` finds the job's processes by it, wherever
they were re-parented. A mark, not the agent as a subreaper: the orphans that would come to the agent (or to
``hwl measure``, which measures in its own process) are not all the job's, and it would have to reap each of them.
A process that clears its environment (``env -i``, sudo) or makes itself undumpable (ssh-agent) loses its mark: the
orphan of a dead child among those runs on, as every process that left the group did before. Elsewhere (macOS, the
BSDs) there is neither subreaper nor ``/proc``: only the process group is killed, and a process that left it runs on.

Kept to the standard library (ctypes and /proc): the agent bundle needs numpy and a runtime only.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Callable

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
COMMAND_CHARS = 120
JOB_MARK_ENV = "HWL_JOB_MARK"
PF_EXITING = 0x00000004  # linux/sched.h: ending on its own; its command line and environment read empty
PF_KTHREAD = 0x00200000  # linux/sched.h: a kernel thread, whose environment is always empty
EXEC_SETTLE_S = 0.2  # how long a search by mark waits for the processes in the middle of an exec


def become_subreaper() -> bool:
    """Linux: have this process's orphaned descendants re-parented to it. False where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _pids() -> list[int]:
    """Every process id in /proc (empty where there is none)."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command (state, ppid, ..., flags at 6); None when gone."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the command in parentheses may hold spaces


def _tree() -> tuple[dict[int, list[int]], set[int]]:
    """Each live process's children, from /proc (empty where there is no /proc), zombies left out; and the processes
    already exiting. Those are no descendants to kill: freeing a large memory takes a while (86 ms for 1 GiB here),
    and one caught then was killed and recorded as left running, as ``?`` (its command line is gone by then). Yet
    their children are theirs until the exit ends: left out of the tree with them, a command's ``setsid sleep``
    whose parent half was exiting was in no tree, and ran on."""
    children: dict[int, list[int]] = {}
    exiting = set()
    for pid in _pids():
        fields = _stat(pid)
        if fields and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(pid)
            if int(fields[6]) & PF_EXITING:
                exiting.add(pid)
    return children, exiting


def new_job_mark() -> str:
    """A mark no other job carries, for ``HWL_JOB_MARK`` in a measuring child's environment."""
    return secrets.token_hex(16)


def marked(mark: str) -> list[int]:
    """The live processes whose environment holds ``HWL_JOB_MARK=mark`` (those this user may read). A process in
    the middle of an exec shows an empty environment for a moment (ms on a loaded machine, measured), so the search
    is repeated while one does, for at most ``EXEC_SETTLE_S``."""
    entry = f"{JOB_MARK_ENV}={mark}".encode()
    deadline = time.monotonic() + EXEC_SETTLE_S
    while True:
        found, execing = _scan_environs(entry)
        if not execing or time.monotonic() >= deadline:
            return found
        time.sleep(0.005)


def _scan_environs(entry: bytes) -> tuple[list[int], bool]:
    """The processes whose environment holds ``entry``, and whether one was in the middle of an exec."""
    found, execing = [], False
    for pid in _pids():
        environ = _environ(pid)
        if environ == b"":
            if _in_exec(pid):
                execing = True
                continue
            # An exec that ended between the read and _in_exec's look shows now (measured: 1 in 400 under load);
            # a settled empty environment stays empty.
            environ = _environ(pid)
        if environ and entry in environ.split(b"\0"):
            found.append(pid)
    return found, execing


def _environ(pid: int) -> bytes | None:
    """A process's environment as /proc shows it; None when gone, or not readable (another user's, undumpable)."""
    try:
        return Path("/proc", str(pid), "environ").read_bytes()
    except OSError:
        return None


def _in_exec(pid: int) -> bool:
    """Whether a process whose environment reads empty may be in the middle of an exec: it runs (R, or D reading
    the new program) and is neither a kernel thread nor exiting. A zombie's, a kernel thread's, an exiting
    process's or an ``env -i`` process's environment reads empty for good; the command line tells nothing, as it
    shows before the environment does."""
    fields = _stat(pid)
    return bool(fields) and fields[0] in ("R", "D") and not int(fields[6]) & (PF_KTHREAD | PF_EXITING)


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid``, nearest first; those exiting on their own are walked through, not given."""
    children, exiting = _tree()
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(0), [])
        found += below
        todo += below
    return [p for p in found if p not in exiting]


def describe(pid: int) -> str:
    """``pid: command line`` (shortened), for a log line or a record."""
    try:
        argv = Path("/proc", str(pid), "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
        command = argv.decode(errors="replace") or "?"
    except OSError:
        command = "?"
    return f"{pid}: {command[:COMMAND_CHARS]}"


def kill_descendants(pid: int) -> list[str]:
    """SIGKILL every process below ``pid``; what was killed, described (see :func:`_kill_frozen`)."""
    return _kill_frozen(lambda: descendants(pid))


def kill_job(mark: str, *, child: int | None = None) -> list[str]:
    """SIGKILL every process of a measurement: those carrying its mark and, given its measuring ``child`` (alive,
    or dead but not reaped, so that its pid is still its own), those below it; the child itself is spared. What was
    killed, described."""
    spared = {child, os.getpid()}  # this process never stops itself, whatever its environment holds

    def job() -> list[int]:
        found = marked(mark) + (descendants(child) if child is not None else [])
        return [p for p in dict.fromkeys(found) if p not in spared]

    return _kill_frozen(job)


def _kill_frozen(find: Callable[[], list[int]]) -> list[str]:
    """SIGKILL the processes ``find`` returns; what was killed, described. Each is stopped first and ``find`` called
    again until no new one shows, so none starts another while the rest are killed (its orphan would escape)."""
    stopped: dict[int, str] = {}
    while True:
        found = find()
        new = [p for p in found if p not in stopped]
        if not new:
            break
        for p in new:
            stopped[p] = describe(p)
            _signal(p, signal.SIGSTOP)
    # The last call saw them frozen: a pid stopped but gone from it ended meanwhile and may be another's now.
    killed = [p for p in stopped if p in found]
    described = {p: _described_once_stopped(p, stopped[p]) for p in killed}
    for p in stopped:
        _signal(p, signal.SIGKILL if p in killed else signal.SIGCONT)
    for p in killed:  # orphans re-parented to this process: reap them (elsewhere their parent or init does)
        try:
            os.waitpid(p, 0)
        except ChildProcessError:
            pass
    return [described[p] for p in killed]


def _described_once_stopped(pid: int, before: str) -> str:
    """``pid`` described once its SIGSTOP has taken hold (``EXEC_SETTLE_S`` at most), else ``before``. A process
    described in the middle of an exec shows no command line (the new program's is set up last), and a stop waits
    for the exec's end: CI recorded ``'29624: ?'`` for a command's ``setsid sleep``, caught exec'ing."""
    deadline = time.monotonic() + EXEC_SETTLE_S
    while (fields := _stat(pid)) and fields[0] not in ("T", "t", "Z") and time.monotonic() < deadline:
        time.sleep(0.002)
    now = describe(pid)
    return before if now.endswith(": ?") else now


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
