"""Errors of talking to a device host over SSH. Each says what to do next."""
from harness.errors import UserError


class RemoteError(UserError):
    """A device host could not be used; carries the host's name."""

    def __init__(self, message: str, *, host: str | None = None):
        super().__init__(message)
        self.host = host


class HostKeyError(RemoteError):
    """The host key is unknown or does not match known_hosts."""


class AuthenticationError(RemoteError):
    """The key was refused (or is missing / unreadable)."""


class HostUnreachable(RemoteError):
    """No TCP connection to the host's SSH port."""


class RemoteCommandError(RemoteError):
    """A command on the host exited non-zero."""

    def __init__(self, message: str, *, host: str | None = None, exit_status: int | None = None,
                 stderr: str = ""):
        super().__init__(message, host=host)
        self.exit_status = exit_status
        self.stderr = stderr
