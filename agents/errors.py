"""Root of hwl's error tree, and the errors that cross the agent protocol.

Kept in ``agents`` because the agent must run alone on a device (numpy + one runtime).
"""


class HwlError(Exception):
    """Root of every error hwl raises on purpose."""
