"""The host's view of one agent: a ``Session`` sends a request and returns its reply.

:class:`Session` is the interface campaign code uses; it never needs to know the transport.
:class:`LineSession` implements it over any pair of byte streams carrying the JSON-lines
protocol (a local pipe, an SSH channel): a reader thread files replies by request id, so
``ping`` can be answered while a ``measure`` is in flight on another thread.

Lifecycle: create (nothing opens), ``open()`` (or the first ``request`` / ``hello`` / ``with``)
starts the agent and reads its hello line, work, ``close()`` (idempotent).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque

from agents.errors import ProtocolError
from agents.protocol import Error, Hello, Measure, Message, decode, encode
from harness.transport.errors import AgentLost, AgentTimeout

log = logging.getLogger(__name__)
DEFAULT_CALL_TIMEOUT_S = 30.0  # rule 21: per agent call
# The agent's error replies to lines it could not read (no id) kept for a look: the latest only, as a session
# lives for a whole campaign and a link that garbles lines would otherwise fill memory with them.
UNMATCHED_KEPT = 100
# Departure from rule 21's 30 s per call: a measure call legitimately lasts as long as the
# model's own limit (300 s standard), which the agent enforces itself; the host waits that long
# plus this margin, so a silent agent is still detected.
MEASURE_MARGIN_S = 30.0
# Uploads a session remembers (its ``pushed``, for tests and logs): a month-long campaign pushes one
# model per architecture, so a session keeps the latest few, not one entry per upload for ever.
RECENT_PUSHES = 100


def measure_timeout_s(msg: Measure) -> float:
    """How long a host waits for a measure reply: the agent's own per-model limit plus a margin."""
    from agents.timing import TimingPolicy
    return TimingPolicy.from_profile(msg.profile, msg.policy).longest_s + MEASURE_MARGIN_S


class Session(ABC):
    """One conversation with one agent.

    Attributes
    ----------
    hello : agents.protocol.Hello
        The agent's greeting (version, fingerprint, runtimes, cache dir); opens the session.
    is_connected : bool
    """

    @abstractmethod
    def open(self) -> "Session": ...

    @abstractmethod
    def request(self, msg: Message, *, timeout_s: float | None = None) -> Message:
        """Send ``msg`` and return the agent's reply.

        Raises
        ------
        agents.errors.HwlError subclass
            The agent answered with ``error``; raised as the class it names.
        ConnectionLost (AgentLost, AgentTimeout)
            No reply: the agent died, or did not answer in time (the session is then closed).
        """

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def hello(self) -> Hello: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


class LineSession(Session):
    """Session over a readable and a writable byte stream; subclasses start the agent.

    Subclasses implement ``_connect() -> (reader, writer)``, ``_disconnect()`` and
    ``_why_lost() -> str`` (exit status, log tail) and may set ``name`` for messages.
    """

    name = "agent"

    def __init__(self):
        self._reader = self._writer = None
        self._hello: Hello | None = None
        self._replies: dict[str, Message] = {}
        self._cond = threading.Condition()
        self._eof = False
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._open_lock = threading.Lock()  # two threads opening at once must not start two agents
        self.unmatched: deque[Message] = deque(maxlen=UNMATCHED_KEPT)  # error replies to unreadable lines (no id)

    @abstractmethod
    def _connect(self): ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    def _why_lost(self) -> str:
        return ""

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._reader is not None and not self._eof

    def open(self, timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> "LineSession":
        with self._open_lock:
            if self._reader is None:
                self._open(timeout_s)
        return self

    def _open(self, timeout_s: float) -> None:
        self._eof = False
        self._reader, self._writer = self._connect()
        self._thread = threading.Thread(target=self._read_loop, name=f"{self.name}-reader", daemon=True)
        self._thread.start()
        try:
            self._hello = self._wait_for("", timeout_s, "hello")
        except AgentLost:
            why = self._why_lost()
            self.close()
            raise AgentLost(f"{self.name}: the agent did not start; {why}") from None
        if not isinstance(self._hello, Hello):
            self.close()
            raise ProtocolError(f"{self.name} did not greet with hello; it sent {self._hello.type!r}")
        log.info("%s: agent %s, fingerprint %s", self.name, self._hello.agent_version, self._hello.fingerprint_id)

    def close(self) -> None:
        if self._reader is None:
            return
        try:
            self._disconnect()
        finally:
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._reader = self._writer = self._thread = None
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    @property
    def hello(self) -> Hello:
        self.open()
        return self._hello

    # ---- requests ----------------------------------------------------------------------
    def request(self, msg: Message, *, timeout_s: float | None = None) -> Message:
        self.open()
        if not msg.id:
            msg = dataclasses.replace(msg, id=f"r{next(self._ids)}")
        if timeout_s is None:
            timeout_s = measure_timeout_s(msg) if isinstance(msg, Measure) else DEFAULT_CALL_TIMEOUT_S
        line = encode(msg)
        try:
            with self._write_lock:
                self._writer.write(line)
                self._writer.flush()
        except (BrokenPipeError, OSError, ValueError, EOFError) as exc:  # EOFError: paramiko's, link gone
            said = str(exc) or "the link closed"
            raise AgentLost(f"{self.name}: cannot send {msg.type} ({said}); {self._why_lost()}") from None
        reply = self._wait_for(msg.id, timeout_s, msg.type)
        if isinstance(reply, Error):
            raise reply.to_exception()
        return reply

    def _wait_for(self, id: str, timeout_s: float, what: str) -> Message:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while id not in self._replies:
                left = deadline - time.monotonic()
                if self._eof:
                    raise AgentLost(f"{self.name}: the agent went away before answering {what}; {self._why_lost()}")
                if left <= 0:
                    break
                self._cond.wait(timeout=min(left, 1.0))
            else:
                return self._replies.pop(id)
        self.close()
        raise AgentTimeout(f"{self.name}: no reply to {what} within {timeout_s:g} s; the session was closed")

    def _read_loop(self) -> None:
        reader = self._reader
        try:
            for raw in reader:
                if not raw.strip():
                    continue
                try:
                    msg = decode(raw)
                except ProtocolError as exc:
                    log.warning("%s: unreadable line from agent (%s)", self.name, exc)
                    continue
                with self._cond:
                    if msg.id == "" and isinstance(msg, Error):
                        log.warning("%s: the agent could not read a line sent to it: %s", self.name, msg.message)
                        self.unmatched.append(msg)
                    else:
                        self._replies[msg.id] = msg
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()
