"""Content-addressed store of exported ONNX models on disk.

Layout under ``root``::

    <sha256>.onnx          the model; sha256 = sha256(ONNX bytes + canonical JSON of the config)
    <sha256>.json          {"sha256", "config", "meta"}: what was exported and how it went
    by-config/<h>.json     h = sha256(canonical config) -> {"sha256": ...}: lets an export
                           look itself up *before* exporting, so a repeat is a cache hit

Each file is written whole (:func:`harness.paths.written_whole`), so parallel workers that export
the same thing never leave a half-written file (they write identical bytes anyway), and a writer
killed mid-write leaves only its partial file, which a later write into the folder removes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ExportError
from harness.paths import written_whole

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
        _write_whole(self.path_of(sha), onnx_bytes)
        _write_whole(self.root / f"{sha}.json",
                      canonical_json({"sha256": sha, "config": config, "meta": meta}).encode())
        index = self.root / "by-config"
        index.mkdir(exist_ok=True)
        _write_whole(index / f"{_config_key(config)}.json", canonical_json({"sha256": sha}).encode())
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


def _write_whole(path: Path, data: bytes) -> None:
    with written_whole(path) as partial:
        partial.write_bytes(data)
