"""A folder on a tiny tmpfs: a disk that fills up for real (mounting it needs root)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size_mb: int):
    """Mount a ``size_mb`` MB tmpfs on ``folder`` (created) for the ``with`` block; skip the test
    where mounting is refused (not root, no CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip(f"mounting a {size_mb} MB tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
