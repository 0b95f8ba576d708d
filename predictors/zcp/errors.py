"""Errors of the zero-cost proxy package."""
from harness.errors import UserError


class ZCPError(UserError):
    """Bad proxy input: unknown proxy, unreadable data folder, labels that do not fit the model."""
