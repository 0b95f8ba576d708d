"""The campaign coordinator on Ray: keeps every device busy, owns retries, writes the store.

* One named actor per device (``device:<name>``, ``get_if_exists``) wrapping
  :class:`~harness.device_worker.DeviceWorker`, pinned to its host by the custom resource
  ``host:<name>``; Ray task retries are off (``max_task_retries=0``); ``status`` runs in its own
  concurrency group, measurements in the (serial) default group.
* Model exports are Ray tasks calling ``harness.export.export_one``; they run ahead of each
  device's queue by a bounded window (backpressure), results are taken with ``ray.wait`` as
  they complete, and every ``ray.wait`` / ``ray.get`` has a timeout (their book: ``harness.model_exports``).
* The coordinator commits each job's state to the store before acting on it, numbers attempts,
  re-queues failures (at most ``max_attempts`` per job) and unstable / drifting / contended records (at
  most 2 extra attempts, then the steadiest attempt is accepted, an uncontended one first), quarantines a device after 3
  failures in a row (first measuring its drift canary, which tells a failing device from models
  it cannot run, then running its profile's ``recover`` command, if it has one, once per run of
  failures), and runs a drift canary at the start (unless the device's last one passed moments
  ago), after a recover command, every 50 jobs and at the end.
* The queue is re-derived from the store, so ``resume`` after any crash is the same code path;
  a lock beside the store (``campaign_lock``) keeps a second coordinator off a running campaign.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field

from agents.measurement import REQUEUE_FLAGS
from agents.protocol import MEASURED_OUTCOMES, agent_runs_threads
from harness.campaign import campaign_profiles
from harness.campaign_lock import campaign_lock
from harness.coordinator_options import CoordinatorOptions
from harness.device_worker import DEVICE_SETUP_KINDS, DEVICE_TOO_HOT, RECOVER_TIMEOUT_S, TOO_SLOW_FOR_POLICY
from harness.errors import ClusterError
from harness.model_exports import ModelExports
from harness.ray_cluster import (ask_status, cores_kept_free, device_actor, ray_session, task_error,
                                 this_node_alive)
from harness.profiles import DeviceProfile
from harness.store import DRIFT_FLAG, Store
from harness.text import count, without_name
from harness.transport.errors import DeviceSetupError
from spaces.cost import dataset_of

log = logging.getLogger(__name__)

CANARY_ARCH = ("nb201", "1462")  # a mid-size NB201 cell (one of HELP's reference archs)
FAILED_OUTCOMES = ("device_lost", "runtime_error", "timeout", "oom", "load_error", "compile_error",
                   "unsupported_op")
EXPORT_FAILED = "ExportError"  # error_kind of an attempt whose model the coordinator could not export
# Attempts that say nothing about the model, so they use up none of its job's attempts: lost with
# the device, or refused because the model file changed on disk after its export (it is exported again).
UNCHARGED_OUTCOMES = ("device_lost",)
HASH_MISMATCH = "HashMismatch"
UNCHARGED_KINDS = (HASH_MISMATCH,)
# Failures no recover command mends: a hot device is left to cool (rule 6), a key needs a person, and a model
# file that fails its hash check again after being exported or pushed again needs its storage looked at.
# A device lock held by another process for longer than LOCK_WAIT_LIMITS limits of the devices sharing it: no power
# cycle of this device releases it either.
LOCK_HELD = "LockHeld"
NOT_RECOVERED_BY_POWER_CYCLE = (DEVICE_TOO_HOT, DeviceSetupError.__name__, HASH_MISMATCH, LOCK_HELD)
# A job waiting for its locks may see each device sharing them measure a few times before it (flock is not fair)
LOCK_WAIT_LIMITS = 3
# A canary flagged unstable, drifting or contended is measured again, as a job is (rule 18), before it sets a
# baseline or gives a verdict: one timed beside a campaign's start (Ray starting, the first exports) set a baseline
# 2.9x too slow, and the next canary then flagged every result in between as drift.
CANARY_RETRIES = 2
# The loop asks a device actor's status without waiting and reads it on a later pass, so one device that does not
# answer holds up no other: an actor whose answer takes longer than STATUS_WAIT_S is taken as lost. A remote device
# with calls in flight is asked every STATUS_EVERY_S, so a lost link it is reconnecting is said while it lasts.
STATUS_WAIT_S = 5.0
STATUS_EVERY_S = 2.0


def steadiest_result(rows) -> int:
    """The result id a job with no clean attempt answers with (rows of ``Store.job_results``): of the attempts
    that carry a latency (flagged ones; a failed attempt carries none), one that nothing else ran beside (a steady
    competitor on the core gives a steady, slower latency: rule 7), then the smallest IQR / median."""
    def badness(row):
        _, _, _, _, iqr_over_median, flags = row
        return "contended" in flags.split(","), iqr_over_median if iqr_over_median is not None else float("inf")
    return min((row for row in rows if row[3] is not None), key=badness)[0]


@dataclass
class _Device:
    profile: DeviceProfile
    queue: deque
    actor: object = None
    in_flight: list = field(default_factory=list)  # (ref, job_id|None, attempt, arch, started, actor)
    last_done: float = 0.0
    state: str = "active"
    error: str | None = None
    failures_in_row: int = 0
    done: int = 0  # in this run; done_before: by earlier runs of the campaign (a resume's table counts both)
    failed: int = 0
    done_before: int = 0
    failed_before: int = 0
    since_canary: int = 0
    canary_due: bool = False
    canary_retries: int = 0  # flagged canaries measured again in a row (CANARY_RETRIES)
    baseline_ms: float | None = None
    last_good_result: int = 0
    paused_until: float = 0.0  # time.monotonic() after a drifting canary
    rebaseline: bool = False  # the next canary sets the baseline
    limit_s: float = 600.0
    limit_from: float = 0.0  # time.monotonic() the running call took its locks, or was last seen waiting for them
    lock_wait_limit_s: float = 1800.0  # a longer wait for the locks is a holder that never lets go (_overdue)
    lock_held: str | None = None  # the running call was given up for a lock never released: why
    durations_s: deque = field(default_factory=lambda: deque(maxlen=20))  # the ETA's window, not every job
    recovery: object = None  # the actor's pending recover() call
    recovery_deadline: float = 0.0
    recover_tried: bool = False  # in this run of failures (a success resets it)
    probing: bool = False  # a canary asks whether the device or its models fail (see _probe_or_give_up)
    fine_since_probe: bool = True  # a model measured fine since the last probe, so another may be worth it
    new_settings_needed: bool = False  # quarantined for its own settings: it can only measure in a new campaign
    status_ref: object = None  # its actor's status, asked (ask_status) and not read yet
    status_asked: float = 0.0  # time.monotonic() it was asked
    status: dict | None = None  # the last answer; None: the actor did not answer within STATUS_WAIT_S
    status_of: float = -1.0  # when the question that answer answers was asked
    reconnecting_since: float | None = None  # time.monotonic() its lost link was said, until it is said back


def campaign_ray(profiles, options: CoordinatorOptions):
    """The Ray session of a campaign of ``profiles``: with a local Ray, this process and Ray (its exports) keep
    off the cores the local devices measure on, as far as a core is left for them (:func:`cores_kept_free`)."""
    local = [p.runtime.cores for p in profiles if p.host.transport == "local"]
    avoid = cores_kept_free(local, range(os.cpu_count() or 1)) if options.pin_service_cores else set()
    return ray_session(address=options.address, num_cpus=options.num_cpus, hosts={p.host.resource for p in profiles},
                       avoid_cores=avoid, temp_dir=options.ray_temp_dir)


class Coordinator:
    """Run (or resume) one campaign of ``store`` to completion.

    Parameters
    ----------
    store : Store
    campaign_id : int
    options : CoordinatorOptions
    on_progress : callable, optional
        Called with :meth:`snapshot` about once per ``wait_timeout_s``.
    """

    def __init__(self, store: Store, campaign_id: int, options: CoordinatorOptions | None = None,
                 *, on_progress=None):
        self.store = store
        self.campaign_id = campaign_id
        self.options = options or CoordinatorOptions()
        self.on_progress = on_progress
        self.space, self.name = store.db.execute("SELECT space, name FROM campaigns WHERE id = ?",
                                                 (campaign_id,)).fetchone()
        self.devices: dict[str, _Device] = {}
        self.exports = ModelExports(self.space, self.options, store, self.devices, canary=CANARY_ARCH)
        self.measure_s = 0.0  # inside the agents (load, warmup, windows; not the cooldown before each model)
        self.worker_s = 0.0  # inside the device actors' measure calls
        self.lock_wait_s = 0.0  # of which waiting for a device sharing the core / thermal domain
        self.n_measurements = 0
        # durations on the monotonic clock: the wall clock of a month-long campaign may be stepped (NTP)
        self.started = time.monotonic()
        self.first_dispatch: float | None = None  # of the first and last measurement
        self.last_result: float | None = None

    # -- public ----------------------------------------------------------------------------
    def run(self) -> dict:
        """Measure every queued job; returns a summary (counts, wall and measurement time).

        Raises :class:`~harness.errors.CampaignError` while another process runs the campaign."""
        with campaign_lock(self.store.path, self.campaign_id, self.name, self.options.resume_flags):
            return self._run_locked()

    def _run_locked(self) -> dict:
        import ray

        profiles = campaign_profiles(self.store, self.campaign_id)
        self.options.check_artifact_folder(profiles)  # before any write
        self.store.recover_interrupted(self.campaign_id)  # only a dead coordinator leaves jobs running
        earlier = self.store.status(self.campaign_id).set_index("device")
        for profile in profiles:
            self.store.requeue_device(self.campaign_id, profile.name)  # resume clears quarantine
            self.devices[profile.name] = dev = self._device_from_store(profile, earlier)
            self.exports.count_users(dev)
        for dev in self.devices.values():
            keys = set(dev.profile.lock_keys)
            dev.lock_wait_limit_s = LOCK_WAIT_LIMITS * max(d.limit_s for d in self.devices.values()
                                                           if keys & set(d.profile.lock_keys))
        if not any(d.queue or d.since_canary for d in self.devices.values()):
            return self.summary()  # nothing left: measure nothing, start nothing
        self.exports.start_quota()
        try:
            with self._ray():
                self._start_actors()
                self._loop(ray)
                for dev in self.devices.values():
                    with contextlib.suppress(Exception):
                        ray.kill(dev.actor)
        except BaseException as stopped_by:  # Ctrl-C, a full disk, a bug: the jobs in flight go back to the queue now
            self._put_back_in_flight(stopped_by)
            raise
        return self.summary()

    def _device_from_store(self, profile: DeviceProfile, earlier) -> _Device:
        """A device as the store leaves it: its queued jobs, its counts from earlier runs (``earlier``: the store's
        status by device) and its last canary, whose baseline the session's first canary is checked against."""
        queue = deque(self.store.queued_jobs(self.campaign_id, profile.name))
        last = self.store.canary_state(self.campaign_id, profile.name)
        fresh = last is not None and last.ok and time.time() - last.measured_at < self.options.canary_fresh_s
        dev = _Device(profile, queue, canary_due=self.options.canary_every > 0 and bool(queue) and not fresh,
                      limit_s=self._job_limit_s(profile))
        if profile.name in earlier.index:
            dev.done_before, dev.failed_before = (int(earlier.at[profile.name, k]) for k in ("done", "failed"))
        if last is not None:  # the session's first canary is checked against it, not trusted
            dev.baseline_ms, dev.last_good_result = last.baseline_ms, last.last_result_id
            if self.options.canary_every > 0:
                # jobs no canary has checked yet: a session stopped before its end canary left them so, and with no
                # job left this one runs that canary (_dispatch), which would otherwise never come
                dev.since_canary = self.store.jobs_since_canary(self.campaign_id, profile.name, last.last_result_id)
        return dev

    def _put_back_in_flight(self, stopped_by: BaseException) -> None:
        """The run stopped (``stopped_by``): its jobs in flight go back to the queue, and a device whose recover
        command was running is quarantined rather than left "recovering". A failure here only warns (the next
        resume does the same), so the error that stopped the run is the one raised; the store failing again with
        that same error (a full disk) is not said twice."""
        try:
            if self.store.db.in_transaction:  # interrupted between BEGIN and the with block
                self.store.db.rollback()
            self.store.recover_interrupted(self.campaign_id)
            for dev in self.devices.values():
                if dev.state == "recovering":  # not left looking like work in progress
                    self._quarantine(dev, f"{dev.error}; the campaign stopped while its recover command ran")
        except Exception as exc:
            said = str(exc) == str(stopped_by)  # by the error raised
            log.log(logging.INFO if said else logging.WARNING,
                    "could not put the jobs in flight back in the queue (%s); `resume` will", exc)

    def _job_limit_s(self, profile: DeviceProfile) -> float:
        """How long a measurement may take before the coordinator gives up on the actor."""
        from agents.timing import TimingPolicy
        from harness.transport.base import MEASURE_MARGIN_S  # the session's own limit

        policy = TimingPolicy.from_profile(profile.measurement, profile.agent_policy())
        return policy.longest_s + MEASURE_MARGIN_S + self.options.job_margin_s

    def summary(self) -> dict:
        now = time.monotonic()
        return {"campaign_id": self.campaign_id, "wall_s": now - self.started,
                "dispatch_wall_s": (self.last_result - self.first_dispatch) if self.first_dispatch else 0.0,
                "measure_s": self.measure_s, "worker_s": self.worker_s,
                "lock_wait_s": self.lock_wait_s, "n_measurements": self.n_measurements,
                "devices": self.snapshot()}

    def snapshot(self) -> dict:
        """Per device: done, failed (in this run), done_before, failed_before (earlier runs), running, queued,
        state, error, new_settings_needed (its error asks for other settings, which this campaign cannot take),
        eta_s."""
        out = {}
        for name, dev in self.devices.items():
            mean_s = sum(dev.durations_s) / len(dev.durations_s) if dev.durations_s else None
            # The device measures in_flight[0]; jobs sent after it wait in its actor's queue.
            queued = len(dev.queue) + sum(1 for entry in dev.in_flight[1:] if entry[1] is not None)
            out[name] = {"done": dev.done, "failed": dev.failed, "done_before": dev.done_before,
                         "failed_before": dev.failed_before, "queued": queued,
                         "running": min(1, len(dev.in_flight)), "state": dev.state, "error": dev.error,
                         "new_settings_needed": dev.new_settings_needed,
                         "eta_s": None if mean_s is None or dev.state != "active" else mean_s * queued}
        return out

    # -- Ray set-up ------------------------------------------------------------------------
    def _ray(self):
        return campaign_ray([d.profile for d in self.devices.values()], self.options)

    def _start_actors(self) -> None:
        import ray

        pending = {}
        for name, dev in self.devices.items():
            dev.actor = device_actor(dev.profile)
            pending[dev.actor.hello.remote()] = name
        deadline = time.monotonic() + self.options.hello_timeout_s
        while pending and time.monotonic() < deadline:
            # the deadline may pass between the loop's check and here: Ray refuses a negative timeout
            left_s = max(0.0, min(5.0, deadline - time.monotonic()))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left_s)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    hello = ray.get(ref, timeout=10)
                    self.store.add_fingerprint(hello["fingerprint_id"], hello["fingerprint"])
                    self._warn_if_stale_agent(self.devices[name].profile, hello.get("agent_bundle"))
                    self._check_threads_fit(self.devices[name], hello.get("usable_cores") or ())
                except Exception as exc:  # agent would not start: the device cannot work
                    cause = task_error(exc)
                    self._give_up(self.devices[name], f"agent did not start: {cause}",
                                  recover=type(cause).__name__ not in NOT_RECOVERED_BY_POWER_CYCLE)
        # the actors answer status at once, even while they keep reconnecting: all asked at once, waited for together
        asked = {name: ask_status(self.devices[name].actor) for name in pending.values()}
        answered = set(ray.wait(list(asked.values()), num_returns=len(asked), timeout=STATUS_WAIT_S,
                                fetch_local=False)[0]) if asked else set()
        for name, ref in asked.items():
            dev = self.devices[name]
            try:
                status = ray.get(ref, timeout=STATUS_WAIT_S if ref in answered else 0)
            except Exception:  # no actor: no node offers its host
                status = None
            self._give_up(dev, f"no answer from device {name} within {self.options.hello_timeout_s:g} s; "
                               f"{_why_no_hello(dev, status)}", recover=status is not None)

    def _check_threads_fit(self, dev: _Device, usable_cores) -> None:
        """A profile that pins no cores runs its threads on every core the agent may use, a count known
        only on the device: more threads than that would oversubscribe them at every job, so the device
        is stopped here, once, before any job is sent (the agent would refuse each measurement too). A command
        tool's threads are its own, maybe another device's (agents.server.check_threads)."""
        threads = dev.profile.runtime.threads
        if not agent_runs_threads(dev.profile.runtime.kind):
            return
        if dev.profile.runtime.cores is None and usable_cores and threads > len(usable_cores):
            dev.new_settings_needed = True
            self._give_up(dev, f"{dev.profile.source or 'its profile'}: key 'runtime.threads' = {threads} asks more "
                               f"threads than the {len(usable_cores)} core(s) usable on device {dev.profile.name} "
                               f"{sorted(usable_cores)}; lower it (or pin runtime.cores) and run the same command "
                               "again, with another --name if it gave one: with other settings it plans a new campaign "
                               "of the same architectures (a resume, or the same --name, keeps the settings this one "
                               "was planned with)", recover=False)

    @staticmethod
    def _warn_if_stale_agent(profile: DeviceProfile, deployed: str | None) -> None:
        """An ssh device runs the agent last deployed there, which the code here may have outgrown:
        its measurements would run the older agent under this code's version, unnoticed. Only a warning:
        the campaign goes on (a month-long one should not stop for it), and deploying under a running
        campaign would change the measuring code halfway through without a person choosing to."""
        if deployed is None:
            return
        from harness.remote.bundle import current_bundle_name
        from harness.remote.connect import deploy_command
        current = current_bundle_name()
        if deployed != current:
            log.warning("%s: its agent %s is not this hwl's (%s), so it measures with the older agent code; "
                        "run `%s` to update it", profile.name, deployed, current, deploy_command(profile))

    # -- main loop -------------------------------------------------------------------------
    def _loop(self, ray) -> None:
        while True:
            self.store.check_still_there()  # its results would be lost with a removed store (os.stat: cheap)
            for dev in self.devices.values():
                self.exports.schedule(dev)
            for dev in self.devices.values():
                # One job waits in the actor's queue behind the running one, so the device never
                # idles for a coordinator round trip (the actor still measures one at a time).
                while dev.state == "active" and len(dev.in_flight) < self.options.pipeline_depth:
                    if not self._dispatch(dev):
                        break
            refs = [entry[0] for d in self.devices.values() for entry in d.in_flight]
            refs += self.exports.pending_refs()
            refs += [d.recovery for d in self.devices.values() if d.recovery is not None]
            asked = [d.status_ref for d in self.devices.values() if d.status_ref is not None]
            if not refs:
                resting = [d.paused_until for d in self.devices.values() if d.state == "active" and d.queue]
                if not resting:
                    break
                time.sleep(max(0.05, min(resting) - time.monotonic()))
                continue
            # Block until one ref is ready (or the timeout), then take every other ready one.
            ready, rest = ray.wait(refs + asked, num_returns=1, timeout=self.options.wait_timeout_s,
                                   fetch_local=False)
            if ready and rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)[0]
            ready = set(ready)
            self.exports.take_ready(ray, ready)
            for dev in self.devices.values():
                for entry in list(dev.in_flight):
                    if entry[0] in ready or self._overdue(dev, entry):
                        self._measure_done(ray, dev, entry, answered=entry[0] in ready)
                if dev.recovery is not None and (dev.recovery in ready or time.monotonic() > dev.recovery_deadline):
                    self._recovery_done(ray, dev, answered=dev.recovery in ready)
                self._read_status(ray, dev, ready)  # after its records: a lost call is counted before it is said
                if dev.in_flight and dev.profile.host.transport != "local" \
                        and time.monotonic() - dev.status_asked >= STATUS_EVERY_S:
                    self._ask_status(dev)  # a lost link it is reconnecting is said (_say_reconnecting)
            if self.on_progress is not None:
                self.on_progress(self.snapshot())

    def _dispatch(self, dev: _Device) -> bool:
        """Send the device's next measurement when its model is ready; False when none was sent."""
        if time.monotonic() < dev.paused_until or any(e[1] is None for e in dev.in_flight):
            return False  # resting, or a canary runs: nothing queues behind it, its verdict decides
        canary = dev.canary_due or (not dev.queue and dev.since_canary > 0 and self.options.canary_every > 0)
        if not canary and not dev.queue:
            return False
        space, arch = CANARY_ARCH if canary else (self.space, dev.queue[0][1])
        model = self.exports.ready_model(dev, space, arch)
        if model is None:
            return False  # export still running, or exported again as its file is not here
        key, art = model
        job = {"space": space, "arch": arch, "dataset": dataset_of(space, key[2] if key else None).name,
               "model": art.get("path", ""), "sha256": art.get("sha256", ""),
               "artifact_sha256": art.get("artifact_sha256")}
        if canary:
            job.update(job_id="canary", attempt=dev.done + dev.failed)
            dev.canary_due = False
            job_id, attempt = None, 0
        else:
            job_id, arch, _ = dev.queue.popleft()
            attempt = self.store.start_attempt(job_id)  # committed before the actor sees it
            job.update(job_id=job_id, attempt=attempt, labels={"campaign_id": self.campaign_id})
        if "error" in art:  # the model cannot be exported: a failed attempt, no device time
            self.exports.forget(key)  # a retry exports it afresh
            record = {"outcome": "load_error", "error_kind": EXPORT_FAILED, "error_message": art["error"]}
            if job_id is None:
                self._canary_not_exported(dev, art["error"])
            else:
                self._finish(dev, job_id, attempt, arch, record)
            return True
        if self.first_dispatch is None:
            self.first_dispatch = time.monotonic()
        ref = dev.actor.measure.remote(job)
        dev.in_flight.append((ref, job_id, attempt, arch, time.monotonic(), dev.actor))
        return True

    def _overdue(self, dev: _Device, entry: tuple) -> bool:
        # a queued entry waits for the one before it: allow a full limit per place in the queue, counted from when
        # it last moved up (the entry before it ended), not from its sending: a job sent behind a slow one had only
        # what that one left of the limit once it ran, and was given up as lost part way through
        place = dev.in_flight.index(entry) + 1
        due = max(entry[4], dev.last_done, dev.limit_from) + dev.limit_s * place
        if time.monotonic() <= due:
            return False
        if place > 1:
            return True
        if dev.status_of < due:  # its actor is asked how the call is doing, and answers by a later pass
            self._ask_status(dev)
            return False
        return not self._waited_for_locks(dev, entry)

    def _waited_for_locks(self, dev: _Device, entry: tuple) -> bool:
        """Whether the device's running call (``entry``), past its limit, is within it once the time it waited for
        its locks is left out: another device on its cores or thermal domain measuring a slow model says nothing
        against this one, yet its job was given up as lost for it (its actor killed, its recover command run). The
        limit runs from when the call took them (``dev.limit_from``), as its actor's status, asked after the limit
        passed, says. A wait of ``dev.lock_wait_limit_s`` is a holder that never lets go: False, and
        ``dev.lock_held`` names the locks."""
        if dev.status is None:  # the actor did not answer: lost, as the limit says
            return False
        running = dev.status.get("running") or {}
        if running.get("job_id") != ("canary" if entry[1] is None else entry[1]):
            return False
        now = time.monotonic()
        if running.get("locked_s") is not None:
            dev.limit_from = now - running["locked_s"]
            return running["locked_s"] <= dev.limit_s
        if running.get("lock_wait_s", 0.0) <= dev.lock_wait_limit_s:
            dev.limit_from = now  # asked again one limit on
            return True
        dev.lock_held = (f"waited {running['lock_wait_s']:.0f} s for its device lock(s) "
                         f"{', '.join(dev.profile.lock_keys)}, which another process kept all that time (an hwl "
                         f"measurement that hangs, outside this campaign?): find the process on host "
                         f"{dev.profile.host.name} holding its file in HWL_LOCK_DIR, or else in the hwl-locks folder "
                         "of its temp dir (`fuser`), then resume")
        return False

    def _ask_status(self, dev: _Device) -> None:
        """Ask the device's actor for its status, unless a question is out already (:meth:`_read_status`)."""
        if dev.status_ref is None:
            dev.status_ref, dev.status_asked = ask_status(dev.actor), time.monotonic()

    def _read_status(self, ray, dev: _Device, ready: set) -> None:
        """Take the actor's answer once it is in ``ready``; no answer within STATUS_WAIT_S is a lost actor (None).
        Never waits: a device whose actor hangs (its node lost) held up every other device's results and jobs."""
        if dev.status_ref is None:
            return
        if dev.status_ref in ready:
            try:
                status = ray.get(dev.status_ref, timeout=STATUS_WAIT_S)  # answered: here at once
            except Exception:  # the actor died
                status = None
        elif time.monotonic() - dev.status_asked < STATUS_WAIT_S:
            return
        else:
            status = None
        dev.status_ref, dev.status, dev.status_of = None, status, dev.status_asked
        if status is not None and dev.state == "active":
            self._say_reconnecting(dev, status)

    def _say_reconnecting(self, dev: _Device, status: dict) -> None:
        """Say once that a remote device lost its link and is being reconnected (until when, how many attempts
        before it is given up), and once that it is back: a device reconnecting for minutes said nothing at all,
        in a campaign as in an onboarding. Giving up is said by its quarantine (or recover command)."""
        if status.get("reconnect_error") and dev.reconnecting_since is None:
            dev.reconnecting_since = time.monotonic()
            timeout_s = dev.profile.host.reconnect_timeout_s
            attempts = max(1, self.options.quarantine_after - dev.failures_in_row)
            until = time.strftime("%H:%M:%S", time.localtime(time.time() + attempts * timeout_s))
            then = "its recover command runs" if dev.profile.host.recover and not dev.recover_tried \
                else "it is quarantined"
            log.warning("device %s: lost the connection; reconnecting for up to %g s at each of its next %s (until "
                        "about %s), then %s; last try: %s", dev.profile.name, timeout_s,
                        count(attempts, "attempt", "attempts"), until, then,
                        without_name(dev.profile.name, status["reconnect_error"]))
        elif not status.get("reconnect_error") and status.get("agent_starts"):
            self._say_back(dev)

    def _say_back(self, dev: _Device) -> None:
        if dev.reconnecting_since is not None:
            log.warning("device %s: reconnected after %.0f s; measuring on", dev.profile.name,
                        time.monotonic() - dev.reconnecting_since)
            dev.reconnecting_since = None

    def _measure_done(self, ray, dev: _Device, entry: tuple, *, answered: bool = True) -> None:
        """Take a call's record: ``answered``, or given up as overdue (then read without waiting)."""
        ref, job_id, attempt, arch, started, actor = entry
        dev.in_flight.remove(entry)
        counts = True  # toward the device's run of failures
        try:
            record = ray.get(ref, timeout=10 if answered else 0)
        except Exception as exc:  # actor died, node lost, or overdue: the attempt is lost
            record = {"outcome": "device_lost", "error_kind": type(exc).__name__, "error_message": str(exc)}
            if isinstance(exc, ray.exceptions.RayActorError) and not this_node_alive():
                raise ClusterError(f"Ray's node on this machine died under device {dev.profile.name} "
                                   f"({exc.__class__.__name__}); nothing measured is lost: run the same "
                                   "command again") from exc
            if actor is dev.actor:  # replace the actor once, not once per call it had queued
                with contextlib.suppress(Exception):
                    ray.kill(dev.actor)
                dev.actor = device_actor(dev.profile)
                dev.status_ref, dev.status, dev.status_of = None, None, -1.0  # the old actor's answers are void
            else:  # queued behind a call lost with the same actor: one loss, counted once (by that call)
                counts = False
            if dev.lock_held:
                record.update(error_kind=LOCK_HELD, error_message=dev.lock_held)
        dev.lock_held = None
        if record.get("outcome") != "device_lost":  # it measured (or its model failed): its link is back
            self._say_back(dev)
        self.measure_s += float(record.get("measure_s") or 0.0)
        self.worker_s += float(record.get("worker_s") or 0.0)
        self.lock_wait_s += float(record.get("lock_wait_s") or 0.0)
        self.n_measurements += 1
        now = self.last_result = time.monotonic()
        dev.durations_s.append(now - max(started, dev.last_done))
        dev.last_done = now
        if record.get("fingerprint_id") and record.get("fingerprint"):
            self.store.add_fingerprint(record["fingerprint_id"], record.pop("fingerprint"))
        if record.get("error_kind") == HASH_MISMATCH:
            self.exports.changed_on_disk(dev, *(CANARY_ARCH if job_id is None else (self.space, arch)))
        if job_id is None:
            self._canary_done(dev, record, counts=counts)
        else:
            self._finish(dev, job_id, attempt, arch, record, counts=counts)

    def _finish(self, dev: _Device, job_id: int, attempt: int, arch: str, record: dict, *,
                counts: bool = True) -> None:
        """Store an attempt's record and decide the job's next state. ``counts``: False for a call that failed
        only because the actor died under the call before it, which already counted that loss."""
        outcome = record.get("outcome")
        flags = set(record.get("flags") or ())
        unstable = outcome == "unstable" or (outcome == "ok" and bool(flags & set(REQUEUE_FLAGS)))
        clean = outcome == "ok" and not unstable
        if clean:
            state = "done"
        elif self._may_retry(job_id, attempt, record):
            state = "queued"
        else:  # attempts used up: a job measured at any of them (all flagged) answers with it, whatever came last
            state = "done" if unstable or self._measured_before(job_id) else "failed"
        # one write: a coordinator killed between storing the attempt (the job's answer so far) and choosing the
        # steadiest would leave the last attempt as the answer of a job whose every attempt was flagged
        with self.store.transaction():
            result_id = self.store.finish_attempt(job_id, attempt, record=record, job_state=state)
            if state == "done" and not clean:  # no clean attempt: keep them all, answer with the steadiest
                self.store.accept_result(job_id, steadiest_result(self.store.job_results(job_id)))
        if state == "queued" and unstable:
            dev.queue.append((job_id, arch, attempt))  # measured again later
        elif state == "queued":
            # a failure is retried soon, but after the device's next job: a model of its own that fails (two
            # back to back, say) then has a good one measured between its attempts (see _failed_on_the_model)
            dev.queue.insert(min(1, len(dev.queue)), (job_id, arch, attempt))
        elif state == "done":
            dev.done += 1
            dev.since_canary += 1
        else:
            dev.failed += 1
        if state != "queued":
            self.exports.release(dev, arch)
        self._judge_device(dev, job_id, arch, record, counts=counts)
        if self.options.canary_every and dev.since_canary >= self.options.canary_every:
            dev.canary_due = True
        log.debug("job %s attempt %d on %s: %s -> %s (result %s)", job_id, attempt, dev.profile.name,
                  outcome, state, result_id)

    def _measured_before(self, job_id: int) -> bool:
        """Whether an earlier attempt of the job measured a latency (flagged, or it would be done)."""
        return any(label_ms is not None for _, _, _, label_ms, _, _ in self.store.job_results(job_id))

    def _judge_device(self, dev: _Device, job_id: int, arch: str, record: dict, *, counts: bool) -> None:
        """What a job's attempt says about its device: a failure adds to the device's run of failures (which
        ends in a probe, its recover command or quarantine), a measurement ends the run."""
        outcome = record.get("outcome")
        if record.get("error_kind") == EXPORT_FAILED or not counts:
            pass  # the coordinator's export failed, or the loss was counted already: nothing more about the device
        elif self._unfit(dev, record):  # the job is queued again, uncharged
            pass
        elif record.get("error_kind") == TOO_SLOW_FOR_POLICY:  # it ran the model fine, only too slowly
            log.warning("%s: %s %s failed for good, too slow for the profile's timing policy: %s", dev.profile.name,
                        self.space, arch, record.get("error_message"))
        elif dev.state != "active":
            # sent ahead of the verdict (quarantine, recover command): the run it ended stays as counted, neither
            # longer for a failure nor reset by a success (status would show a quarantined device 0 failures in a row)
            pass
        elif outcome in FAILED_OUTCOMES and self._failed_on_the_model(job_id, record):
            pass  # the model's failure, not the device's: it neither adds to the run of failures nor ends it
        elif outcome in FAILED_OUTCOMES:
            self._failures_in_row(dev, dev.failures_in_row + 1)
            if dev.failures_in_row >= self.options.quarantine_after and not dev.probing:
                self._probe_or_give_up(dev, record)
        else:
            self._failures_in_row(dev, 0)
            dev.recover_tried, dev.fine_since_probe = False, True

    def _may_retry(self, job_id: int, attempt: int, record: dict) -> bool:
        """Whether a job gets another attempt: until ``max_attempts`` of its attempts said something
        about the model. Attempts lost with the device (``device_lost``) or with a coordinator that
        stopped (no result), or refused for a model file changed after its export (``HashMismatch``),
        do not count, or one outage would fail the job that was in flight; a job in flight at every
        loss is still given up after 3 x ``max_attempts`` attempts in all. Nor is a job given up while its
        device fails on every model (``_blames_the_model``)."""
        if record.get("error_kind") == TOO_SLOW_FOR_POLICY:
            return False  # the same policy on the same device ends the same way: only a new profile helps
        if attempt < self.options.max_attempts:
            return True
        if attempt >= 3 * self.options.max_attempts:
            return False
        earlier = self.store.charged_attempts(job_id, free_outcomes=UNCHARGED_OUTCOMES, free_kinds=UNCHARGED_KINDS)
        charged = record.get("outcome") not in UNCHARGED_OUTCOMES and record.get("error_kind") not in UNCHARGED_KINDS
        if earlier + charged < self.options.max_attempts:
            return True
        return not self._blames_the_model(job_id, record)

    def _blames_the_model(self, job_id: int, record: dict) -> bool:
        """Whether a job whose attempts are used up fails for good on ``record``. A device that fails on
        every model (a board not answering, whose vendor tool exits 1 each time) failed each job in
        flight: so while other jobs failed on the device, and none measured fine there, since this job's
        first failure, the failure is the device's and the job waits in the queue (up to the 3 x
        max_attempts cap) while the device's run of failures leads to its recover command and quarantine.
        A job failing alone (the last one left, say) is still the model's, as nothing tells them apart."""
        if record.get("outcome") not in FAILED_OUTCOMES or record.get("error_kind") == EXPORT_FAILED:
            return True  # an unstable record's retries are bounded as before; an export is the coordinator's
        others_fine, others_failed = self.store.others_since_first_failure(
            job_id, free_outcomes=UNCHARGED_OUTCOMES, free_kinds=(*UNCHARGED_KINDS, EXPORT_FAILED))
        return others_fine or not others_failed

    def _failed_on_the_model(self, job_id: int, record: dict) -> bool:
        """Whether a failed attempt is its model's: the job failed before on this device, and the device has
        measured another model fine since. Such attempts say nothing about the device, so two bad architectures
        back to back no longer make the 3 failures in a row that quarantine a healthy device (rule 23 counts
        the device's failures). An attempt lost with the device, or refused for its file's hash, is never the
        model's; a job failing with no good model measured between its attempts still counts."""
        if record.get("outcome") in UNCHARGED_OUTCOMES or record.get("error_kind") in (*UNCHARGED_KINDS,
                                                                                       EXPORT_FAILED):
            return False
        others_fine, _ = self.store.others_since_first_failure(
            job_id, free_outcomes=UNCHARGED_OUTCOMES, free_kinds=(*UNCHARGED_KINDS, EXPORT_FAILED))
        return others_fine

    def _probe_or_give_up(self, dev: _Device, record: dict) -> None:
        """The device's run of failures reached ``quarantine_after``. Three models in a row that the device
        cannot run (an FBNet op its NPU lacks: common when many architectures hold it) look like a failing
        device, so before giving up its drift canary is measured: a device that runs it fine is healthy and
        the failures were their models' (each job still counts its own attempts); a failed canary gives up
        (_canary_done). One probe per run of failures, and another only once a model measured fine since the
        last, so a device that runs its canary but no architecture is still quarantined."""
        outcome, kind = record.get("outcome"), record.get("error_kind")
        if (self.options.canary_every > 0 and dev.fine_since_probe and outcome not in UNCHARGED_OUTCOMES
                and kind not in (*UNCHARGED_KINDS, *NOT_RECOVERED_BY_POWER_CYCLE)):
            dev.probing, dev.fine_since_probe, dev.canary_due = True, False, True
            log.warning("%s: %d failed attempts in a row (last: %s); measuring its drift canary to tell a failing "
                        "device from models it cannot run", dev.profile.name, dev.failures_in_row, outcome)
            return
        why = without_name(dev.profile.name, record.get("error_message") or "")
        self._give_up(dev, f"{dev.failures_in_row} failed attempts in a row; last: {outcome}: {why}".strip()
                      + _hint(dev, record),
                      recover=kind not in NOT_RECOVERED_BY_POWER_CYCLE)

    def _failures_in_row(self, dev: _Device, failures: int) -> None:
        """Set the device's run of failed attempts, in the store too when it changes (a healthy
        device writes nothing more), so `hwl campaign status` shows it before any quarantine."""
        if failures != dev.failures_in_row:
            dev.failures_in_row = failures
            self.store.set_failures_in_row(self.campaign_id, dev.profile.name, failures)

    def _unfit(self, dev: _Device, record: dict) -> bool:
        """Quarantine ``dev`` at once if ``record`` says it cannot measure any model now."""
        kind, why = record.get("error_kind"), record.get("error_message")
        if kind in DEVICE_SETUP_KINDS:
            # a resume keeps the settings the campaign was planned with: a fixed profile needs a new run
            self._give_up(dev, f"it cannot run its runtime as the profile asks: {why}; install the runtime on "
                               "the device and resume, or fix the profile and run the campaign again",
                          recover=False)
        elif kind == DEVICE_TOO_HOT:  # rule 6: the agent already waited temp_give_up_s for it to cool
            self._give_up(dev, f"it stayed too hot to measure: {why}; check its cooling, then resume", recover=False)
        elif kind == LOCK_HELD:  # it waited LOCK_WAIT_LIMITS limits: not quarantine_after such waits in a row
            self._give_up(dev, why, recover=False)
        else:
            return False
        return True

    def _canary_done(self, dev: _Device, record: dict, *, counts: bool = True) -> None:
        label = (record.get("stats") or {}).get("label_ms") if record.get("outcome") in MEASURED_OUTCOMES else None
        probed, dev.probing = dev.probing, False
        if probed and label is not None and dev.state == "active":
            log.warning("%s: measured its canary fine, so its %d failed attempts in a row were their models' "
                        "(each job keeps its own count); measuring on", dev.profile.name, dev.failures_in_row)
            self._failures_in_row(dev, 0)
            dev.recover_tried = False
        if label is None:
            dev.canary_retries = 0  # a failed canary ends the row of flagged ones: the next gets all its retries
        elif self._canary_again(dev, record):
            return
        last_id = self.store.db.execute("SELECT max(id) FROM results").fetchone()[0] or 0
        after_jobs = dev.done + dev.failed
        if label is None:
            log.warning("device %s: drift canary failed: %s: %s", dev.profile.name, record.get("outcome"),
                        record.get("error_message") or "no message")  # the canaries table keeps no message
            if dev.state == "active" and counts:  # as in _finish: not one more after the verdict, nor twice a loss
                self._failures_in_row(dev, dev.failures_in_row + 1)
            dev.rebaseline = False  # the next canary, 50 jobs on, is checked against the stand-in
            self.store.add_canary(self.campaign_id, dev.profile.name, after_jobs=after_jobs, median_ms=None,
                                  baseline_ms=dev.baseline_ms, ok=False, last_result_id=last_id)
            if not self._unfit(dev, record) and dev.failures_in_row >= self.options.quarantine_after:
                what = f"{dev.failures_in_row - 1} failed attempts in a row, then its " if probed else ""
                why = without_name(dev.profile.name, str(record.get("error_message")))
                self._give_up(dev, f"{what}drift canary failed: {why}" + _hint(dev, record),
                              recover=record.get("error_kind") not in NOT_RECOVERED_BY_POWER_CYCLE)
            return
        dev.since_canary = 0
        if dev.baseline_ms is None or dev.rebaseline:
            dev.baseline_ms, dev.rebaseline, ok = label, False, True
        else:
            ok = abs(label / dev.baseline_ms - 1.0) <= self.options.canary_tolerance
        # one write: a verdict stored without its flags (the coordinator killed between the two) reads as a canary
        # that checked the results since the last good one, which then would stay unflagged
        with self.store.transaction():
            self.store.add_canary(self.campaign_id, dev.profile.name, after_jobs=after_jobs, median_ms=label,
                                  baseline_ms=dev.baseline_ms, ok=ok, last_result_id=last_id)
            if not ok:
                results, jobs = self.store.flag_results_since(self.campaign_id, dev.profile.name,
                                                              dev.last_good_result, DRIFT_FLAG)
        if ok:
            dev.last_good_result = last_id
        else:
            rest = self.options.drift_pause_s if dev.queue else 0.0
            log.warning("%s: canary %.4f ms is %+.1f %% off its baseline %.4f ms; %s, %s",
                        dev.profile.name, label, 100 * (label / dev.baseline_ms - 1), dev.baseline_ms,
                        flagged_text(jobs, results), f"pausing {rest:g} s to re-baseline" if rest else "re-baselined")
            dev.baseline_ms, dev.last_good_result = label, last_id
            if rest:  # the canary after the pause sets the baseline (this one stands in until then)
                dev.paused_until, dev.canary_due, dev.rebaseline = time.monotonic() + rest, True, True

    def _canary_not_exported(self, dev: _Device, error: str) -> None:
        """The drift canary's model could not be exported: not the device's fault (as for a job), yet it counted as
        a failed canary, toward quarantine and the recover command (a power cycle). Now it is said and skipped: the
        next canary comes ``canary_every`` jobs on, and a session's end canary, due while ``since_canary`` > 0,
        is not exported again and again. A probe it was to be leaves the run of failures to give up as it is."""
        dev.since_canary = dev.canary_retries = 0
        probed, dev.probing = dev.probing, False
        log.warning("%s: its drift canary was not measured, as its model could not be exported (%s); that counts "
                    "nothing against the device, and the results since its last canary stay unchecked",
                    dev.profile.name, error)
        if probed:
            self._give_up(dev, f"{dev.failures_in_row} failed attempts in a row; its drift canary, which tells a "
                               f"failing device from models it cannot run, could not be exported: {error}")

    def _canary_again(self, dev: _Device, record: dict) -> bool:
        """Whether a measured canary is to be measured again rather than counted: flagged unstable, drifting or
        contended, at most CANARY_RETRIES times in a row; after that it counts as it is."""
        flags = [f for f in record.get("flags") or () if f in REQUEUE_FLAGS]
        if not flags or dev.canary_retries >= CANARY_RETRIES:
            dev.canary_retries = 0
            return False
        dev.canary_retries += 1
        dev.canary_due = True
        log.info("%s: its drift canary was flagged %s; measuring it again before it counts", dev.profile.name,
                 ", ".join(flags))
        return True

    def _give_up(self, dev: _Device, error: str, *, recover: bool = True) -> None:
        """The device fails after reconnects and agent restarts: run its profile's recover command
        (rule 23: a reboot or power cycle) once per run of failures, else quarantine it."""
        if dev.state != "active":  # a call still queued in the actor failed too
            return
        if not (recover and dev.profile.host.recover) or dev.recover_tried:
            self._quarantine(dev, error + (" (after its recover command)" if dev.recover_tried else ""))
            return
        dev.state, dev.error, dev.recover_tried = "recovering", error, True
        self.store.set_device_state(self.campaign_id, dev.profile.name, "recovering", error=error,
                                    consecutive_failures=dev.failures_in_row)
        log.warning("device %s: %s; running its recover command", dev.profile.name, error)
        # queued behind any call still in the actor; the command's and the reconnect's own limits bound it
        dev.recovery_deadline = (time.monotonic() + dev.limit_s * (1 + len(dev.in_flight)) + RECOVER_TIMEOUT_S
                                 + dev.profile.host.reconnect_timeout_s + self.options.hello_timeout_s)
        dev.recovery = dev.actor.recover.remote()

    def _recovery_done(self, ray, dev: _Device, *, answered: bool = True) -> None:
        ref, dev.recovery = dev.recovery, None
        dev.reconnecting_since = None  # its recover command reconnects it, and says so
        try:
            hello = ray.get(ref, timeout=10 if answered else 0)
        except Exception as exc:  # the command failed, the device did not come back, or the actor hangs
            if isinstance(exc, ray.exceptions.GetTimeoutError):
                with contextlib.suppress(Exception):
                    ray.kill(dev.actor)
            self._quarantine(dev, f"{dev.error}; its recover command did not bring it back: {task_error(exc)}")
            return
        self.store.add_fingerprint(hello["fingerprint_id"], hello["fingerprint"])
        dev.state, dev.error, dev.failures_in_row = "active", None, 0
        # a power cycle starts the device afresh (clocks, governor, temperature): as at a session's start (rule 19),
        # its drift canary comes first, so a device that came back slower is told apart before its next job
        dev.canary_due = self.options.canary_every > 0
        self.store.set_device_state(self.campaign_id, dev.profile.name, "active", error=None, consecutive_failures=0)
        log.warning("device %s is back after its recover command", dev.profile.name)

    def _quarantine(self, dev: _Device, error: str) -> None:
        if dev.state == "quarantined":  # a call still queued in the actor failed too: keep the first error
            return
        dev.state, dev.error = "quarantined", error
        self.store.set_device_state(self.campaign_id, dev.profile.name, "quarantined", error=error,
                                    consecutive_failures=dev.failures_in_row)
        log.log(logging.WARNING if self.options.say_quarantine else logging.INFO, "device %s quarantined: %s",
                dev.profile.name, error)


def _why_no_hello(dev: _Device, status: dict | None) -> str:
    """Why ``dev`` gave no hello in time, from its actor's ``status`` (None: the actor did not answer). An actor
    that answers runs on a node that offers the device's host: asking whether such a node is up, as was said of
    every device that had no connection error yet (a login stuck before the SSH banner, say), sent the user to
    look at Ray instead of the device."""
    if status is None:
        return f"is a Ray node with resource {dev.profile.host.resource} up?"
    if status.get("reconnect_error"):
        return f"still trying to reach it: {without_name(dev.profile.name, status['reconnect_error'])}"
    return ("its worker is up on its Ray node, but the device has not answered and no attempt has failed yet "
            "(a login or an agent start that hangs?)")


def flagged_text(jobs: int, results: int) -> str:
    """What a drifted canary flagged: a session's opening canary, off the baseline of the campaign's last session,
    has nothing since to flag, and 'flagged the results of 0 jobs (0 results, ...)' read as a count gone wrong."""
    if not jobs:
        return "no result since the last good canary to flag"
    return (f"flagged the results of {count(jobs, 'job', 'jobs')} since the last good canary "
            f"({count(results, 'result', 'results')}, re-measured attempts included)")


def _hint(dev: _Device, record: dict) -> str:
    """What to do about a run of failures that ends in ``record``, where the error alone does not say."""
    if record.get("error_kind") != HASH_MISMATCH:
        return ""
    return (f"; device {dev.profile.name} was given a model file that fails its hash check although the file was "
            "exported (and pushed) again each time, which no power cycle mends, so its recover command was not "
            "run: check the storage the file is on (the device's, or this machine's artifact folder), then resume")


def run_campaign(store: Store, campaign_id: int, options: CoordinatorOptions | None = None, *,
                 on_progress=None) -> dict:
    """Run (or resume: the same thing) a planned campaign; returns the coordinator's summary."""
    return Coordinator(store, campaign_id, options, on_progress=on_progress).run()


