"""Content-addressed store of exported ONNX models on disk.

Layout under ``root``::

    <sha256>.onnx          the model; sha256 = sha256(ONNX bytes + canonical JSON of the config)
    <sha256>.json          {"sha256", "config", "meta"}: what was exported and how it went
    by-config/<h>.json     h = sha256(canonical config) -> {"sha256": ...}: lets an export
                           look itself up *before* exporting, so a repeat is a cache hit

Writes go to a temporary file and are renamed into place, so parallel workers that export
the same thing never leave a half-written file (they write identical bytes anyway). A writer
killed mid-write leaves its temporary file (``.<name>.<host>-<pid>-XXXXXXXX.tmp``); the next
write into the folder removes those whose process is gone (once a minute per process at most, see
:func:`_remove_dead_temps`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.errors import ExportError

logger = logging.getLogger(__name__)

__all__ = ["Artifact", "ArtifactStore", "canonical_json", "content_sha256"]


def canonical_json(obj: Any) -> str:
    """Stable JSON text of ``obj``: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_sha256(onnx_bytes: bytes, config: dict) -> str:
    """The artifact address: sha256 of the ONNX bytes followed by the canonical config JSON."""
    h = hashlib.sha256(onnx_bytes)
    h.update(canonical_json(config).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One stored model.

    Attributes
    ----------
    sha256 : str
        Content address (file stem).
    path : Path
        The ``.onnx`` file.
    config : dict
        The export config it was made from.
    meta : dict
        What the exporter recorded (timings, check error, shapes).
    """

    sha256: str
    path: Path
    config: dict
    meta: dict


class ArtifactStore:
    """Content-addressed ONNX files in one directory (created on first write).

    Parameters
    ----------
    root : str or Path
        Directory of the store.

    Examples
    --------
    >>> store = ArtifactStore("artifacts")                        # doctest: +SKIP
    >>> art = store.put(onnx_bytes, {"space": "nb201", "arch": 0}) # doctest: +SKIP
    >>> store.get({"space": "nb201", "arch": 0}).sha256 == art.sha256  # doctest: +SKIP
    True
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    def path_of(self, sha256: str) -> Path:
        return self.root / f"{sha256}.onnx"

    def put(self, onnx_bytes: bytes, config: dict, meta: dict | None = None) -> Artifact:
        """Store a model under its content address and index it by its config."""
        sha = content_sha256(onnx_bytes, config)
        meta = dict(meta or {})
        self.root.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(self.root)
        _atomic_write(self.path_of(sha), onnx_bytes)
        _atomic_write(self.root / f"{sha}.json",
                      canonical_json({"sha256": sha, "config": config, "meta": meta}).encode())
        index = self.root / "by-config"
        index.mkdir(exist_ok=True)
        _remove_dead_temps(index)
        _atomic_write(index / f"{_config_key(config)}.json", canonical_json({"sha256": sha}).encode())
        return Artifact(sha, self.path_of(sha), config, meta)

    def exists(self, config: dict) -> bool:
        """Whether a model for this config is stored (without verifying its bytes)."""
        sha = self._lookup(config)
        return sha is not None and self.path_of(sha).is_file()

    def get(self, config: dict, *, verify: bool = True) -> Artifact | None:
        """The stored model for ``config``, or None when it was never exported.

        Raises
        ------
        ExportError
            The stored file is missing or its bytes no longer hash to its name (corrupt).
        """
        sha = self._lookup(config)
        if sha is None:
            return None
        path = self.path_of(sha)
        meta_path = self.root / f"{sha}.json"
        if not path.is_file() or not meta_path.is_file():
            raise ExportError(f"artifact {sha[:12]} for {canonical_json(config)} is missing from {self.root}; "
                              "export it again")
        if verify and content_sha256(path.read_bytes(), config) != sha:
            raise ExportError(f"artifact {path} is corrupt (its sha256 no longer matches); "
                              "delete it and export again")
        record = json.loads(meta_path.read_text())
        return Artifact(sha, path, record["config"], record["meta"])

    def usage(self) -> dict[str, tuple[int, float]]:
        """sha256 -> (bytes on disk, last use as the model file's mtime) of every stored model."""
        out = {}
        for path in self.root.glob("*.onnx"):
            try:
                st = path.stat()
                out[path.stem] = (st.st_size + (self.root / f"{path.stem}.json").stat().st_size, st.st_mtime)
            except FileNotFoundError:  # removed meanwhile, or half-written by a crashed export
                continue
        return out

    def touch(self, sha256: str) -> None:
        """Mark a model as used now (the quota removes the least recently used first)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path_of(sha256))

    def remove(self, sha256: str) -> None:
        """Delete a model, its record and its index entry; exporting its config again recreates it
        byte for byte (weights come from a seed derived from the architecture)."""
        meta_path = self.root / f"{sha256}.json"
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            config = json.loads(meta_path.read_text())["config"]
            entry = self.root / "by-config" / f"{_config_key(config)}.json"
            if self._lookup(config) == sha256:  # the entry may already name a newer export
                entry.unlink(missing_ok=True)
        self.path_of(sha256).unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)

    def _lookup(self, config: dict) -> str | None:
        entry = self.root / "by-config" / f"{_config_key(config)}.json"
        try:
            return json.loads(entry.read_text())["sha256"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError):
            logger.warning("ignoring unreadable index entry %s", entry)
            return None


def _config_key(config: dict) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


# A temporary file nobody can tell the writer of (an older hwl's name, another host's process) is left this
# long before it is taken for a dead writer's: a write takes well under a second.
FOREIGN_TEMP_AGE_S = 3600.0


def _temp_prefix(path: Path) -> str:
    """How this process's temporary files of ``path`` start: the host is named, as the folder may be shared by
    a cluster's nodes (NFS), whose process ids mean nothing here."""
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}-"


# How often one process looks for dead writers' temporary files in a folder: a look lists the whole folder, 30 ms
# at a full NB201 space's 31,250 files, which before every write added some 12 minutes to exporting the space.
TEMP_SWEEP_INTERVAL_S = 60.0
_last_sweep: dict[Path, float] = {}


def _remove_dead_temps(folder: Path) -> None:
    """Remove the temporary files in ``folder`` left by writers that were killed: this host's whose process is
    gone, and any other that nothing has written for ``FOREIGN_TEMP_AGE_S``. A live writer's are kept (two
    exports into one folder at once). At most once per ``TEMP_SWEEP_INTERVAL_S`` per folder and process."""
    if time.monotonic() - _last_sweep.get(folder, -math.inf) < TEMP_SWEEP_INTERVAL_S:
        return
    _last_sweep[folder] = time.monotonic()
    mine = re.compile(rf"\.{re.escape(socket.gethostname())}-(\d+)-[^.]*\.tmp$")
    now = time.time()
    for temp in folder.glob(".*.tmp"):
        found = mine.search(temp.name)
        with contextlib.suppress(FileNotFoundError):  # renamed or removed by its writer meanwhile
            if found and int(found[1]) == os.getpid():
                continue  # this process's own (another thread's write)
            dead = (not psutil.pid_exists(int(found[1])) if found else
                    now - temp.stat().st_mtime > FOREIGN_TEMP_AGE_S)
            if dead:
                temp.unlink()
                logger.info("removed %s, left by an export that was killed while it wrote", temp)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
