"""One coordinator per campaign: an exclusive lock beside the store, held while it runs.

A second ``hwl campaign resume`` (or ``run``) of a campaign that is still being measured would
take the jobs in flight for lost, queue them again and measure every remaining job twice. The
lock refuses it with a message naming the holder. It is an ``fcntl.flock`` on
``<store>-locks/campaign-<id>.lock``: the kernel releases it when the holder exits, however it
exits, so a resume after a crash (even SIGKILL) takes it at once. Campaigns of one store lock
apart, so a lab can onboard a device into the store while a campaign on the others runs. The
lock files stay (a few bytes each): deleting one that another process has just opened would let
two processes each lock a different file of the same name.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from harness.errors import CampaignError


def lock_path(store_path, campaign_id: int) -> Path:
    store_path = Path(store_path).expanduser().resolve()  # one lock however the store is named (a symlink)
    return store_path.parent / f"{store_path.name}-locks" / f"campaign-{int(campaign_id)}.lock"


@contextlib.contextmanager
def campaign_lock(store_path, campaign_id: int, name: str | None = None, resume_flags=()):
    """Hold the campaign's lock for the ``with`` block; raise :class:`CampaignError` if another process holds it.
    Its note keeps ``resume_flags``, those of this run that its resume needs too (see :func:`last_run_flags`)."""
    path = lock_path(store_path, campaign_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:  # never truncated before the lock is ours: the holder's note stays readable
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CampaignError(f"campaign {name or campaign_id} in {store_path} is being measured by another "
                                f"hwl process ({_holder(path)}); let it finish or stop it (Ctrl-C) first") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "resume_flags": list(resume_flags)}))
            f.flush()
            yield path
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def holder(store_path, campaign_id: int) -> str | None:
    """Who runs the campaign now ("pid N on HOST, since T"), or None when no process does."""
    path = lock_path(store_path, campaign_id)
    try:
        f = open(path)
    except FileNotFoundError:  # never run since locks came in
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # held for microseconds: a probe, not a claim
        except BlockingIOError:
            return _holder(path)
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


def last_run_flags(store_path, campaign_id: int) -> list[str]:
    """The flags the campaign's last run had that its resume needs too (``--address``, ``--artifacts`` ...), as its
    lock's note keeps them after it ended (a crash included); none for a campaign never run with them, or by an
    older hwl. A resume line printed without them (`hwl campaign status`'s) started a local Ray in place of the
    cluster, exported into another folder, checked host keys against another file."""
    try:
        flags = json.loads(lock_path(store_path, campaign_id).read_text() or "{}").get("resume_flags", [])
    except (OSError, ValueError, AttributeError):  # no run yet, or its note half-written
        return []
    return [str(flag) for flag in flags] if isinstance(flags, list) else []


def flag_values(flags: list[str]) -> dict[str, str]:
    """:func:`last_run_flags` as flag -> value: each flag a resume needs comes with its value."""
    return dict(zip(flags[::2], flags[1::2]))


def copy_run_flags(source_store, dest_store) -> None:
    """Give each campaign of ``dest_store`` (a backup or a recovered copy of ``source_store``) the flags its last run
    had (see :func:`last_run_flags`): a copy kept none, so its status line and a resume of it exported every model
    again into a new folder and ran canaries at another rate. A campaign a process runs from the copy keeps its
    own."""
    source_locks = lock_path(source_store, 0).parent
    ids = [n.stem.split("-", 1)[1] for n in source_locks.glob("campaign-*.lock")] if source_locks.is_dir() else []
    for campaign_id in sorted(int(i) for i in ids if i.isdigit()):
        flags = last_run_flags(source_store, campaign_id)
        if flags:
            with contextlib.suppress(CampaignError), campaign_lock(dest_store, campaign_id, resume_flags=flags):
                pass  # its note written, as a run's


def _holder(path: Path) -> str:
    try:
        note = json.loads(path.read_text() or "{}")
        return f"pid {note['pid']} on {note['host']}, since {note['since']}"
    except (OSError, ValueError, KeyError):  # the holder has not written its note yet
        return "holder unknown"
