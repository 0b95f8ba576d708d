"""The knobs of a campaign run (``harness.coordinator``), and the checks of its artifact folder before any write."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.paths import check_writable_folder
from harness.store import check_new_store_folder


@dataclass
class CoordinatorOptions:
    """Knobs of a run (defaults follow measurement-method.md).

    Parameters
    ----------
    address : str or None
        Ray cluster to join; None starts a local Ray (``num_cpus``, no dashboard).
    num_cpus : int
        CPUs of a local Ray: the export tasks running at once (each takes one).
    ray_temp_dir : str, optional
        A local Ray's temporary folder (Ray's default when None).
    artifact_dir : path
        Content-addressed ONNX store used by the export tasks.
    max_attempts : int
        Attempts per job, counting failures and unstable re-measurements together (not those lost
        with the device or the coordinator: see ``Coordinator._may_retry``).
    quarantine_after : int
        Consecutive failed attempts that quarantine a device.
    canary_every : int
        Jobs between drift canaries on a device (0: no canary).
    canary_tolerance : float
        Relative deviation from the baseline that flags the jobs since the last good canary.
    drift_pause_s : float
        After a canary off by more than that, the device rests this long and a fresh canary
        sets the new baseline (rule 19), so a passing transient does not become the baseline.
    canary_fresh_s : float
        A session skips its first canary when the device's last one (same profile) passed less
        than this long ago: back-to-back sessions, such as onboarding batches, would run two
        canaries seconds apart. The end-of-session canary still checks the session's results.
    export_ahead : int
        Exports kept in flight ahead of each device's queue.
    pipeline_depth : int
        Measurement calls sent to a device actor at once (it runs them one at a time).
    wait_timeout_s : float
        Timeout of each ``ray.wait``; also the progress-report interval.
    hello_timeout_s : float
        How long a device's agent may take to answer its first ``hello`` before the device is given up;
        also part of the time its recover command and reconnect are allowed.
    job_margin_s : float
        Added to the longest a measurement may take under its profile's timing policy (and the session's own
        margin): the coordinator gives up on a device actor's call after that sum (``Coordinator._job_limit_s``),
        counted from when the device's call before it ended (``Coordinator._overdue``).
    pin_service_cores : bool
        Keep this process and a local Ray off the cores local devices measure on.
    fixed_model : dict, optional
        ``{"path", "sha256"}`` of one ONNX file measured for every job instead of each
        architecture's export (to time the coordinator itself, see scripts/bench_dispatch).
    artifact_quota_gb : float, optional
        Keep ``artifact_dir`` under this many GB by removing the least recently used models
        that no job in flight or next in line needs (``harness.artifact_quota``); None keeps all.
    artifact_idle_s : float
        The quota never removes a model used less than this long ago.
    resume_flags : tuple of str
        The flags of the command running the campaign that its resume needs too (``--address``, ``--artifacts``
        ...), kept beside the store for the resume lines printed later (``campaign_lock.last_run_flags``).
    say_quarantine : bool
        Warn of a device's quarantine as it comes; a caller that stops on it and says why itself (onboarding:
        an error with the command that resumes) sets False, and the warning is logged at INFO (``-v``).
    """

    address: str | None = None
    artifact_dir: Path = Path("artifacts")
    num_cpus: int = 2
    max_attempts: int = 3
    quarantine_after: int = 3
    canary_every: int = 50
    canary_tolerance: float = 0.03
    drift_pause_s: float = 10.0
    canary_fresh_s: float = 60.0
    export_ahead: int = 3
    pipeline_depth: int = 2
    wait_timeout_s: float = 1.0
    hello_timeout_s: float = 120.0
    job_margin_s: float = 120.0
    pin_service_cores: bool = True
    ray_temp_dir: str | None = None
    fixed_model: dict | None = None
    artifact_quota_gb: float | None = None
    artifact_idle_s: float = 120.0
    resume_flags: tuple = ()
    say_quarantine: bool = True

    def check_artifact_folder(self, profiles) -> None:
        """Refuse an artifact folder that cannot be written, when one of ``profiles`` measures exported models
        (torch builds its network on the device). Called before a campaign is planned, so a refusal leaves
        the store as it was."""
        if not self.fixed_model and any(p.runtime.kind != "torch" for p in profiles):
            check_writable_folder(self.artifact_dir, what=f"the artifact folder {self.artifact_dir}")

    def checked_store(self, store, profiles):
        """``store``, once a new store's folder and the artifact folder are known to be writable: called as the
        store is opened, so a refusal leaves no campaign planned and no new, empty store file. The store's
        folder is said first: the default artifact folder is beside it."""
        check_new_store_folder(store)
        self.check_artifact_folder(profiles)
        return store
