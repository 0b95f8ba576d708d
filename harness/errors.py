"""Errors of the coordinator side. ``UserError`` leaves are printed as one line by the CLI."""
from agents.errors import HwlError
from spaces.errors import ArchError


class UserError(HwlError):
    """A mistake in the user's input: the message says what is wrong and what to do."""


class ProfileError(UserError):
    """A device profile that is missing, malformed or names an invalid value (file and key given)."""


class StoreError(UserError):
    """A store file that cannot be used: not an hwl store, or unknown campaign."""


class StoreGone(StoreError):
    """The store's file was removed (or replaced) while a command wrote to it; what it held was
    written back from the open copy where the message says."""


class StoreVersionError(StoreError):
    """A store written by a newer hwl (its schema version is above the one this code knows)."""


class CampaignError(UserError):
    """A campaign that cannot be planned or run as asked (unknown name, conflicting settings)."""


class ClusterError(UserError):
    """A Ray cluster that cannot be joined (nothing listens at the address, or it refuses the
    token), or that broke under a campaign (Ray's node on this machine died)."""


class StorageFull(UserError):
    """The coordinator's disk is full (the store or the artifact folder); nothing stored is lost."""


class ExportError(UserError):
    """An architecture that could not be exported to ONNX, or a stored export that is corrupt."""


class DeviceQuarantined(HwlError):
    """A device failed too many measurements in a row and was taken out of the campaign."""

    def __init__(self, message: str, *, device: str | None = None):
        super().__init__(message)
        self.device = device


# What the CLI reports as one line and exit code 2, instead of a traceback.
USER_ERRORS = (UserError, ArchError)
