"""``LocalSession``: the agent as a subprocess of this host, over its stdin/stdout."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.transport.base import LineSession

log = logging.getLogger(__name__)
STDERR_TAIL_CHARS = 2000


class LocalSession(LineSession):
    """Run ``python -m agents serve --stdio`` here and talk to it.

    Parameters
    ----------
    cores : sequence of int, optional
        Pin the agent process itself to these CPUs (its measuring children are pinned to each
        request's ``cores``). Keep it off the measured cores (rule 7).
    cache_dir : path, optional
        The agent's hash-keyed model cache (``--cache-dir``).
    python : str
        Interpreter that runs the agent.
    name : str
        Used in log and error messages (e.g. the device name).

    Examples
    --------
    >>> with LocalSession(cores=[1]) as s:                       # doctest: +SKIP
    ...     s.request(Measure(runtime="ort", model="m.onnx", sha256=h, cores=(0,), profile="quick"))
    """

    def __init__(self, *, cores=None, cache_dir: str | Path | None = None, python: str = sys.executable,
                 name: str = "local-agent"):
        super().__init__()
        self.cores = tuple(cores) if cores else ()
        self.cache_dir = cache_dir
        self.python = python
        self.name = name
        self._proc: subprocess.Popen | None = None
        self._stderr = None

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}"] + ([f"cores={list(self.cores)}"] if self.cores else []) \
            + ([f"cache_dir={str(self.cache_dir)!r}"] if self.cache_dir else [])
        return f"LocalSession({', '.join(parts)})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _connect(self):
        cmd = [self.python, "-m", "agents", "serve", "--stdio"]
        if self.cache_dir:
            cmd += ["--cache-dir", str(self.cache_dir)]
        if self.cores:
            cmd += ["--cores", ",".join(map(str, self.cores))]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the agent package beside this harness
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      env=env, start_new_session=True)
        log.debug("%s: started agent pid %d", self.name, self._proc.pid)
        return self._proc.stdout, self._proc.stdin

    def _disconnect(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.stdin.close()  # end of input: the agent cancels any job and exits
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("%s: agent pid %d did not exit; killing it", self.name, proc.pid)
            proc.kill()
            proc.wait()
        proc.stdout.close()
        self._stderr.close()
        self._proc = self._stderr = None

    def _why_lost(self) -> str:
        proc = self._proc
        if proc is None:
            return "the session is closed"
        try:
            rc = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            rc = None
        tail = _file_tail(self._stderr, STDERR_TAIL_CHARS)
        status = "still running" if rc is None else f"exit status {rc}"
        return f"agent pid {proc.pid} {status}; its log ends with: {tail or '(nothing)'}"


def _file_tail(file, chars: int) -> str:
    """The last ``chars`` characters of a binary file, reading only its end: the stderr of an
    agent that ran for weeks can be large, and only its end says why it stopped."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - 4 * chars))  # UTF-8: at most 4 bytes a character
    return file.read().decode(errors="replace")[-chars:].strip()
