"""``CommandSession``: a device reached through a host-side tool (a phone via ``adb``, an FPGA
board via its vendor runtime).

The agent runs here, on the host the device is plugged into, with the ``command`` runtime: the
profile's run template (for example ``adb shell /data/local/tmp/benchmark_model
--graph=/data/local/tmp/hwl/{sha256}.onnx``) is the timed step and its output is parsed with
the profile's regex or JSON path (see ``agents.runtimes.command``). This session adds the push
step: before a model is measured for the first time its file is copied to the device with the
profile's push template (``adb push {model} /data/local/tmp/hwl/{sha256}.onnx``), once per hash
and never during a timed window (the device worker is serial and holds the device's lock).
"""
from __future__ import annotations

import logging
import shlex
import subprocess
from collections import deque

from agents.command_template import build_argv
from agents.protocol import Measure, Message
from harness.transport.base import RECENT_PUSHES
from harness.transport.errors import AgentLost
from harness.transport.local import LocalSession

log = logging.getLogger(__name__)
PUSH_TIMEOUT_S = 600.0


class CommandSession(LocalSession):
    """A local agent measuring through a vendor tool, with a push step for model files.

    Parameters
    ----------
    push_template : str, optional
        Command that copies ``{model}`` (local path) to the device, usually naming the copy
        by ``{sha256}``; run without a shell (wrap in ``sh -c '...'`` when one is needed).
        None when the run template reads the model from this host directly.
    check_template : str, optional
        Command that exits 0 when the device holds a whole copy of ``{sha256}``: best one that
        hashes the copy (``adb shell 'test "$(sha256sum /data/local/tmp/hwl/{sha256}.onnx | cut
        -c1-64)" = {sha256}'``), so a restarted coordinator does not push again and a copy cut
        short is pushed again, never run. It is also run after each push. Without it, a model is
        pushed once per session.
    **kwargs
        Passed to :class:`LocalSession` (``cores``, ``cache_dir``, ``python``, ``name``).
    """

    def __init__(self, *, push_template: str | None = None, check_template: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.push_template = push_template
        self.check_template = check_template
        self.pushed: deque[str] = deque(maxlen=RECENT_PUSHES)  # sha256 of the latest uploads
        self._on_device: set[str] = set()

    def request(self, msg: Message, *, timeout_s: float | None = None) -> Message:
        if isinstance(msg, Measure) and self.push_template and msg.model:
            self.open()
            self.stage_model(msg.model, msg.sha256)
        return super().request(msg, timeout_s=timeout_s)

    def stage_model(self, model_path: str, sha256: str) -> None:
        """Push the model to the device unless it is known to be there."""
        values = {"model": model_path, "sha256": sha256}
        if sha256 in self._on_device:
            return
        if self.check_template and self._run(build_argv(self.check_template, values), check=False) == 0:
            self._on_device.add(sha256)
            return
        self._run(build_argv(self.push_template, values), check=True)
        if self.check_template and self._run(build_argv(self.check_template, values), check=False) != 0:
            # the copy on the device is not the file (a transfer cut short): never run it; the job is retried
            raise AgentLost(f"{self.name}: the copy of model {sha256[:12]} on the device fails the profile's "
                            "check after its push", device=self.name)
        self._on_device.add(sha256)
        self.pushed.append(sha256)

    def _run(self, argv: list[str], *, check: bool) -> int:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=PUSH_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentLost(f"{self.name}: `{shlex.join(argv)[:200]}` failed: {exc}", device=self.name) from None
        if check and proc.returncode != 0:
            # The tool could not reach the device (phone unplugged, board off): the job is retried.
            raise AgentLost(f"{self.name}: `{shlex.join(argv)[:200]}` exited {proc.returncode}: "
                            f"{proc.stderr.strip()[-400:]}", device=self.name)
        return proc.returncode
