"""Root of hwl's error tree, and the errors that cross the agent protocol.

Kept in ``agents`` because the agent must run alone on a device (numpy + one runtime).
An agent failure travels as ``Error(kind=<class name>, message=...)`` and the host re-raises it
as the same class with :func:`error_class`.
"""


class HwlError(Exception):
    """Root of every error hwl raises on purpose."""


class ProtocolError(HwlError):
    """A line that is not a valid protocol message (bad JSON, unknown type, other major version)."""


class BadRequest(ProtocolError):
    """A well-formed message whose fields are missing, of the wrong type or contradictory."""


class CoresUnavailable(BadRequest):
    """The request pins cores this device does not have (or the agent may not use): the profile is
    wrong for the device, so no model can run and no retry helps."""


class ModelNotFound(HwlError):
    """The model named by a request is neither at its path nor in the agent's hash-keyed cache."""


class HashMismatch(HwlError):
    """The model file's sha256 differs from the one in the request; the agent refuses to run it."""


class RuntimeUnavailable(HwlError):
    """The runtime a request names is not installed on this device (or lacks the asked provider)."""


class AgentBusy(HwlError):
    """A measurement was requested while another one is still running on this agent."""


class DeviceTooHot(HwlError):
    """The device stayed above the profile's temperature limit for the whole wait (rule 6);
    the coordinator should quarantine it."""


class ToolKilled(HwlError):
    """The command runtime's external tool was killed by a signal sent to it (a person, a watchdog, a
    dying adb server; not a crash of its own, not the OOM killer): it says nothing about the model."""


class TooSlowForPolicy(HwlError):
    """The model's inferences are too slow for its timing policy (warmup and windows) to end within
    ``model_timeout_s``: found in the warmup (the command runtime: after a run of its tool), so the measurement
    stops there instead of being killed at the limit. It says nothing about the device, and measuring again under
    the same policy ends the same way."""


class MeasurementTimeout(HwlError):
    """A timed window or a whole model ran past its time limit; the measuring process and the processes below it
    were killed."""


# Classes that may be named in an Error reply, by name.
PROTOCOL_ERRORS = {cls.__name__: cls for cls in (
    HwlError, ProtocolError, BadRequest, CoresUnavailable, ModelNotFound, HashMismatch, RuntimeUnavailable,
    AgentBusy, DeviceTooHot, MeasurementTimeout,
)}


def error_class(kind: str) -> type[HwlError]:
    """The error class for an ``Error.kind``; unknown kinds map to :class:`HwlError`."""
    return PROTOCOL_ERRORS.get(kind, HwlError)
