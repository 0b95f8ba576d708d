"""Errors of the coordinator side. ``UserError`` leaves are printed as one line by the CLI."""
from agents.errors import HwlError
from spaces.errors import ArchError


class UserError(HwlError):
    """A mistake in the user's input: the message says what is wrong and what to do."""


# What the CLI reports as one line and exit code 2, instead of a traceback.
USER_ERRORS = (UserError, ArchError)
