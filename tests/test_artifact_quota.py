"""The artifact store's quota: least recently used models go first, needed and fresh ones stay."""
import os
import time

from harness.artifact_quota import ArtifactQuota
from harness.artifacts import ArtifactStore


def _fill(root, n, size=1000):
    """n models of ``size`` bytes, model i last used i minutes after model 0, an hour ago."""
    store = ArtifactStore(root)
    configs, shas = [], []
    for i in range(n):
        config = {"space": "nb201", "arch": i}
        art = store.put(bytes([i]) * size, config)
        t = time.time() - 3600 + 60 * i
        os.utime(art.path, (t, t))
        configs.append(config)
        shas.append(art.sha256)
    return store, configs, shas


def test_trim_removes_least_recently_used_models_except_the_ones_kept(tmp_path):
    store, configs, shas = _fill(tmp_path, 5)
    per_model = store.usage()[shas[0]][0]
    quota = ArtifactQuota(store, quota_bytes=2 * per_model, min_idle_s=60)
    assert quota.total_bytes == 5 * per_model
    removed = quota.trim(keep={shas[0]})  # the oldest is needed by a job in line
    assert removed == [shas[1], shas[2], shas[3]]
    assert sorted(store.usage()) == sorted([shas[0], shas[4]]) and quota.total_bytes == 2 * per_model
    for i in (1, 2, 3):  # nothing left behind: a lookup is a plain miss, so the next export just runs
        assert not store.exists(configs[i]) and store.get(configs[i]) is None
        assert not store.path_of(shas[i]).exists() and not (tmp_path / f"{shas[i]}.json").exists()
    assert store.get(configs[0]).sha256 == shas[0] and store.get(configs[4]).sha256 == shas[4]
    assert quota.trim() == []  # under the quota: nothing to do


def test_recently_used_models_stay_even_over_the_quota(tmp_path):
    store, _, shas = _fill(tmp_path, 3)  # last used 60, 59 and 58 minutes ago
    quota = ArtifactQuota(store, quota_bytes=1, min_idle_s=58.5 * 60)
    quota.used(shas[0])  # sent to a device just now: the oldest is now the freshest
    assert quota.trim() == [shas[1]]  # the only one idle for longer than 58.5 minutes
    assert sorted(store.usage()) == sorted([shas[0], shas[2]])
