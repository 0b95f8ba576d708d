"""A channel opened on an SSH connection, and when the server refuses it, why in its own words.

The server's refusal (RFC 4254 SSH_MSG_CHANNEL_OPEN_FAILURE) carries a reason code and a description, such as
OpenSSH's "Connection refused" or "No route to host" for a gateway's failed connect. paramiko's
``ChannelException`` keeps the code and its own name for it, and only logs the description, from the
transport's thread. So while this module opens a channel, the transport logs (``Transport.set_log_channel``) to
a logger of hwl's own, whose one filter keeps that thread's lines and lets none through.
"""
from __future__ import annotations

import logging
import re
import threading

import paramiko

# paramiko's line for a refused open: "Secsh channel 3 open FAILED: <description>: <its name for the code>"
_REFUSED_LINE = re.compile(r"Secsh channel \d+ open FAILED: (?P<description>.*): (?P<name>[^:]*)", re.DOTALL)
_LOG_NAME = "hwl.ssh.channel_open"


class ChannelRefused(paramiko.ChannelException):
    """A ``ChannelException`` with the server's ``description`` (None where the server gave none, or logging is
    off and it could not be read)."""

    def __init__(self, code: int, text: str, description: str | None):
        super().__init__(code, text)
        self.description = description


class _LinesOfWatchedThreads(logging.Filter):
    """The filter of hwl's logger: each line a watched thread logs is kept for it; nothing is passed on (the
    error that follows says what matters), and a line of any other thread is dropped as well."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._lines: dict[int, list[str]] = {}

    def watch(self, thread_id: int) -> list[str]:
        with self._lock:
            return self._lines.setdefault(thread_id, [])

    def forget(self, thread_id: int) -> None:
        with self._lock:
            self._lines.pop(thread_id, None)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            lines = self._lines.get(record.thread)
        if lines is not None:
            lines.append(record.getMessage())
        return False


_WATCHER = _LinesOfWatchedThreads()
_WATCHER_SET = threading.Lock()


def _watcher() -> _LinesOfWatchedThreads:
    """The filter, put on hwl's logger at first use (not at import): ERROR lines, whatever the root level."""
    logger = logging.getLogger(_LOG_NAME)
    with _WATCHER_SET:
        if _WATCHER not in logger.filters:
            logger.setLevel(logging.ERROR)
            logger.addFilter(_WATCHER)
    return _WATCHER


def open_channel(transport: paramiko.Transport, kind: str, dest_addr=None, src_addr=None, *,
                 timeout_s: float) -> paramiko.Channel:
    """``transport.open_channel(...)``; a refusal raised as ``ChannelRefused``, with the server's description."""
    watcher, thread_id = _watcher(), transport.ident
    lines, channel = watcher.watch(thread_id), transport.get_log_channel()
    transport.set_log_channel(_LOG_NAME)
    try:
        return transport.open_channel(kind, dest_addr, src_addr, timeout=timeout_s)
    except paramiko.ChannelException as exc:
        raise ChannelRefused(exc.code, exc.text, _description(lines, exc.text)) from None
    finally:
        transport.set_log_channel(channel)
        watcher.forget(thread_id)


def _description(lines: list[str], name: str) -> str | None:
    for line in reversed(lines):
        found = _REFUSED_LINE.fullmatch(line)
        if found and found["name"] == name:
            return found["description"].strip() or None
    return None
