"""A real process that keeps one core busy: another user's job on the device under test (rule 7)."""
from __future__ import annotations

import contextlib
import subprocess
import sys


@contextlib.contextmanager
def busy_core(core: int):
    """Run a spinning Python process pinned to ``core`` for the duration of the block; killed after it. It runs in
    a session of its own, as another user's job would: with the kernel's autogroups a session's processes share
    one slice of the CPU, so in the caller's session its share of the core would depend on what else runs there."""
    spin = f"import os\nos.sched_setaffinity(0, {{{int(core)}}})\nwhile True:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", spin], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
