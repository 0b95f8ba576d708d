"""A known_hosts file read as OpenSSH reads it for one host.

paramiko's ``HostKeys.load`` knows neither the ``@revoked`` and ``@cert-authority`` markers (a marker line
stopped it with ``InvalidHostKey``, a traceback for every host) nor host patterns (``*``, ``?``, ``!name``)
and names in capitals, which ssh matches. Here each line's names are matched against the host as ssh
does; paramiko still parses the keys and hashes ``|1|`` names.
"""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.hostkeys import InvalidHostKey

from harness.remote.errors import HostKeyError

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


@dataclass(frozen=True)
class KnownHostLine:
    lineno: int
    marker: str | None  # REVOKED, CERT_AUTHORITY or None for a plain line
    names: str  # comma-separated patterns, or one hashed name |1|salt|hash
    key: paramiko.PKey

    def names_host(self, host_id: str) -> bool:
        """Whether this line is about ``host_id`` (``host`` or ``[host]:port``), as ssh's match_hostname: a
        negated pattern that matches rules the line out whatever else matches."""
        host_id = host_id.lower()  # ssh lowercases the host it connects to, and matches without case
        if self.names.startswith("|1|"):
            try:
                return hmac.compare_digest(paramiko.HostKeys.hash_host(host_id, self.names), self.names)
            except (ValueError, AssertionError):  # paramiko's words for a salt that is no base64: ssh skips it
                return False
        named = False
        for pattern in self.names.lower().split(","):
            negated = pattern.startswith("!")
            if _pattern_matches(pattern[1:] if negated else pattern, host_id):
                if negated:
                    return False
                named = True
        return named


def _pattern_matches(pattern: str, name: str) -> bool:
    """ssh's patterns: ``*`` any run of characters, ``?`` one; ``[`` is a plain character ([host]:port)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


def _parse_line(lineno: int, text: str) -> KnownHostLine | None:
    """One line, or None for a comment, a blank line or a line ssh skips too (unknown marker or key type)."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    marker = None
    if text.startswith("@"):
        marker, _, text = text.partition(" ")
        if marker not in (REVOKED, CERT_AUTHORITY):
            return None
    fields = text.split()
    if len(fields) < 3:
        return None
    try:
        entry = paramiko.hostkeys.HostKeyEntry.from_line(" ".join(fields[:3]), lineno)
    except (InvalidHostKey, paramiko.SSHException, ValueError):
        return None
    return None if entry is None else KnownHostLine(lineno, marker, fields[0], entry.key)


def read_known_hosts(path: Path, *, host: str | None = None) -> list[KnownHostLine]:
    """The lines of the known_hosts file ``path`` ([] when there is none). A folder or a file that is not text
    is a HostKeyError naming it: paramiko let IsADirectoryError or UnicodeDecodeError through as a traceback."""
    if not path.exists():
        return []  # no key recorded yet: every host is unknown
    if path.is_dir():
        raise HostKeyError(f"known_hosts file {path} is a folder; give the file (such as {path / 'known_hosts'})",
                           host=host)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = "not a text file" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
        raise HostKeyError(f"cannot read known_hosts file {path} ({why}); give the file ssh records host keys in",
                           host=host) from None
    lines = (_parse_line(n, t) for n, t in enumerate(text.splitlines(), 1))
    return [line for line in lines if line is not None]


@dataclass
class HostTrust:
    """What one known_hosts file says of one host."""

    path: Path
    trusted: list[KnownHostLine] = field(default_factory=list)
    revoked: list[KnownHostLine] = field(default_factory=list)
    authorities: list[KnownHostLine] = field(default_factory=list)
    portless: "HostTrust | None" = None  # what the file says of the bare host name, for a port other than 22

    def revoked_by(self, key: paramiko.PKey) -> KnownHostLine | None:
        """The @revoked line that refuses ``key``: ssh refuses it even where another line lists it."""
        return next((line for line in self.revoked if line.key == key), None)

    def accepts(self, key: paramiko.PKey) -> bool:
        """Whether ssh trusts ``key``: no @revoked line refuses it and any plain line lists it, or, at a port other
        than 22 with no line of its key type for [host]:port, a line for the bare host lists it (ssh checks
        "without port identifier" then)."""
        if self.revoked_by(key) is not None:
            return False
        if any(line.key == key for line in self.trusted):
            return True
        if any(line.key.get_name() == key.get_name() for line in self.trusted):
            return False  # a key of its type is recorded for [host]:port: a changed key, whatever else is listed
        return self.portless is not None and self.portless.accepts(key)

    def lines_of_type(self, key_type: str) -> list[KnownHostLine]:
        """The lines that record a key of ``key_type`` for the host (for the bare host name where none names
        [host]:port): the ones a changed key contradicts, which the user must edit."""
        lines = [line for line in self.trusted if line.key.get_name() == key_type]
        return lines or (self.portless.lines_of_type(key_type) if self.portless is not None else [])

    def usable_keys(self) -> dict[str, paramiko.PKey]:
        """The first key of each type that no @revoked line refuses (paramiko keeps one key a type)."""
        keys = {}
        for line in self.trusted:
            if self.revoked_by(line.key) is None:
                keys.setdefault(line.key.get_name(), line.key)
        return keys

    def revoked_message(self, name: str, host_id: str, key: paramiko.PKey, deploy_command: str) -> str:
        line = self.revoked_by(key)
        return (f"host key of {name} ({host_id}, {key.get_name()} {key.fingerprint}) is revoked by {self.path} "
                f"line {line.lineno} (@revoked), and ssh refuses it too: get the host's new key from its admin, "
                f"then record it with `{deploy_command} --trust-new-host`")

    def authority_note(self) -> str:
        """Why an unknown key was not trusted through a @cert-authority line, or '' when none names the host."""
        if not self.authorities:
            return ""
        where = ", ".join(str(line.lineno) for line in self.authorities)
        return (f"; only {CERT_AUTHORITY} (line {where}) could trust it, and hwl does not check host certificates, "
                "so record the host's own key")


def trust_for(path: Path, address: str, port: int = 22, *, host: str | None = None) -> HostTrust:
    """What ``path`` says of the host at ``address``:``port`` (known_hosts names it [address]:port unless the port
    is 22), and of the bare ``address`` too where the port is not 22."""
    lines = read_known_hosts(path, host=host)
    trust = _trust_of(path, lines, address if port == 22 else f"[{address}]:{port}")
    if port != 22:
        trust.portless = _trust_of(path, lines, address)
    return trust


def _trust_of(path: Path, lines: list[KnownHostLine], host_id: str) -> HostTrust:
    trust = HostTrust(path)
    by_marker = {None: trust.trusted, REVOKED: trust.revoked, CERT_AUTHORITY: trust.authorities}
    for line in lines:
        if line.names_host(host_id):
            by_marker[line.marker].append(line)
    return trust
