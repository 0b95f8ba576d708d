"""Device hosts over SSH (paramiko): connection, deployment, the ssh transport."""
from harness.remote.errors import (AuthenticationError, HostKeyError, HostUnreachable,
                                   RemoteCommandError, RemoteError)
from harness.remote.host import CommandResult, Host

__all__ = ["AuthenticationError", "CommandResult", "Host", "HostKeyError", "HostUnreachable",
           "RemoteCommandError", "RemoteError"]
