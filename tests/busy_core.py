"""A real process that keeps one core busy: another user's job on the device under test (rule 7)."""
from __future__ import annotations

import contextlib
import subprocess
import sys


@contextlib.contextmanager
def busy_core(core: int):
    """Run a spinning Python process pinned to ``core`` for the duration of the block; killed after it."""
    spin = f"import os\nos.sched_setaffinity(0, {{{int(core)}}})\nwhile True:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
