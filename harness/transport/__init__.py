"""Host-side transports to agents: one ``Session`` interface, several ways to reach the agent."""
from harness.transport.base import LineSession, Session
from harness.transport.errors import AgentLost, AgentTimeout, ConnectionLost
from harness.transport.local import LocalSession

__all__ = ["AgentLost", "AgentTimeout", "ConnectionLost", "LineSession", "LocalSession", "Session"]
