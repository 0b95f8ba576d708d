"""Files and folders a command writes to, checked before its work rather than after it."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil

from harness.errors import UserError

logger = logging.getLogger(__name__)


def check_writable(path) -> Path:
    """``path`` (a file the command writes when its work is done), checked now: its folder is made
    and a probe file written there, so a long run does not end in a traceback.

    Raises
    ------
    UserError
        The path is a folder or an SQLite database (a store), or its folder cannot be made or
        written to.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file name to write")
    if is_sqlite(path):  # most likely the store itself, named as an output by mistake
        raise UserError(f"{path} is an SQLite database (an hwl store?); refusing to write over it: give the "
                        "output another file name")
    if (companion := sqlite_companion(path)) is not None:
        raise UserError(f"{companion}: give the output another file name")
    if names_a_stream(path):  # a pipe or /dev/stdout: written to in place
        if not os.access(path, os.W_OK):
            raise UserError(f"cannot write {path}: permission denied")
        return path
    check_writable_folder(_file_behind(path).parent, what=str(path))
    return path


def check_outputs(outputs: dict, inputs: dict | None = None) -> None:
    """Each output (flag -> path, None for not given) through :func:`check_writable`, refused where it
    is an input or another output: the command would write over what it reads, or one of its
    results over another."""
    named = {flag: Path(p).expanduser() for flag, p in {**(inputs or {}), **outputs}.items() if p}
    for flag in (f for f in outputs if outputs[f]):
        path = named[flag]
        other = next((f for f in named if f != flag and _same_file(named[f], path)), None)
        if other is not None:
            raise UserError(f"{flag} {path} is also {other}; give it another file name")
        check_writable(path)


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # a hard link or another spelling of the same file
    return a.resolve() == b.resolve()


@contextlib.contextmanager
def written_whole(path) -> Iterator[Path]:
    """The path to write ``path``'s new content to: it takes ``path``'s place only when the block ends
    without an error, so a killed process or a full disk leaves the old file, never half a new one.
    A pipe, a terminal or a name of an open file (/dev/stdout, /proc/self/fd/N) is written in place;
    through any other symbolic link the file it names is replaced, the link kept."""
    with written_together([path]) as (partial,):
        yield partial


@contextlib.contextmanager
def written_together(paths) -> Iterator[list[Path]]:
    """Like :func:`written_whole`, for files that belong together (a predictor, its table, its report): the paths
    to write them to, which take their places, in the order given, only when every one is written. The old files
    of all but the first are removed before the first takes its place, so a kill at any moment leaves the old set,
    or the new one up to some file with none after it: never a new file beside an old one."""
    targets = [Path(p) for p in paths]
    partials = [_partial_of(t) for t in targets]
    renamed = [(p, _file_behind(t)) for p, t in zip(partials, targets) if p != t]  # a stream is written in place
    _users_names.update(zip(partials, targets))
    try:
        yield partials
        for _, target in renamed[1:]:
            target.unlink(missing_ok=True)
        for partial, target in renamed:
            os.replace(partial, target)
    finally:
        for partial, _ in renamed:
            partial.unlink(missing_ok=True)
        for partial in partials:
            _users_names.pop(partial, None)


_users_names: dict[Path, Path] = {}  # partial file -> the path it is written for, while it is written


def users_name(path) -> Path:
    """The path the user gave for ``path``, a partial file of :func:`written_together` (of one, when a writer
    writes its partial file through :func:`written_whole` again); else ``path``. A writer's error names it: a full
    disk while `hwl onboard` wrote its model named `.partial-<host>-<pid>-m.pt`."""
    path = Path(path)
    while path in _users_names and _users_names[path] != path:
        path = _users_names[path]
    return path


def _partial_of(path: Path) -> Path:
    """Where ``path``'s new content is written before it is renamed to it (``path`` itself for a stream)."""
    if names_a_stream(path):
        return path
    target = _file_behind(path)
    _remove_dead_partials(target.parent)
    # one of this call's own: two writers of one file at once (two exports, two threads) must not write into one
    # partial file, which the first would rename while the second still writes it; it ends in the name, whose
    # suffixes writers infer the format from
    return target.with_name(f"{_partial_prefix()}{os.getpid()}-{secrets.token_hex(4)}-{target.name}")


def _partial_prefix() -> str:
    """How this host's partial files start: the host is in the name, as a folder may be shared with other
    machines (NFS), whose writers' process ids mean nothing here."""
    return f".partial-{socket.gethostname()}-"


# A partial file nobody can tell the writer of (another host's) is left this long untouched before it is taken
# for a killed writer's: its writer would have written to it meanwhile.
FOREIGN_PARTIAL_AGE_S = 3600.0
# How often one process looks for killed writers' partial files in a folder: a look lists the whole folder, 30 ms
# at a full NB201 artifact folder's 31,250 files, which before every write added some 12 minutes to exporting
# the space.
PARTIAL_SWEEP_INTERVAL_S = 60.0
_last_sweep: dict[Path, float] = {}
# An artifact's partial file as an hwl before December 2026 named it (``.<sha>.onnx.<random>.tmp``, later
# ``.<sha>.json.<host>-<pid>-<random>.tmp``): nothing tells its writer, so it goes by age, as another host's does.
_OLD_PARTIAL = re.compile(r"\.[0-9a-f]{64}\.(?:onnx|json)\..+\.tmp")


def _remove_dead_partials(folder: Path) -> None:
    """Remove the partial files in ``folder`` left by writers that were killed: this host's whose process is gone,
    and any other (another host's, an older hwl's, ``_OLD_PARTIAL`` included) that nothing has written for
    ``FOREIGN_PARTIAL_AGE_S``; never a live writer's. At most once per ``PARTIAL_SWEEP_INTERVAL_S`` per folder and
    process."""
    if time.monotonic() - _last_sweep.get(folder, -math.inf) < PARTIAL_SWEEP_INTERVAL_S:
        return
    _last_sweep[folder] = time.monotonic()
    # the token's 8 hex digits (a pid has at most 7) keep host "gpu" from reading host "gpu-2"'s names as its own
    mine, now = re.compile(rf"{re.escape(_partial_prefix())}(\d+)-[0-9a-f]{{8}}-"), time.time()
    try:
        with os.scandir(folder) as entries:  # one listing for both kinds of name
            names = [entry.name for entry in entries]
    except OSError:  # no such folder (yet), or one that cannot be listed: the write itself says what is wrong
        return
    for partial in (folder / n for n in names if n.startswith(".partial-") or _OLD_PARTIAL.fullmatch(n)):
        found = mine.match(partial.name)
        with contextlib.suppress(FileNotFoundError):  # renamed or removed by its writer meanwhile
            dead = (not psutil.pid_exists(int(found[1])) if found
                    else now - partial.stat().st_mtime > FOREIGN_PARTIAL_AGE_S)
            if dead:
                partial.unlink()
                logger.info("removed %s, left by a writer that was killed while it wrote", partial)


def _file_behind(path: Path) -> Path:
    """The file a symbolic link names (a new file replaces it, the link kept); else ``path``."""
    return path.resolve() if path.is_symlink() else path


def names_a_stream(path) -> bool:
    """Whether ``path`` is a pipe, a terminal, or a name of an open file (/dev/stdout, /dev/fd/N,
    /proc/self/fd/N; ``> out.csv`` with ``--out /dev/stdout``): renaming a new file over that name
    would replace /dev/stdout itself (as root) or fail, and the shell's file would get nothing. A
    plain file under /dev (/dev/shm/out.csv) is not one."""
    path = Path(path)
    if not path.exists():
        return False
    if not path.is_file():
        return True
    hop = Path(os.path.abspath(path))
    for _ in range(40):  # Linux follows at most 40 links
        if hop.parts[1:2] == ("proc",):
            return True
        if not hop.is_symlink():
            return False
        if hop.parts[1:2] == ("dev",):  # /dev/stdout -> /proc/self/fd/1
            return True
        hop = Path(os.path.abspath(hop.parent / os.readlink(hop)))
    return False


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` is an SQLite file (an hwl store, most likely)."""
    if not path.is_file():  # a pipe, /dev/stdout, a terminal: reading it would wait for input
        return False
    try:
        with path.open("rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:  # missing or unreadable: nothing to protect here
        return False


# the files SQLite keeps beside a database while it is written: its latest commits live there (WAL), and SQLite
# takes a file of that name for its own when it next opens the database
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def sqlite_companion(path) -> str | None:
    """When ``path`` names the -wal, -shm or -journal file of an SQLite database (a store), existing or not, what it
    is, to start a refusal; else None. An export written as `lab.db-wal` replaced a running coordinator's WAL (the
    commits in it were lost with a kill), and a backup so named was deleted by SQLite as it closed the store."""
    path = Path(path)
    suffix = next((s for s in _SQLITE_COMPANIONS if path.name.endswith(s) and len(path.name) > len(s)), None)
    store = suffix and path.with_name(path.name[:-len(suffix)])
    if not store or not is_sqlite(store):
        return None
    return f"{path} is SQLite's {suffix[1:]} file of the database {store} (an hwl store?), which SQLite deems its own"


def why_not_a_file(path) -> str | None:
    """None when ``path`` is a file to read; else why not, to follow its name in a message. A folder given for
    a file was said not to exist, which sent the user looking for a typo."""
    path = Path(path).expanduser()
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():  # /dev/stdin behind a pipe (`hwl campaign export --out - | ...`), a FIFO, <(...)
        return "is a pipe or a device, not a file: save it to a file and give that file"
    return "does not exist"


def check_writable_folder(folder, *, what: str | None = None) -> Path:
    """Make ``folder`` and write a probe file in it; UserError naming ``what`` (default the folder)."""
    folder = Path(folder).expanduser()
    try:
        make_folder(folder)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hwl-", suffix=".probe"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {what or folder}: {why_not_made(folder, exc)}") from None
    return folder


# Folders this command's checks made, so a refused command leaves none behind (remove_made_folders).
_made_folders: list[Path] = []


def make_folder(folder) -> Path:
    """``folder`` made with its missing parents (OSError as ``mkdir`` raises it), each remembered as made by
    this command."""
    folder = Path(folder)
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    _made_folders.extend(reversed(missing))  # outermost first
    return folder


def remove_made_folders() -> None:
    """Remove the folders :func:`make_folder` made that are still empty, innermost first: a command refused
    after its checks made the folders of its outputs leaves nothing behind. One that holds a file (another
    process's, or this command's store) is kept."""
    while _made_folders:
        with contextlib.suppress(OSError):  # not empty, or gone already
            _made_folders.pop().rmdir()


def forget_made_folders() -> None:
    """Keep the folders made so far (the command went past its checks, or ended well)."""
    _made_folders.clear()


def private_temp_folder(name: str, *, what: str) -> Path:
    """``<temp dir>/<name>``, made only this user's (0700) when missing. UserError when it is not a folder of this
    user: its name is predictable, so another user could make it first and put files in it (a library the agent
    would load, a lock held for ever). A folder of this user that others may write (made under a umask of 002)
    is made this user's alone."""
    folder = Path(tempfile.gettempdir()) / name
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a link" if stat.S_ISLNK(st.st_mode) else "a file"
        raise UserError(f"{what} {folder} is {kind} of uid {st.st_uid}, not a folder of uid {os.geteuid()}: "
                        "another user may have made it; remove it")
    if st.st_mode & 0o022:
        os.chmod(folder, stat.S_IMODE(st.st_mode) & ~0o022)
    return folder


def why_not_made(folder: Path, exc: OSError) -> str:
    """Why ``folder`` could not be made or written: "File exists" said nothing of the file in the way."""
    there = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if there is not None and not there.is_dir():
        return f"{there} is a file, not a folder"
    return exc.strerror or str(exc)


__all__ = ["check_outputs", "check_writable", "check_writable_folder", "forget_made_folders", "is_sqlite",
           "make_folder", "names_a_stream", "remove_made_folders", "sqlite_companion", "users_name",
           "why_not_a_file", "why_not_made",
           "written_together", "written_whole"]
