"""Command runtime: an external benchmark tool (``adb shell`` + a phone's benchmark binary, an
FPGA board's vendor runtime, ...) run once per timed window; latency is parsed from its output.

Options (``Measure.options``):

``command``
    Template, split like a shell line (no shell is run) or a list of words; placeholders
    ``{model}``, ``{sha256}``, ``{threads}``, ``{cores}`` (comma list), ``{batch}`` are filled
    in, any other braces are left alone. Wrap it in ``sh -c '...'`` when it needs a shell: placeholders
    in that script are filled shell-quoted, and ``{model}`` stands there bare (agents.command_template).
    ``{model}`` is a read-only copy of the bytes whose sha256 was checked, in a new folder only
    this user may enter (removed after the measurement), never the model's own path.
``regex``
    Pattern whose matches in stdout are latencies (group 1 when it has groups). Every match is
    one sample, so a tool printing per-run times gives many samples per window.
``json_path``
    Instead of ``regex``: dotted path into the JSON on stdout (the whole output, or the last line
    or pretty-printed block that holds the path), e.g. ``"results.0.latency_ms"``; the value may
    be a number or a list of numbers, each a positive finite latency.
``unit``
    "ms" (default), "us", "ns" or "s".
``warmup_runs``
    Invocations before timing whose output is discarded (default 0: tools warm up themselves).
``version``
    Free text stored as the runtime version (e.g. the tool's build).

Departure from the timing rules (9-12): the tool does its own warmup, blocking and timing, so
here one invocation is one timed window, every parsed value is a sample (block size 1), and
there is no separate first-inference time. The tool's own settings belong in the template.

Each invocation runs below the measuring child (its subreaper on Linux), so a window timeout kills it and
whatever it started, and what an invocation leaves running (a daemon, a server) is killed as it ends and named in
the record. After each invocation, runs too slow for the rest of the policy to end within ``model_timeout_s``
stop the measurement there (``TooSlowForPolicy``, as for the other runtimes); a single run longer than
``window_timeout_s`` is killed as a timeout, as a hung tool is, since nothing tells them apart.
A non-zero exit, or a crash (SIGSEGV, SIGABRT, ...), is a ``runtime_error`` with the tool's stderr
tail: the tool failed on this model. Two failures say nothing about the model and are raised as the
device's (the host makes the attempt ``device_lost``, charging no architecture): a tool that cannot
be started (``RuntimeUnavailable``: missing, not executable, or a shell's exit status 126 / 127
for a command it cannot run or find) and one killed by a signal sent to it
(``ToolKilled``: SIGTERM, SIGINT, SIGHUP, a SIGKILL the OOM killer did not send).
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from typing import Callable

from agents.command_template import build_argv
from agents.errors import BadRequest, RuntimeUnavailable, ToolKilled, TooSlowForPolicy
from agents.process_tree import kill_descendants
from agents.runtimes.base import OutOfMemory, Prepared, RunFailure, count_option
from agents.timing import Timing
from agents.verified import private_copy

UNITS_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
KNOWN_OPTIONS = {"command", "regex", "json_path", "unit", "warmup_runs", "version"}
# Signals a process raises on itself when it crashes: a tool that dies from one crashed running its model.
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGSYS,
                 signal.SIGTRAP}
SHELL_NOT_FOUND = (126, 127)  # a shell's exit status for a command it cannot run / cannot find


def _at_path(doc, path: str):
    for part in path.split(".") if path else []:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _json_at(text: str, path: str):
    """The value at ``path`` in the JSON the tool printed: the whole output, else the last line
    (or last pretty-printed block after log lines) holding that path. A number line inside a
    pretty-printed list or a status line after the JSON parses too, so it must hold the path."""
    lines = text.strip().splitlines()
    candidates = [text]
    for i in range(len(lines) - 1, -1, -1):
        candidates.append(lines[i])
        if lines[i].lstrip()[:1] in ("{", "["):
            candidates.append("\n".join(lines[i:]))
    parsed = False
    for candidate in candidates:
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        parsed = True
        try:
            return _at_path(doc, path)
        except (KeyError, IndexError, ValueError, TypeError):
            continue
    if not parsed:
        raise RunFailure(f"command output is not JSON (needed for json_path {path!r}): {text[-300:]!r}")
    raise RunFailure(f"json_path {path!r}: not found in the command's JSON output; output ends: {text[-300:]!r}")


def parse_latencies(text: str, *, regex: str | None = None, json_path: str | None = None) -> list[float]:
    """Latency values in the tool's unit, from its stdout."""
    if json_path is not None:
        value = _json_at(text, json_path)
        values = value if isinstance(value, list) else [value]
    else:
        values = re.findall(regex, text)
        values = [v[0] if isinstance(v, tuple) else v for v in values]
    out = []
    for v in values:
        try:
            x = float(v) if not isinstance(v, bool) else None  # a JSON true is not 1 ms
        except (TypeError, ValueError):
            x = None
        if x is None:
            raise RunFailure(f"command output has a non-numeric latency {values[:3]!r}")
        if not math.isfinite(x) or x <= 0:  # NaN, infinities and non-positive times crash the statistics
            raise RunFailure(f"command output has a latency that is not a positive number: {v!r}")
        out.append(x)
    if not out:
        how = f"json_path {json_path!r}" if json_path is not None else f"regex {regex!r}"
        raise RunFailure(f"no latency found in the command output with {how}; output ends: {text[-300:]!r}")
    return out


def _run(argv: list[str], on_leftovers: Callable[[list[str]], object]) -> str:
    """Run the tool once; its stdout, or the typed failure. What it leaves running is killed and told to
    ``on_leftovers``. Its output goes to files, not pipes, so a process it left holding them does not keep the
    run open until the window's limit."""
    from agents.child import oom_kills  # here: the child module runs as __main__ where this is called

    kills_before = oom_kills()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err).returncode
        except OSError as exc:  # the same for every model: the device cannot measure until the tool is there
            raise RuntimeUnavailable(f"cannot run the command runtime's tool {argv[0]!r}: {exc}") from None
        left = kill_descendants(os.getpid())  # this process is their subreaper: even a daemon is below it
        if left:
            on_leftovers(left)
        # A tool printing bytes that are not UTF-8 is read anyway: the parse says what it found.
        stdout, stderr = (_read(f) for f in (out, err))
    if rc == 0:
        return stdout
    if rc > 0:
        why = f"exited with status {rc}"
    else:
        try:
            why = f"died from {signal.Signals(-rc).name}"
        except ValueError:
            why = f"died from signal {-rc}"
    said = f"command {shlex.join(argv)[:200]} {why}; stderr ends: {stderr[-500:].strip()!r}"
    if rc in SHELL_NOT_FOUND:  # `sh -c`, `adb shell`: the tool it names is missing there
        raise RuntimeUnavailable(f"{said} (the shell's status for a command it cannot find or run)")
    if rc > 0 or -rc in CRASH_SIGNALS:
        raise RunFailure(said)
    if rc == -signal.SIGKILL and kills_before is not None and oom_kills() != kills_before:
        raise OutOfMemory(f"{said} (the kernel's OOM killer killed a process meanwhile)")
    raise ToolKilled(f"{said}; a signal sent to it, not a crash: nothing said about the model")


def _read(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def _check_runs_fit(policy, seconds_left: Callable[[], float] | None, run_s: float, runs_done: int,
                    runs_left: int) -> None:
    """Raise TooSlowForPolicy when the runs left, each as long as the fastest so far, cannot end before the
    per-model limit: the tool's runs are this runtime's windows, so their length is what decides it."""
    if seconds_left is None or not runs_left:
        return
    needed_s, left_s = runs_left * run_s, seconds_left()
    if needed_s <= left_s:
        return
    raise TooSlowForPolicy(
        f"one run of the command takes at least {run_s:.1f} s here, so the runs left of this policy ({runs_left}: "
        f"options.warmup_runs, then repeats = {policy.repeats} windows of one run each) need at least {needed_s:.1f} s "
        f"more, where {max(left_s, 0):.1f} s of model_timeout_s = {policy.model_timeout_s:g} s are left: raise "
        "model_timeout_s or lower repeats (the profile's [measurement.policy]; hwl measure --policy FIELD=VALUE), or "
        f"have the tool do fewer runs per call (its own flags in the command); stopped after run {runs_done} instead "
        "of at the limit")


def prepare(request, model, cache_dir=None) -> Prepared:
    options = dict(request.options)
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise BadRequest(f"unknown command option(s) {', '.join(unknown)}; valid: {', '.join(sorted(KNOWN_OPTIONS))}")
    if ("regex" in options) == ("json_path" in options):
        raise BadRequest("command runtime needs exactly one of options.regex or options.json_path")
    unit = options.get("unit", "ms")
    if not isinstance(unit, str) or unit not in UNITS_NS:
        raise BadRequest(f"command option unit={unit!r}; valid: {', '.join(UNITS_NS)}")
    if "regex" in options:
        try:
            re.compile(options["regex"])
        except (re.error, TypeError) as exc:  # TypeError: not a string
            raise BadRequest(f"command option regex {options['regex']!r} does not compile: {exc}") from None
    scale = UNITS_NS[unit]
    warmup_runs = count_option(options, "warmup_runs", default=0, runtime="command")
    values = {"model": "", "sha256": request.sha256, "threads": request.threads,
              "cores": ",".join(map(str, request.cores)), "batch": request.batch}
    argv = build_argv(options["command"], values)  # refuses a bad template before a copy is made
    copy_folder = None
    if model is not None:
        # The tool opens {model} itself, again at each run: it gets the hashed bytes in a folder only this
        # user may enter, not the model's own path, which any writer of its folder could swap meanwhile.
        copy, copy_folder = private_copy(model.data, model.path.name)
        argv = build_argv(options["command"], {**values, "model": str(copy)})

    def timing(policy, report, *, seconds_left=None, on_leftovers=lambda left: None) -> Timing:
        phases = ["warmup"] * warmup_runs + [f"window {i}" for i in range(policy.repeats)]
        repeats, fastest_s = [], math.inf
        for done, phase in enumerate(phases, 1):
            report(phase)
            t0 = time.monotonic()
            out = _run(argv, on_leftovers)
            fastest_s = min(fastest_s, time.monotonic() - t0)
            if phase != "warmup":
                repeats.append(tuple(v * scale for v in parse_latencies(out, regex=options.get("regex"),
                                                                       json_path=options.get("json_path"))))
            _check_runs_fit(policy, seconds_left, fastest_s, done, len(phases) - done)
        return Timing(block_size=1, samples_ns=tuple(repeats), first_ns=None,
                      warmup_runs=warmup_runs, warmup_ns=0)

    return Prepared(block=None, runtime_version=str(options.get("version", "")), provider="command",
                    input_shape=tuple(request.input_shape), metadata={"argv": argv, "unit": unit},
                    timing=timing, close=copy_folder.cleanup if copy_folder else None)
