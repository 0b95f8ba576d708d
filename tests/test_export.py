"""ONNX export: runs in onnxruntime, matches torch, content-addressed cache, parallel workers."""
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from harness.artifacts import ArtifactStore, content_sha256
from harness.errors import ExportError, UserError
from harness.export import ExportConfig, export_many, export_one, seed_of
from spaces import ArchError, fbnet

FBNET_KEY = "k5_e6,skip,k3_e1_g2,k3_e3,k5_e1,k5_e1_g2,k3_e6,skip,k5_e3,k3_e1,k5_e6,skip," \
            "k3_e1_g2,k3_e3,k5_e1,k5_e1_g2,k3_e6,skip,k5_e3,k3_e1,k5_e6,k3_e3"


def _run(path, shape):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert list(inp.shape) == list(shape)
    return session.run(None, {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})[0]


def test_nb201_export_runs_with_expected_shape(tmp_path):
    rec = export_one("nb201", 0, tmp_path, batch_size=2)
    assert rec.space == "nb201" and rec.arch == 0 and rec.dataset == "cifar10" and not rec.cache_hit
    assert rec.max_abs_err <= 1e-4
    assert _run(rec.path, (2, 3, 32, 32)).shape == (2, 10)
    model = onnx.load(rec.path)
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == 17


def test_nb201_imagenet16_export(tmp_path):
    rec = export_one("nb201", "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
                     tmp_path, dataset="ImageNet16-120")
    assert rec.max_abs_err <= 1e-4
    assert _run(rec.path, (1, 3, 16, 16)).shape == (1, 120)


def test_fbnet_export_runs_with_expected_shape(tmp_path):
    rec = export_one("fbnet", FBNET_KEY, tmp_path)
    assert rec.dataset == "cifar100" and rec.max_abs_err <= 1e-4
    assert _run(rec.path, (1, 3, 32, 32)).shape == (1, 100)


def test_reexport_is_cache_hit_with_same_address(tmp_path):
    first = export_one("nb201", 17, tmp_path)
    again = export_one("nb201", "17", tmp_path)
    assert again.cache_hit and again.export_s == 0.0
    assert (again.sha256, again.path, again.max_abs_err) == (first.sha256, first.path, first.max_abs_err)
    # the file name is the sha256 of the ONNX bytes + canonical config JSON
    config = ExportConfig.make("nb201", 17).to_dict()
    with open(first.path, "rb") as f:
        assert content_sha256(f.read(), config) == first.sha256
    assert ArtifactStore(tmp_path).exists(config)
    # a different batch size is a different config, so not a hit
    assert not ArtifactStore(tmp_path).exists(ExportConfig.make("nb201", 17, batch_size=4).to_dict())


def test_same_arch_exports_identical_bytes_in_two_stores(tmp_path):
    a = export_one("nb201", 5, tmp_path / "a")
    b = export_one("nb201", 5, tmp_path / "b")
    assert a.sha256 == b.sha256 and a.seed == b.seed == seed_of("nb201", 5)


def test_corrupt_artifact_is_detected_and_reexported(tmp_path):
    rec = export_one("nb201", 3, tmp_path)
    with open(rec.path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ExportError, match="corrupt"):
        ArtifactStore(tmp_path).get(ExportConfig.make("nb201", 3).to_dict())
    again = export_one("nb201", 3, tmp_path)
    assert not again.cache_hit and again.sha256 == rec.sha256
    assert _run(again.path, (1, 3, 32, 32)).shape == (1, 10)


def test_export_task_ships_the_exported_bytes_hash_when_the_file_changes_after_its_check(tmp_path, monkeypatch):
    """The campaign's export task (run here as a plain function) read the file back and hashed it after the
    cache had checked it: a file damaged in between went out under the damaged bytes' hash, so the agent ran it."""
    import hashlib

    from harness import export
    from harness.ray_cluster import export_task

    rec = export_one("nb201", 3, tmp_path)
    good = hashlib.sha256(open(rec.path, "rb").read()).hexdigest()
    checked = export.cached_record

    def checked_then_damaged(config, out_dir, **options):  # the race, made certain: damaged right after the lookup
        found = checked(config, out_dir, **options)
        with open(found.path, "r+b") as f:
            f.truncate(100)
        return found

    monkeypatch.setattr(export, "cached_record", checked_then_damaged)
    art = export_task(("nb201", 3, "cifar10", 1), str(tmp_path))
    assert art["sha256"] == good and art["artifact_sha256"] == rec.sha256  # exported again, the right hash
    assert hashlib.sha256(open(art["path"], "rb").read()).hexdigest() == good


def test_export_many_in_worker_processes_keeps_order(tmp_path):
    keys = fbnet.sample(2, seed=4)
    recs = export_many("fbnet", keys, tmp_path, workers=2)
    assert [r.arch for r in recs] == keys
    assert all(r.max_abs_err <= 1e-4 and not r.cache_hit for r in recs)
    assert all(r.cache_hit for r in export_many("fbnet", keys, tmp_path, workers=2))
    meta = json.loads((tmp_path / f"{recs[0].sha256}.json").read_text())
    assert meta["config"]["arch"] == keys[0] and meta["config"]["opset"] == 17


def test_bad_input_raises_user_errors(tmp_path):
    assert issubclass(ExportError, UserError)
    with pytest.raises(ArchError, match="out of range"):
        export_one("nb201", 15625, tmp_path)
    with pytest.raises(ArchError, match="valid datasets"):
        export_one("fbnet", FBNET_KEY, tmp_path, dataset="ImageNet16-120")
    with pytest.raises(ExportError, match="batch size"):
        export_one("nb201", 0, tmp_path, batch_size=0)
    with pytest.raises(ArchError, match="22 layers"):  # validated before any worker starts
        export_many("fbnet", [FBNET_KEY, "skip,skip"], tmp_path, workers=2)


# An exporter that stops itself (SIGSTOP) when its write passes 64 KiB (the file size limit): caught mid-write,
# its temporary model file half written, as a kill at that moment leaves it.
_STOPS_MID_WRITE = """
import os, resource, signal, sys
import onnx, onnxruntime, torch  # their imports write files past the limit
from harness.export import export_one
signal.signal(signal.SIGXFSZ, lambda *_: os.kill(os.getpid(), signal.SIGSTOP))
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
export_one("nb201", 1, sys.argv[1])
"""


def test_a_killed_exporters_temporary_file_is_removed_by_the_next_export_a_live_ones_kept(tmp_path, monkeypatch):
    """An export killed while it wrote its model left its temporary file in the artifact folder for ever, where the
    artifact quota did not count it."""
    monkeypatch.setattr("harness.paths.PARTIAL_SWEEP_INTERVAL_S", 0.0)  # each export here looks, not once a minute
    import subprocess
    import sys
    import time

    import psutil

    from harness.artifact_quota import ArtifactQuota

    child = subprocess.Popen([sys.executable, "-c", _STOPS_MID_WRITE, str(tmp_path)],
                             env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        deadline = time.monotonic() + 120
        while psutil.Process(child.pid).status() != psutil.STATUS_STOPPED:
            assert child.poll() is None and time.monotonic() < deadline, "the exporter never reached its write"
            time.sleep(0.05)
        (half,) = tmp_path.glob(".partial-*.onnx")
        assert 0 < half.stat().st_size <= 65536
        export_one("nb201", 2, tmp_path)  # another exporter, while the first is alive: its file is its own
        assert half.exists()
        child.kill()  # now killed mid-write
        child.wait()
        rec = export_one("nb201", 3, tmp_path)  # the next export into the folder
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not half.exists() and not list(tmp_path.rglob(".partial-*"))
    assert Path(rec.path).is_file() and len(ArtifactQuota(ArtifactStore(tmp_path), 10**9).models) == 2
