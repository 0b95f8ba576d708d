"""File bytes read once and checked against an expected sha256, so what runs is exactly what was hashed.

Hashing a file and then letting a runtime open it again by its path runs whatever is there by then: a model
swapped in its folder, or replaced during a long campaign, between the check and the load. A runtime gets the
checked bytes instead (onnxruntime and ONNX take them as they are); a program that needs a path (a TVM library,
the command runtime's tool) gets a private copy of them, written into a new folder only this user can enter.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agents.errors import HashMismatch, ModelNotFound


@dataclass(frozen=True)
class VerifiedFile:
    """Bytes whose sha256 matched the expected one; ``path`` says where they were read, for messages only."""

    path: Path
    data: bytes


def is_sha256(text) -> bool:
    """Whether ``text`` is a sha256 as the protocol writes it: 64 lower-case hex digits."""
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def read_verified(path: str | Path, expected_sha256: str, what: str = "model") -> VerifiedFile:
    """Read ``path`` once and check its sha256.

    Raises
    ------
    ModelNotFound
        The file cannot be read (gone since the agent found it, say).
    HashMismatch
        Its bytes hash to something else than ``expected_sha256``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelNotFound(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise HashMismatch(f"{what} {path} has sha256 {actual}, but the request says {expected_sha256}; "
                           f"refusing to run it (push the file again or fix the request)")
    return VerifiedFile(path, data)


def private_copy(data: bytes, name: str) -> tuple[Path, tempfile.TemporaryDirectory]:
    """``data`` written to ``<new 0700 folder>/<name>`` (read-only); returns the file and its folder, whose
    ``cleanup()`` removes both. No other user can enter the folder, so none can swap the file."""
    folder = tempfile.TemporaryDirectory(prefix="hwl-verified-")  # mkdtemp: mode 0700, a fresh name
    path = Path(folder.name) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        folder.cleanup()
        raise
    return path, folder


__all__ = ["VerifiedFile", "is_sha256", "private_copy", "read_verified"]
