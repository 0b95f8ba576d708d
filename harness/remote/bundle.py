"""The agent bundle pushed to a device: a deterministic zip of ``agents/`` and ``spaces/``.

Only what the device runs goes in: the agent package and the numpy-only search-space keys
(the torch builders are included too, for devices whose profile uses the torch runtime;
they import torch only when used). The zip is byte-for-byte reproducible (sorted entries,
fixed timestamps), so its sha256 names the agent version: re-deploying an unchanged agent
finds the same hash on the device and does nothing.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import agents
import spaces

PACKAGES = (agents, spaces)
_FIXED_DATE = (2020, 1, 1, 0, 0, 0)
_SKIP_PARTS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


@dataclass(frozen=True)
class AgentBundle:
    """A built bundle: its bytes, sha256 and the agent version inside."""

    data: bytes
    sha256: str
    agent_version: str

    @property
    def name(self) -> str:
        """Directory name on the device: version plus a short hash."""
        return f"{self.agent_version}-{self.sha256[:12]}"

    @property
    def unpacked_bytes(self) -> int:
        """What its files take on the device once unpacked."""
        with zipfile.ZipFile(io.BytesIO(self.data)) as zf:
            return sum(info.file_size for info in zf.infolist())


def _files(package) -> list[tuple[str, Path]]:
    root = Path(package.__file__).resolve().parent
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root.parent)
        if path.is_dir() or _SKIP_PARTS & set(rel.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        out.append((rel.as_posix(), path))
    return out


def build_bundle() -> AgentBundle:
    """Zip the agent's packages deterministically and hash the result."""
    version = getattr(agents, "__version__", "0")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for package in PACKAGES:
            for arcname, path in _files(package):
                info = zipfile.ZipInfo(arcname, date_time=_FIXED_DATE)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        manifest = zipfile.ZipInfo("hwl_agent_manifest.json", date_time=_FIXED_DATE)
        zf.writestr(manifest, json.dumps({"agent_version": version,
                                          "packages": [p.__name__ for p in PACKAGES]}, sort_keys=True))
    data = buf.getvalue()
    return AgentBundle(data=data, sha256=hashlib.sha256(data).hexdigest(), agent_version=version)


@functools.lru_cache(maxsize=1)
def current_bundle_name() -> str:
    """The name ``hwl deploy`` would give this code's agent (the code does not change under a run)."""
    return build_bundle().name
