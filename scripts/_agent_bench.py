"""Shared pieces of the agent benchmarks: NB201 models to measure, the request, the environment."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from agents import fingerprint
from agents.protocol import Measure
from agents.server import sha256_of
from harness.artifacts import ArtifactStore
from harness.export import ExportConfig, export_many
from spaces import nb201

ROOT = Path(__file__).resolve().parents[1]


def tiny_conv_onnx(path: Path) -> dict:
    """A one-conv ONNX model (about 0.1 ms a run) at ``path``: for benchmarks of what surrounds a measurement."""
    import torch

    model = torch.nn.Conv2d(3, 8, 3, padding=1).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    return {"path": str(path), "sha256": sha256_of(path)}


def fill_artifacts(art_dir: Path, archs, onnx_bytes: bytes) -> None:
    """Put the tiny model into the store under each architecture's export config (as export_one would)."""
    store = ArtifactStore(art_dir)
    meta = {"export_s": 0.0, "check_s": 0.0, "max_abs_err": 0.0, "output_shape": [1, 8, 32, 32]}
    for space, arch in archs:
        store.put(onnx_bytes, ExportConfig.make(space, int(arch)).to_dict(), meta)


def nb201_models(n: int, seed: int, store_dir: Path) -> list[dict]:
    """Export n seeded random NB201 architectures (CIFAR-10, batch 1); cached in ``store_dir``."""
    archs = nb201.sample(n, seed)
    records = export_many("nb201", archs, store_dir, workers=1)
    return [{"arch": r.arch, "arch_str": nb201.to_string(r.arch), "path": r.path, "sha256": sha256_of(Path(r.path))}
            for r in records]


def measure_request(model: dict, *, runtime: str, threads: int, cores, profile: str, policy=None,
                    options=None, id: str = "") -> Measure:
    return Measure(id=id or f"{runtime}-{model['arch']}", runtime=runtime, model=model["path"],
                   sha256=model["sha256"], threads=threads, cores=tuple(cores), profile=profile,
                   policy=dict(policy or {}), options=dict(options or {}), labels={"arch": f"nb201:{model['arch']}"})


def environment() -> dict:
    fp = fingerprint.collect()
    return {"load_avg_at_end": list(os.getloadavg()), "cpu_model": fp["cpu_model"], "cpu_count": fp["cpu_count"],
            "python": platform.python_version(), "runtime_versions": fp["runtime_versions"],
            "fingerprint_id": fingerprint.fingerprint_id(fp)}
