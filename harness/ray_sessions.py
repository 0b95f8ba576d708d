"""Ray's ``session_*`` folders of the local Rays hwl starts: each run leaves one (its logs, some
hundreds of KiB to MiB), and Ray removes none. hwl marks the sessions it starts and, when it starts
the next, removes its own finished ones beyond the newest few (``HWL_RAY_SESSIONS_KEPT``, 5 by
default, 0 keeps none). A session no running process names (gcs_server and raylet name theirs on
their command lines) is finished. Only marked folders directly in the temp folder of the Ray hwl
started are ever removed: another user's or another tool's Ray sessions there are not hwl's.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import psutil

from harness.errors import UserError

log = logging.getLogger(__name__)
MARKER = "hwl-session"  # a file in a session folder hwl's own local Ray made
KEPT_ENV = "HWL_RAY_SESSIONS_KEPT"
DEFAULT_KEPT = 5


def sessions_kept() -> int:
    """How many of hwl's finished Ray sessions to keep (``HWL_RAY_SESSIONS_KEPT``)."""
    raw = os.environ.get(KEPT_ENV, "").strip()
    if not raw:
        return DEFAULT_KEPT
    if not raw.isdigit():
        raise UserError(f"{KEPT_ENV}={raw!r} is not a whole number >= 0 (how many of hwl's finished Ray session "
                        f"folders to keep; default {DEFAULT_KEPT})")
    return int(raw)


def mark_session(session_dir: str | os.PathLike) -> None:
    """Say that hwl started this session's Ray (so a later hwl may remove the folder once it is finished)."""
    (Path(session_dir) / MARKER).write_text(f"started by hwl, pid {os.getpid()}\n")


def prune_sessions(session_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Remove hwl's finished sessions beside ``session_dir`` (the running one) but the newest ``keep``;
    returns the folders removed."""
    current = Path(session_dir)
    ours = [p for p in current.parent.glob("session_*")
            if p != current and not p.is_symlink() and p.is_dir() and (p / MARKER).is_file()]
    if len(ours) <= keep:
        return []
    running = _sessions_named_by_processes(current.parent)
    finished = sorted((p for p in ours if p.name not in running), key=_started)
    removed = []
    for folder in finished[:max(0, len(finished) - keep)]:
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:  # another hwl removed it meanwhile
            continue
        except OSError as exc:  # not worth failing a campaign for: say so and go on
            log.warning("could not remove the finished Ray session folder %s: %s", folder, exc)
            continue
        removed.append(folder)
    if removed:
        log.info("removed %d finished Ray session folder(s) of hwl under %s (keeping the newest %d; %s)",
                 len(removed), current.parent, keep, KEPT_ENV)
    return removed


def _started(folder: Path) -> float:
    try:
        return (folder / MARKER).stat().st_mtime
    except OSError:
        return 0.0


def _sessions_named_by_processes(temp_dir: Path) -> set[str]:
    """Names of the session folders under ``temp_dir`` that a running process's command line names."""
    prefix = f"{temp_dir}{os.sep}session_"
    named = set()
    for proc in psutil.process_iter(["cmdline"]):
        for part in proc.info["cmdline"] or ():
            at = part.find(prefix)
            if at >= 0:
                named.add(part[at + len(str(temp_dir)) + 1:].split(os.sep, 1)[0])
    return named
