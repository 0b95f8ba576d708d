"""Copy the TVM libraries built on a build host (scripts/build_tvm_libraries --out) into a device's library_dir.

The agent loads ``<model sha256>.so`` from its profile's ``runtime.options.library_dir`` only from a folder of its
user that no other user may write, and only while the library hashes as its ``.so.sha256`` records
(agents/runtimes/tvm_vm.py). So each library is checked against its digest here before it leaves, copied under a
temporary name, hashed on the device by the device's Python, and only then put in place; a file the device
already holds with the same bytes is left alone.
"""
from __future__ import annotations

import posixpath
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from agents.server import sha256_of
from harness.errors import UserError
from harness.remote.deploy import DeployError, check_room, remote_digests
from harness.remote.host import Host
from harness.text import count

LIBRARY_NAME = re.compile(r"[0-9a-f]{64}\.so")
# What push_libraries writes into library_dir: a library or its digest file, under its temporary name while copied
WRITTEN_NAME = re.compile(r"[0-9a-f]{64}\.so(\.sha256)?(\.part)?")
BUILD_HINT = "give the --out folder of scripts/build_tvm_libraries"
# As the agent checks library_dir before it loads anything from it; prints False for a missing path or a link.
_PRIVATE_FOLDER = ("import os, stat, sys; p = sys.argv[1]; st = os.lstat(p) if os.path.lexists(p) else None; "
                   "print(st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() "
                   "and not st.st_mode & 0o022)")


@dataclass(frozen=True)
class LocalLibraries:
    """A build host's library folder: ``files`` maps each library and its digest file to its sha256."""

    folder: Path
    files: dict[str, str]

    @property
    def libraries(self) -> list[str]:
        return sorted(name for name in self.files if name.endswith(".so"))

    @classmethod
    def read(cls, folder: Path) -> "LocalLibraries":
        """Each ``<model sha256>.so`` of ``folder``, checked against its ``.so.sha256``: a UserError names a folder
        that is not what build_tvm_libraries writes, or a library the agent would refuse."""
        if not folder.is_dir():
            raise UserError(f"--tvm-libraries {folder} is not a folder; {BUILD_HINT}")
        libraries = sorted(p for p in folder.iterdir() if LIBRARY_NAME.fullmatch(p.name) and p.is_file())
        if not libraries:
            raise UserError(f"--tvm-libraries {folder} holds no <model sha256>.so library; {BUILD_HINT}")
        files = {}
        for lib in libraries:
            digest = lib.with_name(lib.name + ".sha256")
            files[lib.name] = _checked_library(lib, digest)
            files[digest.name] = sha256_of(digest)
        return cls(folder, files)


def _checked_library(lib: Path, digest: Path) -> str:
    """The library's sha256, when it is the one its digest file records."""
    try:
        recorded = digest.read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise UserError(f"TVM library {lib} has no readable {digest.name} beside it (the digest the agent checks "
                        "before loading it); build it with scripts/build_tvm_libraries") from None
    actual = sha256_of(lib)
    if actual != recorded:
        raise UserError(f"TVM library {lib} has sha256 {actual}, not the one its {digest.name} records: the agent "
                        "would refuse it; build it again with scripts/build_tvm_libraries")
    return actual


def library_dir_of(profile) -> str:
    """The profile's ``runtime.options.library_dir``; a UserError for a profile without one."""
    library_dir = profile.runtime.options_dict().get("library_dir") if profile.runtime.kind == "tvm" else None
    if not library_dir:
        raise UserError(f"{profile.name}: --tvm-libraries needs a tvm profile with runtime.options.library_dir (an "
                        f"absolute folder on the device), and {profile.source or profile.name} has none")
    return library_dir


def push_libraries(host: Host, local: LocalLibraries, library_dir: str, python: str) -> str:
    """Make ``library_dir`` on ``host`` hold ``local``'s libraries as the agent demands; returns deploy's step."""
    _make_private_folder(host, library_dir, python)
    have = remote_digests(host, python, library_dir, sorted(local.files))
    missing = sorted(name for name, sha in local.files.items() if have.get(name) != sha)
    libraries = [name for name in missing if name.endswith(".so")]
    if not missing:
        return f"unchanged: {count(len(local.libraries), 'TVM library', 'TVM libraries')} in {library_dir}"
    check_room(host, library_dir, sum((local.folder / name).stat().st_size for name in missing),
               count(len(missing), "file", "files") + " of --tvm-libraries", "give the profile another library_dir")
    for name in missing:  # under a temporary name: a library cut short is never where the agent looks
        part = posixpath.join(library_dir, name + ".part")
        host.sftp.put(str(local.folder / name), part)
        host.sftp.chmod(part, 0o644)
    _check_arrived(host, local, library_dir, python, missing)
    for name in missing:
        host.sftp.posix_rename(posixpath.join(library_dir, name + ".part"), posixpath.join(library_dir, name))
    if remote_digests(host, python, library_dir, sorted(local.files)) != local.files:
        raise DeployError(f"TVM libraries in {library_dir} on {host.name} changed while deploy copied them; "
                          "deploy again", host=host.name)
    unchanged = len(local.libraries) - len(libraries)
    return (f"copied {count(len(libraries), 'TVM library', 'TVM libraries')} to {library_dir} (sha256 verified)"
            + (f", {unchanged} unchanged" if unchanged else ""))


def prune_libraries(host: Host, local: LocalLibraries, library_dir: str, python: str) -> str:
    """Remove from ``library_dir`` the files push_libraries wrote there that ``local`` no longer holds (and any copy
    cut short); returns deploy's step. Only plain files named as it names them go: never a link (SFTP lists a link
    as itself, not what it points to; library_dir itself is checked to be no link first), a folder or another file."""
    _make_private_folder(host, library_dir, python)
    stale = [entry.filename for entry in host.sftp.listdir_attr(library_dir)
             if WRITTEN_NAME.fullmatch(entry.filename) and entry.filename not in local.files
             and stat.S_ISREG(entry.st_mode or 0)]
    for name in stale:
        host.sftp.remove(posixpath.join(library_dir, name))
    if not stale:
        return f"nothing to prune in {library_dir}"
    libraries = count(sum(name.endswith(".so") for name in stale), "TVM library", "TVM libraries")
    return (f"pruned {libraries} that {local.folder} no longer holds from {library_dir} "
            f"({count(len(stale), 'file', 'files')})")


def _make_private_folder(host: Host, folder: str, python: str) -> None:
    quoted = shlex.quote(folder)
    made = host.run(f"mkdir -p {quoted} && chmod go-w {quoted}", check=False)
    private = host.run(f"{shlex.quote(python)} -c {shlex.quote(_PRIVATE_FOLDER)} {quoted}").stdout.strip()
    if private != "True":
        why = f" ({made.stderr.strip().splitlines()[-1]})" if made.stderr.strip() else ""
        raise DeployError(f"library_dir {folder} on {host.name} must be a folder of {host.user} that no other user "
                          f"may write, or the agent loads no library from it, and deploy cannot make it one{why}: "
                          "give the profile another library_dir or fix the folder there", host=host.name)


def _check_arrived(host: Host, local: LocalLibraries, library_dir: str, python: str, names: list[str]) -> None:
    """Each copied file, hashed on the device, is the one checked here; a corrupted copy is removed."""
    arrived = remote_digests(host, python, library_dir, [name + ".part" for name in names])
    corrupted = [name for name in names if arrived.get(name + ".part") != local.files[name]]
    if corrupted:
        parts = " ".join(shlex.quote(posixpath.join(library_dir, name + ".part")) for name in names)
        host.run(f"rm -f {parts}", check=False)
        raise DeployError(f"{count(len(corrupted), 'file', 'files')} of --tvm-libraries arrived corrupted on "
                          f"{host.name} ({', '.join(corrupted[:3])}); deploy again", host=host.name)
