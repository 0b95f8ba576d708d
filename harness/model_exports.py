"""The book of a campaign's model exports, kept by the coordinator (``harness.coordinator``).

An export's life: scheduled as a Ray task (``harness.export.export_one``) for the next models of each device's
queue and its drift canary; ready (recorded in the store) or failed (its job fails without device time); lost
by Ray and run again; its file not seen here when its job comes and exported again; removed by the artifact quota
while no device needs it soon; forgotten once no queued job needs it.
"""
from __future__ import annotations

import errno
import itertools
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from harness.artifact_quota import ArtifactQuota
from harness.artifacts import ArtifactStore
from harness.errors import ClusterError, StorageFull
from harness.ray_cluster import export_remote, task_error
from spaces.cost import dataset_of

if TYPE_CHECKING:
    from harness.coordinator import _Device
    from harness.coordinator_options import CoordinatorOptions
    from harness.store import Store

# the campaign's log lines keep the coordinator's logger, whose name the CLI prints before each
log = logging.getLogger("harness.coordinator")

# Exports in a row of one model whose file is not on this machine when its job comes: then it never will be
EXPORTS_UNSEEN_MAX = 3


def _is_disk_full(exc: BaseException) -> bool:
    """Whether an error (or the one a Ray task raised) is a full disk or an exceeded disk quota."""
    cause = task_error(exc)
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


class ModelExports:
    """The exports of one campaign's models, by key ``(space, arch, dataset, batch size)``.

    Parameters
    ----------
    space : str
        The campaign's space.
    options : CoordinatorOptions
    store : Store
        Where each ready export is recorded.
    devices : dict
        The coordinator's devices by name, the same dict it fills as the campaign starts: their queues and calls
        in flight say which models to export next and which the artifact quota spares.
    canary : tuple
        ``(space, arch)`` of the devices' drift canary.
    """

    def __init__(self, space: str, options: CoordinatorOptions, store: Store, devices: dict[str, _Device],
                 canary: tuple):
        self.space, self.options, self.store, self.devices, self.canary = space, options, store, devices, canary
        self.by_key: dict[tuple, dict | object] = {}  # key -> ready dict, or a pending ObjectRef
        self.pending: set[tuple] = set()  # keys whose value is a pending ObjectRef: the loop waits on these only
        # key -> queued jobs (all devices) still to measure its model: a ready export nobody needs is forgotten,
        # or a month-long campaign would keep one per architecture (and scan them all at every turn of the loop)
        self.users: Counter = Counter()
        self.lost: dict[tuple, int] = {}  # key -> times Ray lost its export task
        # key -> exports in a row whose file this machine did not find before any job used it
        self.unseen: Counter = Counter()
        self.quota: ArtifactQuota | None = None

    def key(self, dev: _Device, space: str, arch: str) -> tuple | None:
        """The export key of ``arch`` of ``space`` on ``dev``; None: it measures no export (torch, a fixed model)."""
        if dev.profile.runtime.kind == "torch" or self.options.fixed_model:
            return None  # torch builds the model from the architecture key
        dataset = dev.profile.dataset if space == self.space else None
        return (space, arch, dataset_of(space, dataset).name, dev.profile.batch_size)

    def count_users(self, dev: _Device) -> None:
        """Count the queued jobs of ``dev`` as users of their models' exports (:meth:`release`)."""
        base = self.key(dev, self.space, "")
        if base is not None:
            self.users.update((self.space, arch, *base[2:]) for _, arch, _ in dev.queue)

    def release(self, dev: _Device, arch: str) -> None:
        """A job of ``arch`` is finished for good on ``dev``: forget its export once no job wants it."""
        key = self.key(dev, self.space, arch)
        if key is None:
            return
        self.users[key] -= 1
        if self.users[key] <= 0:
            del self.users[key]
            if isinstance(self.by_key.get(key), dict):  # a later campaign's export of it is a cache hit
                del self.by_key[key]

    def start_quota(self) -> None:
        """Keep the artifact folder under ``options.artifact_quota_gb``, if given."""
        if self.options.artifact_quota_gb is not None:
            quota_bytes = int(self.options.artifact_quota_gb * 1e9)
            self.quota = ArtifactQuota(ArtifactStore(self.options.artifact_dir), quota_bytes,
                                       min_idle_s=self.options.artifact_idle_s)
            self.trim()  # room for the first export (after a full disk, or a lower quota)

    def schedule(self, dev: _Device) -> None:
        """Start the exports ``dev`` needs next: its canary's when one is due, and its queue's first
        ``options.export_ahead`` (backpressure: no more run ahead of it)."""
        if dev.state != "active":
            return
        canaries = self.options.canary_every > 0
        # the end canary only while jobs since the last one wait for it (as Coordinator._dispatch sends it)
        end = not dev.queue and dev.since_canary > 0
        wanted = [self.canary] if canaries and (dev.canary_due or end) else []
        wanted += [(self.space, arch) for _, arch, _ in itertools.islice(dev.queue, self.options.export_ahead)]
        for space, arch in wanted:
            key = self.key(dev, space, arch)
            if key is not None and key not in self.by_key:
                if self.quota is not None and self.quota.over:  # make room before the file is written
                    self.trim()
                # absolute: a Ray worker of a cluster joined by --address runs in its node's folder, not in ours
                self.by_key[key] = export_remote().remote(key, str(Path(self.options.artifact_dir).absolute()))
                self.pending.add(key)

    def pending_refs(self) -> list:
        """The Ray tasks of the exports still running, for the coordinator's ``ray.wait``."""
        return [self.by_key[key] for key in self.pending]

    def take_ready(self, ray, ready: set) -> None:
        """Take the exports whose tasks are in ``ready``."""
        for key in [key for key in self.pending if self.by_key[key] in ready]:
            self.pending.discard(key)
            self._done(ray, key, self.by_key[key])

    def _done(self, ray, key, ref) -> None:
        try:
            art = ray.get(ref, timeout=30)
        except Exception as exc:
            if _is_disk_full(exc):  # not the architecture's fault nor the device's: stop, charge no attempt
                raise StorageFull(f"the artifact folder {self.options.artifact_dir} is full (no space left on "
                                  "device) while exporting a model; free space there or give --artifact-quota-gb, "
                                  "then resume: nothing measured is lost") from exc
            if not isinstance(exc, ray.exceptions.RayTaskError):
                self._lost(ray, key, exc)  # Ray lost the task: not the model's fault
                return
            cause = task_error(exc)  # not Ray's traceback: one line
            self.by_key[key] = {"error": f"export of {key[0]} {key[1]} failed: {type(cause).__name__}: {cause}"}
            return
        self.by_key[key] = art
        self.lost.pop(key, None)
        self.store.add_artifact(sha256=art["artifact_sha256"], space=key[0], arch=key[1],  # a store error stops
                                config={"dataset": key[2], "batch_size": key[3]}, path=art["path"],
                                size_bytes=art["size_bytes"])
        if self.quota is not None:
            self.quota.used(Path(art["path"]).stem, art["size_bytes"])
            self.trim()

    def ready_model(self, dev: _Device, space: str, arch: str) -> tuple[tuple | None, dict] | None:
        """``(key, export)`` of the model ``dev`` measures next (``options.fixed_model`` under key None), once
        its file is here; None while its export runs, or once its file was found missing (exported again)."""
        key = self.key(dev, space, arch)
        art = self.by_key.get(key) if key is not None else dict(self.options.fixed_model or {})
        if not isinstance(art, dict):
            return None  # export still running
        if key is not None and art.get("path") and not Path(art["path"]).is_file():
            self._unseen(key, art)  # removed (by the artifact quota, or by hand): export it again
            return None
        if key is not None:
            self.unseen.pop(key, None)
        if self.quota is not None and art.get("path"):
            self.quota.used(Path(art["path"]).stem)
        return key, art

    def forget(self, key: tuple) -> None:
        """A failed export, given to its job: a retry exports it afresh."""
        del self.by_key[key]

    def _unseen(self, key, art: dict) -> None:
        """An export whose file is not here: exported again, unless that happened ``EXPORTS_UNSEEN_MAX`` times in
        a row. Then the file never reaches this machine (a cluster whose nodes do not share the artifact folder:
        the export task writes it on its own node) and exporting again would go on for ever, measuring nothing."""
        del self.by_key[key]
        unseen = self.unseen[key] = self.unseen[key] + 1
        if unseen >= EXPORTS_UNSEEN_MAX:
            raise ClusterError(f"the export of {key[0]} {key[1]} finished {unseen} times in a row, yet its file "
                               f"{art['path']} was not there when its job came: the artifact folder "
                               f"{self.options.artifact_dir} must be one folder that every node of the Ray cluster "
                               "sees at that path (a shared file system), and nothing else may remove files from it; "
                               "nothing measured is lost: fix that and run the same command again")
        log.warning("the model file %s of %s %s is not there; exporting it again", art["path"], key[0], key[1])

    def _lost(self, ray, key, exc: Exception) -> None:
        """An export that Ray lost (its worker was killed, its node died) is run again, up to 3
        times in a row; then it fails like a model that does not export. With Ray's node on this
        machine gone nothing can run: stop, charging no job (see :meth:`Coordinator.run`)."""
        if isinstance(exc, ray.exceptions.LocalRayletDiedError):
            raise ClusterError(f"Ray's node on this machine died (noticed when an export of {key[0]} {key[1]} "
                               f"failed: {exc}); nothing measured is lost: run the same command again") from exc
        lost = self.lost[key] = self.lost.get(key, 0) + 1
        if lost >= 3:
            self.by_key[key] = {"error": f"export of {key[0]} {key[1]} lost by Ray {lost} times in a row "
                                         f"(last: {type(exc).__name__}: {exc})"}
            return
        del self.by_key[key]  # scheduled again while a job wants it
        log.warning("Ray lost the export of %s %s (%s: %s); exporting it again", key[0], key[1],
                    type(exc).__name__, exc)

    def changed_on_disk(self, dev: _Device, space: str, arch: str) -> None:
        """The agent refused a model file whose bytes no longer match its hash (changed on disk after
        its export). Forget the export, so the retry's export finds the file corrupt and writes it
        again (``harness.export``), rather than the retry meeting the same file."""
        key = self.key(dev, space, arch)
        if isinstance(self.by_key.get(key), dict):
            del self.by_key[key]
            log.warning("%s: the model of %s %s changed on disk after its export; exporting it again",
                        dev.profile.name, space, arch)

    def trim(self) -> None:
        """Apply the artifact quota, sparing the models in flight and next in line on every device."""
        if not self.quota.over:
            return
        keep = set()
        for dev in self.devices.values():
            wanted = [self.canary] + [(self.space, arch) for _, arch, _ in
                                      itertools.islice(dev.queue, self.options.export_ahead)]
            wanted += [self.canary if entry[1] is None else (self.space, entry[3]) for entry in dev.in_flight]
            for space, arch in wanted:
                art = self.by_key.get(self.key(dev, space, arch))
                if isinstance(art, dict) and art.get("path"):
                    keep.add(Path(art["path"]).stem)
        removed = set(self.quota.trim(keep))
        for key, art in list(self.by_key.items()):
            if isinstance(art, dict) and art.get("path") and Path(art["path"]).stem in removed:
                del self.by_key[key]  # exported again when a job needs it
