"""The agent protocol: JSON lines over the agent's stdin/stdout.

One message per line, UTF-8 JSON objects of at most ``MAX_LINE_BYTES``. Every message has a
``type`` tag, a ``v`` version string ``"MAJOR.MINOR"`` and an ``id`` that a reply echoes, so the
host can match replies to requests (``ping`` and ``status`` are answered while a measurement
runs, so replies may come out of order). :func:`encode` and :func:`decode` are the only code
that touches JSON. A line that is not JSON, has an unknown ``type`` or another major version
raises :class:`ProtocolError`; missing or mistyped fields raise :class:`BadRequest` (a subclass).
Unknown fields are refused too, unless the message carries a newer minor version (then they are
ignored: minor versions only add optional fields).

Handshake: the agent writes a ``hello`` line as soon as it starts (before reading anything);
the host may send ``hello`` again at any time to get a fresh one.

Requests (host -> agent) and their replies (agent -> host):

``hello`` -> ``hello``
    Request fields are ignored. Reply: ``agent_version``, ``pid``, ``fingerprint`` (dict, see
    ``agents.fingerprint``), ``fingerprint_id`` (16 hex digits over the stable fields),
    ``runtimes`` (names importable on this device), ``cache_dir`` (where a coordinator puts model
    files named ``<sha256>.onnx``; empty when the agent has none), ``usable_cores`` (the CPUs a
    measurement may use; since 1.1, so empty from an older agent).
``ping`` -> ``ping``
    ``sent_ns``: the host's clock, echoed back; the reply adds ``agent_ns`` (the agent's
    monotonic clock). Answered even while a measurement runs.
``status`` -> ``status``
    Reply: ``state`` ("idle" or "busy"), ``job_id`` (id of the running measure, "" when idle),
    ``jobs_done``, ``uptime_s``, ``load_avg`` (1, 5, 15 min), ``pid``. Answered while busy.
``measure`` -> ``result`` (or ``error``)
    ``runtime``: "onnxruntime" (alias "ort"), "torch", "tvm" or "command".
    ``model``: path of the model file on the agent, or "" to look it up in the cache dir by
    ``sha256``. ``sha256``: hex digest of the model file; required whenever a file is used, and
    checked before anything runs (a mismatch is refused with ``error`` kind ``HashMismatch``).
    ``arch``: for torch without a file, ``{"space": "nb201"|"fbnet", "key": ..., "dataset":
    "cifar10"|...}`` or ``{"factory": "module:function"}`` returning an ``nn.Module``.
    ``input_shape``: full input shape including batch, or empty to take it from the model (a free
    leading dimension becomes ``batch``; another free one takes the size its name has in ``input_shape``,
    else the request is refused). ``batch`` (default 1), ``dtype`` (default "float32"; the record of an ONNX
    model carries the model's own floating-point type),
    ``threads`` (default 1), ``cores`` (CPU ids the measuring process is pinned to; empty: no
    pinning), ``profile`` ("quick" or "standard"), ``policy`` (dict overriding TimingPolicy
    fields, e.g. ``{"repeats": 3}``), ``options`` (runtime options, see ``agents.runtimes``),
    ``seed`` (input tensors, default 0), ``labels`` (opaque dict copied into the record:
    arch key, campaign, device, attempt...).
    Reply ``result``: ``outcome`` (ok, load_error, unsupported_op, compile_error, runtime_error,
    timeout, oom, unstable), ``message`` (why, for any outcome but ok), ``measurement`` (the
    record as a dict, ``agents.measurement.Measurement.to_dict``; null when nothing was timed;
    present with outcome "unstable"), ``elapsed_s`` (wall time of the whole job).
    A second ``measure`` while one runs gets ``error`` kind ``AgentBusy``; a device that stays
    over the policy's ``max_temp_c`` gets ``error`` kind ``DeviceTooHot`` (quarantine it).
    Refusals before anything runs (``HashMismatch``, ``ModelNotFound``, ``CoresUnavailable``
    (a ``BadRequest``) for cores the agent may not use, ``RuntimeUnavailable``) are ``error`` replies, not results.
``shutdown`` -> ``shutdown``
    ``reason`` (free text, logged). The agent kills a running measurement, replies and exits 0.

Agent -> host only:

``error``
    ``kind`` (class name from ``agents.errors``: ProtocolError, BadRequest, CoresUnavailable,
    ModelNotFound, HashMismatch, RuntimeUnavailable, AgentBusy, DeviceTooHot, HwlError), ``message``; the
    host re-raises it as that class (``Error.to_exception``). ``id`` is the request's
    id when it could be read, else "". The agent keeps serving after sending it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

from agents.errors import BadRequest, ProtocolError
from agents.verified import is_sha256

PROTOCOL_VERSION = "1.1"
MAX_LINE_BYTES = 16 * 1024 * 1024  # a standard-profile record of a 1 ms model is ~200 kB
RUNTIME_ALIASES = {"ort": "onnxruntime", "onnxruntime": "onnxruntime", "torch": "torch",
                   "tvm": "tvm", "command": "command"}
OUTCOMES = ("ok", "load_error", "unsupported_op", "compile_error", "runtime_error", "timeout",
            "oom", "unstable")
MEASURED_OUTCOMES = ("ok", "unstable")  # the outcomes that carry a latency (an unstable one is queued again)


def agent_runs_threads(runtime: str) -> bool:
    """Whether a runtime's ``threads`` run in the agent's measuring process, on the cores it is pinned to, so they
    count against those cores. A command tool's do not: the agent only fills them in as ``{threads}``, and the tool
    may run them on another device (a phone behind adb, 8 cores, from a 2-core PC)."""
    return RUNTIME_ALIASES.get(runtime, runtime) != "command"
PROFILES = ("quick", "standard")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise BadRequest(message)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Message:
    """Base of every message: ``type`` tag (class attribute), ``v`` version and ``id``."""

    type: ClassVar[str] = ""
    id: str = ""
    v: str = PROTOCOL_VERSION

    def __post_init__(self):
        _check(isinstance(self.id, str), f"{self.type}: 'id' must be a string, got {self.id!r}")
        _check(isinstance(self.v, str), f"{self.type}: 'v' must be a string like '1.0'")


@dataclass(frozen=True)
class Hello(Message):
    """Agent identity; sent unprompted at start and as the reply to a ``hello`` request."""

    type: ClassVar[str] = "hello"
    agent_version: str = ""
    pid: int = 0
    fingerprint: dict = field(default_factory=dict)
    fingerprint_id: str = ""
    runtimes: tuple = ()
    cache_dir: str = ""
    usable_cores: tuple = ()


@dataclass(frozen=True)
class Ping(Message):
    """Liveness check; the reply echoes ``sent_ns`` and adds the agent's clock ``agent_ns``."""

    type: ClassVar[str] = "ping"
    sent_ns: int = 0
    agent_ns: int = 0


@dataclass(frozen=True)
class Status(Message):
    """Agent state; request fields are ignored, the reply fills them."""

    type: ClassVar[str] = "status"
    state: str = ""
    job_id: str = ""
    jobs_done: int = 0
    uptime_s: float = 0.0
    load_avg: tuple = ()
    pid: int = 0


@dataclass(frozen=True)
class Measure(Message):
    """Request to measure one model; see the module docstring for every field."""

    type: ClassVar[str] = "measure"
    runtime: str = ""
    model: str = ""
    sha256: str = ""
    arch: dict = field(default_factory=dict)
    input_shape: tuple = ()
    batch: int = 1
    dtype: str = "float32"
    threads: int = 1
    cores: tuple = ()
    profile: str = "standard"
    policy: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    seed: int = 0
    labels: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        _check(self.runtime in RUNTIME_ALIASES,
               f"measure: 'runtime' must be one of {', '.join(RUNTIME_ALIASES)}; got {self.runtime!r}")
        _check(isinstance(self.model, str) and isinstance(self.sha256, str),
               "measure: 'model' and 'sha256' must be strings")
        for name in ("arch", "policy", "options", "labels"):
            _check(isinstance(getattr(self, name), dict), f"measure: {name!r} must be an object")
        runtime = RUNTIME_ALIASES[self.runtime]
        if runtime == "command":
            _check("command" in self.options, "measure: runtime 'command' needs options.command "
                                              "(a template such as 'adb shell ... {model}')")
        elif runtime == "torch":
            _check(bool(self.arch) and not self.model,
                   "measure: runtime 'torch' needs 'arch' ({'space': 'nb201'|'fbnet', 'key': ..., 'dataset': ...} "
                   "or {'factory': 'module:function'}) and no 'model'")
        else:
            _check(bool(self.model or self.sha256),
                   f"measure: runtime {runtime!r} needs 'model' (a path) or 'sha256' (cache lookup)")
        if self.model or (runtime != "command" and not self.arch):
            _check(is_sha256(self.sha256),
                   "measure: 'sha256' (64 lower-case hex digits of the model file) is required "
                   "when a model file is used")
        _check(all(_is_int(d) and d > 0 for d in self.input_shape),
               f"measure: 'input_shape' must be positive integers, got {list(self.input_shape)}")
        _check(_is_int(self.batch) and self.batch > 0, f"measure: 'batch' must be >= 1, got {self.batch!r}")
        _check(_is_int(self.threads) and self.threads > 0,
               f"measure: 'threads' must be >= 1, got {self.threads!r}")
        _check(all(_is_int(c) and c >= 0 for c in self.cores),
               f"measure: 'cores' must be CPU ids >= 0, got {list(self.cores)}")
        # a core named twice pinned nothing more and made `hwl measure` wait for ever on its own lock of that core
        _check(len(set(self.cores)) == len(self.cores), f"measure: 'cores' lists a core twice: {list(self.cores)}")
        _check(self.profile in PROFILES,
               f"measure: 'profile' must be one of {', '.join(PROFILES)}; got {self.profile!r}")
        _check(_is_int(self.seed), f"measure: 'seed' must be an integer, got {self.seed!r}")

    @property
    def runtime_name(self) -> str:
        """Canonical runtime name ("ort" -> "onnxruntime")."""
        return RUNTIME_ALIASES[self.runtime]


@dataclass(frozen=True)
class Result(Message):
    """Reply to ``measure``: a typed outcome and, when something was timed, the record."""

    type: ClassVar[str] = "result"
    outcome: str = "ok"
    message: str = ""
    measurement: dict | None = None
    elapsed_s: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _check(self.outcome in OUTCOMES,
               f"result: 'outcome' must be one of {', '.join(OUTCOMES)}; got {self.outcome!r}")

    def record(self):
        """The measurement as an ``agents.measurement.Measurement`` (None when nothing was timed)."""
        from agents.measurement import Measurement
        return None if self.measurement is None else Measurement.from_dict(self.measurement)


@dataclass(frozen=True)
class Shutdown(Message):
    """Ask the agent to stop; it replies with the same type and exits."""

    type: ClassVar[str] = "shutdown"
    reason: str = ""


@dataclass(frozen=True)
class Error(Message):
    """A refused or unreadable request; ``kind`` names a class in ``agents.errors``."""

    type: ClassVar[str] = "error"
    kind: str = "HwlError"
    message: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, id: str = "") -> "Error":
        return cls(id=id, kind=type(exc).__name__, message=str(exc))

    def to_exception(self) -> Exception:
        """The error as the agent-side class it names, ready to raise on the host."""
        from agents.errors import error_class
        return error_class(self.kind)(self.message)


MESSAGES: dict[str, type[Message]] = {cls.type: cls for cls in
                                      (Hello, Ping, Status, Measure, Result, Shutdown, Error)}
_TUPLE_FIELDS = {"runtimes", "load_avg", "input_shape", "cores", "usable_cores"}


def _version(v) -> tuple[int, int]:
    try:
        major, minor = str(v).split(".")
        return int(major), int(minor)
    except ValueError:
        raise ProtocolError(f"bad protocol version {v!r}; this side speaks {PROTOCOL_VERSION}") from None


def encode(msg: Message) -> bytes:
    """One JSON line (with the trailing newline) for a message."""
    body = {"type": msg.type}
    body.update(dataclasses.asdict(msg))
    line = json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"{msg.type} message is {len(line)} bytes, over the {MAX_LINE_BYTES} limit")
    return line


def decode(line: bytes | str) -> Message:
    """Parse one line into its message class.

    Raises
    ------
    ProtocolError
        Not JSON, not an object, too long, unknown ``type`` or another major version.
    BadRequest
        Missing, unknown or mistyped fields.
    """
    if isinstance(line, str):
        line = line.encode()
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes is over the {MAX_LINE_BYTES} limit")
    try:
        body = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not a JSON line ({exc}): {line[:80]!r}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(body).__name__}")
    kind = body.pop("type", None)
    if kind not in MESSAGES:
        raise ProtocolError(f"unknown message type {kind!r}; valid types: {', '.join(MESSAGES)}")
    v = body.get("v")
    if v is None:
        raise BadRequest(f"{kind}: missing field 'v' (protocol version, this side speaks {PROTOCOL_VERSION})")
    major, minor = _version(v)
    ours = _version(PROTOCOL_VERSION)
    if major != ours[0]:
        raise ProtocolError(f"{kind}: protocol version {v} is not compatible with this side's "
                            f"{PROTOCOL_VERSION} (major versions differ); update the older side")
    cls = MESSAGES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(body) - names)
    if unknown and minor <= ours[1]:
        raise BadRequest(f"{kind}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {k: (tuple(val) if k in _TUPLE_FIELDS and isinstance(val, list) else val)
              for k, val in body.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a list where a number belongs, compared in __post_init__
        raise BadRequest(f"{kind}: {exc}") from None


__all__ = ["Error", "Hello", "MAX_LINE_BYTES", "MEASURED_OUTCOMES", "MESSAGES", "Measure", "Message", "OUTCOMES",
           "PROFILES", "PROTOCOL_VERSION", "Ping", "ProtocolError", "Result", "RUNTIME_ALIASES",
           "Shutdown", "Status", "decode", "encode"]
