"""The latency-table error, apart from ``predictors.data``: refusing an unknown task name (``predictors.tasks``)
should not wait for pandas."""
from harness.errors import UserError


class LatencyTableError(UserError):
    """A latency table that cannot be used: missing columns, empty, unknown device, bad values."""
