"""The marks of the jobs in flight, kept in the agent's folder, so that an agent killed mid-job leaves nothing running.

When the agent itself is killed (the OOM killer, ``kill -9``, a lost SSH session), its measuring child dies with it
(PR_SET_PDEATHSIG), but what the child started (a ``command`` tool's daemon) is re-parented to init with the job's
mark (``HWL_JOB_MARK``, see agents.process_tree) that no live process knows: it ran on beside every later measurement
on the device. So the agent records each job's mark in a file of its folder before it starts the measuring child,
and holds an exclusive ``flock`` on that file until the job's processes are killed and the file removed. An agent
starting in the same folder, and each one before each job, sweeps it: a file it can lock was left by an agent that
is gone (the kernel drops a lock with the last descriptor of its holder), so the processes carrying that mark are
killed and the file removed. A file still locked is a live agent's job (two agents may share a folder and a host):
it is left alone, and so is every folder but the agent's own. Linux only, as the marks are (elsewhere nothing is
recorded or swept).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

from agents.process_tree import kill_job

log = logging.getLogger(__name__)
SUFFIX = ".job"  # <mark>.job holds the job's id; <mark>.new is one being written, never swept


@contextlib.contextmanager
def recorded(folder: Path | None, mark: str, job_id: str):
    """Hold ``<folder>/<mark>.job`` (the job's id in it), locked, while the block runs; removed after it. Nothing
    when ``folder`` is None or marks are not read here. The file appears under its name already locked (written
    under another name, then renamed), so a sweep never takes a job being started for one left by a dead agent."""
    if folder is None or not sys.platform.startswith("linux"):
        yield
        return
    path = folder / f"{mark}{SUFFIX}"
    try:
        record = _locked_record(path, job_id)
    except OSError as exc:  # a full disk, say: measure anyway, as before there were records
        log.warning("job %s: cannot record its mark in %s (%s); if this agent is killed during the job, what the "
                    "job started runs on", job_id, folder, exc)
        yield
        return
    with record:  # not inherited by the measuring child (PEP 446): the lock ends with this process
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _locked_record(path: Path, job_id: str):
    """``path`` holding ``job_id``, open and locked; written under another name and renamed once locked."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    new = path.with_suffix(".new")
    f = open(new, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(job_id)
        f.flush()
        os.replace(new, path)
    except OSError:
        f.close()
        new.unlink(missing_ok=True)
        raise
    return f


def sweep(folder: Path | None) -> list[str]:
    """Kill the processes of every job in ``folder`` whose agent is gone, and remove its file; what was killed,
    described with the job's id (``job j1a1: 1234: sleep 60``). A job whose processes are gone already is removed
    silently."""
    if folder is None or not sys.platform.startswith("linux"):
        return []
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    killed = []
    for name in names:
        killed += _sweep_one(folder / name)
    return killed


def said_in(result, swept: list[str]):
    """``result`` (a protocol Result) whose message also names ``swept`` (what :func:`sweep` killed): it may have
    run beside the measurements before this one."""
    if not swept:
        return result
    said = (f"before it, killed what the job of an agent that was killed left running, which ran beside "
            f"every measurement since: {'; '.join(swept)}")
    return dataclasses.replace(result, message="; ".join(filter(None, [result.message, said])))


def _sweep_one(path: Path) -> list[str]:
    """The processes of the job recorded in ``path`` killed, if its agent is gone (see :func:`sweep`)."""
    import fcntl

    try:
        f = open(path)
    except FileNotFoundError:  # its job ended meanwhile
        return []
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live agent's job
            return []
        job_id = f.read().strip() or "?"
        killed = kill_job(path.name.removesuffix(SUFFIX))
        path.unlink(missing_ok=True)
    if killed:
        log.warning("killed what job %s of an agent that was killed left running: %s", job_id, "; ".join(killed))
    return [f"job {job_id}: {process}" for process in killed]
