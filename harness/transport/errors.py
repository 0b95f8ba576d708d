"""Errors of talking to an agent. Agent-side refusals arrive as ``agents.errors`` classes."""
from agents.errors import HwlError


class ConnectionLost(HwlError):
    """The channel to an agent broke; what was in flight is unknown (retry with attempt + 1)."""

    def __init__(self, message: str, *, device: str | None = None):
        super().__init__(message)
        self.device = device


class AgentLost(ConnectionLost):
    """The agent process exited or closed its output; the message carries its exit status and log tail."""


class DeviceSetupError(HwlError):
    """The device cannot be used until someone acts (a missing or refused key, an unknown host key,
    no agent deployed): not a lost link, so it is not retried, and no power cycle fixes it."""

    def __init__(self, message: str, *, device: str | None = None):
        super().__init__(message)
        self.device = device


class AgentTimeout(ConnectionLost):
    """The agent did not answer within the call's time limit; the session was closed."""
