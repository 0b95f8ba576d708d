"""A size limit for the coordinator's artifact store, so a long campaign does not fill the disk.

Every architecture of a campaign is exported once into the content-addressed store and kept
there: the whole NB201 space is about 28 GB of ONNX files (1.8 MB a model), 5,000 FBNet models
about 37 GB (7.4 MB a model). With a quota the coordinator deletes the least recently used
models once the store grows past it. A deleted model that is needed again (a retry, a later
campaign) is exported again, so the quota trades disk for export time, never results. It spares:

- the models of the jobs in flight and of the next ``export_ahead`` jobs of every device;
- any model used in the last ``min_idle_s`` (2 minutes): another campaign sharing the folder (an
  onboarding into the same store) may have sent it to a device that has yet to load it; its
  coordinator touches a model when it sends it. Should it still lose one, that job's attempt
  fails and its retry exports the model again.

Those can keep the store above the quota for a while; it is a soft limit.
"""
from __future__ import annotations

import logging
import time

from harness.artifacts import ArtifactStore

log = logging.getLogger(__name__)


class ArtifactQuota:
    """Keep ``store`` under ``quota_bytes`` by removing its least recently used models.

    Parameters
    ----------
    store : ArtifactStore
    quota_bytes : int
    min_idle_s : float
        A model used more recently than this is never removed.
    """

    def __init__(self, store: ArtifactStore, quota_bytes: int, *, min_idle_s: float = 120.0):
        self.store = store
        self.quota_bytes = int(quota_bytes)
        self.min_idle_s = float(min_idle_s)
        self.models = store.usage()  # sha256 -> (bytes, last use); kept up to date, not re-scanned
        self.total_bytes = sum(size for size, _ in self.models.values())

    @property
    def over(self) -> bool:
        return self.total_bytes > self.quota_bytes

    def used(self, sha256: str, size_bytes: int | None = None) -> None:
        """A model was exported (``size_bytes`` given) or sent to a device."""
        self.store.touch(sha256)
        old = self.models.get(sha256, (0, 0.0))[0]
        size = int(size_bytes) if size_bytes is not None else old
        self.models[sha256] = (size, time.time())
        self.total_bytes += size - old

    def trim(self, keep=()) -> list[str]:
        """Remove least recently used models (not in ``keep``) until under the quota; their sha256s."""
        if not self.over:
            return []
        total = self.total_bytes
        keep, now = set(keep), time.time()
        removed = []
        for sha in sorted(self.models, key=lambda s: self.models[s][1]):
            if total <= self.quota_bytes or now - self.models[sha][1] < self.min_idle_s:
                break  # under the quota, or every model from here on was used too recently
            if sha in keep or self._recently_used(sha, now):
                continue
            total -= self.models.pop(sha)[0]
            self.store.remove(sha)
            removed.append(sha)
        self.total_bytes = total
        if removed:
            log.info("artifact quota: removed %d least recently used models, %.1f of %.1f GB used",
                     len(removed), total / 1e9, self.quota_bytes / 1e9)
        return removed

    def _recently_used(self, sha256: str, now: float) -> bool:
        try:  # the file's mtime too: another campaign sharing the folder may have touched it
            last = self.store.path_of(sha256).stat().st_mtime
        except FileNotFoundError:
            return False
        return now - last < self.min_idle_s
