"""Errors raised for bad architecture input."""


class ArchError(ValueError):
    """An architecture key, index or string that does not belong to a search space.

    The message names the problem and the valid choices, so the CLI can print it as is.
    """
