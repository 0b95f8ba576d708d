"""Export NB201 / FBNet architectures to ONNX, check them with onnxruntime, store by content.

Exporter choice: torch's legacy TorchScript exporter (``dynamo=False``) at opset 17. On this
machine it took 0.12-0.33 s per NB201 model against 3.4-4.4 s for the dynamo exporter
(torch 2.13, one thread), and it writes byte-identical files for identical weights, which the
content-addressed store relies on.

Weights are drawn from ``torch.manual_seed(seed_of(space, arch))`` and BatchNorm statistics
are calibrated to keep activations near 1 (``prepare_model``), model in eval mode, so one
architecture always exports to the same bytes. Each export is run once in onnxruntime
(CPUExecutionProvider) on a fixed-seed input and compared with PyTorch; the max abs error is
part of the record.

``export_one`` is a plain module-level function of picklable arguments, so process pools
(``export_many``) and Ray tasks can call it directly.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import importlib.metadata
import io
import logging
import multiprocessing
import os
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from agents.runtimes.base import looks_like_oom
from harness.artifacts import ArtifactStore
from harness.errors import ExportError
from spaces import ArchError, fbnet, nb201
from spaces.cost import dataset_of, input_shape

logger = logging.getLogger(__name__)

__all__ = ["ExportConfig", "ExportRecord", "export_many", "export_one", "iter_export", "prepare_model", "seed_of"]

OPSET = 17
FORMAT_VERSION = 1  # bump when the exported graph changes for the same config
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Error allowed between onnxruntime and torch, relative to the largest |logit| (at least 1).
CHECK_RTOL = 1e-3


def seed_of(space: str, arch) -> int:
    """Weight seed derived from the canonical arch key (stable across processes and runs)."""
    digest = hashlib.sha256(f"{space}:{arch}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def canonical_arch(space: str, arch):
    """NB201: official index (int); FBNet: op-name key. Raises ArchError for bad input."""
    if space == "nb201":
        return nb201.resolve(arch)
    if space == "fbnet":
        return fbnet.canonical(str(arch))
    raise ArchError(f"unknown search space {space!r}; valid spaces: nb201, fbnet")


@dataclass(frozen=True)
class ExportConfig:
    """Everything that determines the exported bytes; its canonical JSON is part of the address."""

    space: str
    arch: int | str
    dataset: str
    batch_size: int = 1
    opset: int = OPSET
    exporter: str = "torch.onnx.legacy"
    torch_version: str = ""
    format_version: int = FORMAT_VERSION

    @classmethod
    def make(cls, space: str, arch, dataset: str | None = None, batch_size: int = 1) -> "ExportConfig":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ExportError(f"batch size must be a positive integer, got {batch_size!r}")
        return cls(space, canonical_arch(space, arch), dataset_of(space, dataset).name, batch_size,
                   torch_version=_torch_version())

    @property
    def seed(self) -> int:
        return seed_of(self.space, self.arch)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return input_shape(self.space, self.dataset, self.batch_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExportRecord:
    """What one export produced.

    Attributes
    ----------
    space, arch, dataset, batch_size : as in the config (arch is the canonical key).
    path : str
        The stored ``.onnx`` file.
    sha256 : str
        Its content address: the sha256 of its bytes and the export config (the file's name).
    model_sha256 : str
        The sha256 of its bytes alone: what ``sha256sum`` prints, and a measurement's ``spec.model_sha256``.
    export_s : float
        Seconds spent exporting (0.0 on a cache hit; the original time is in ``first_export_s``).
    max_abs_err : float
        Largest |onnxruntime - torch| over the output on the check input.
    onnx_bytes : int
        File size.
    cache_hit : bool
        True when the model was already in the store and nothing was exported.
    cpu_s : float
        CPU seconds of the whole ``export_one`` call in its process (build, export, check,
        store; 0.0 on a cache hit); unlike the wall times it does not grow when other processes
        share the cores.
    """

    space: str
    arch: int | str
    dataset: str
    batch_size: int
    path: str
    sha256: str
    export_s: float
    check_s: float
    max_abs_err: float
    onnx_bytes: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    seed: int
    cache_hit: bool
    first_export_s: float
    cpu_s: float = 0.0
    model_sha256: str = ""

    def summary(self) -> dict:
        """The CLI's JSON line: the contract keys first, then a few extras."""
        keys = ("space", "arch", "path", "sha256", "export_s", "max_abs_err", "dataset", "batch_size", "cache_hit",
                "model_sha256")
        return {k: getattr(self, k) for k in keys}


def build_model(space: str, arch, dataset: str):
    """The torch model of a canonical architecture (imports torch)."""
    if space == "nb201":
        from spaces.nb201_net import build_nb201
        return build_nb201(arch, dataset)
    from spaces.fbnet_net import build_fbnet
    return build_fbnet(arch, dataset)


def export_one(space: str, arch, out_dir: str | os.PathLike, *, dataset: str | None = None,
               batch_size: int = 1) -> ExportRecord:
    """Export one architecture into the artifact store at ``out_dir`` (or find it there).

    Parameters
    ----------
    space : {"nb201", "fbnet"}
    arch : int or str
        NB201 index / arch string, or FBNet key.
    out_dir : path
        Artifact store directory.
    dataset : str, optional
        Defaults to cifar10 (NB201) or cifar100 (FBNet).
    batch_size : int
        Batch dimension of the exported input.

    Returns
    -------
    ExportRecord

    Raises
    ------
    ArchError
        Bad space, architecture or dataset.
    ExportError
        torch failed to export, onnxruntime could not run the file, or the outputs disagree.
    """
    cpu_start_s = time.process_time()
    config = ExportConfig.make(space, arch, dataset, batch_size)
    store = ArtifactStore(out_dir)
    try:
        found = store.get(config.to_dict())
    except ExportError as exc:  # a corrupt or half-deleted entry: export it again
        logger.warning("%s; exporting again", exc)
        found = None
    if found is not None:
        return _record(config, found, cache_hit=True, export_s=0.0)
    model = prepare_model(config)
    onnx_bytes, export_s = _export_bytes(config, model)
    check = _check(config, model, onnx_bytes)
    meta = {"export_s": export_s, **check}
    artifact = store.put(onnx_bytes, config.to_dict(), meta)
    logger.info("exported %s %s in %.2f s (max abs err %.2e)", space, config.arch, export_s, check["max_abs_err"])
    record = _record(config, artifact, cache_hit=False, export_s=export_s)
    return dataclasses.replace(record, cpu_s=round(time.process_time() - cpu_start_s, 4))


def export_many(space: str, archs, out_dir: str | os.PathLike, *, dataset: str | None = None,
                batch_size: int = 1, workers: int | None = None) -> list[ExportRecord]:
    """Export many architectures in parallel worker processes; records in the order of ``archs``.

    Each worker runs torch with one thread (``workers`` defaults to the number of cores).
    Architectures are validated before any worker starts, so a bad key fails fast.
    """
    return list(iter_export(space, archs, out_dir, dataset=dataset, batch_size=batch_size, workers=workers))


def iter_export(space: str, archs, out_dir: str | os.PathLike, *, dataset: str | None = None,
                batch_size: int = 1, workers: int | None = None) -> Iterator[ExportRecord]:
    """Like ``export_many``, but yields each record (in input order) as soon as it is ready.

    Architectures already in the store are answered from it without starting any worker.
    """
    configs = [ExportConfig.make(space, a, dataset, batch_size) for a in archs]
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ExportError(f"workers must be a positive integer, got {workers!r}")
    cached = {i: rec for i, rec in enumerate(cached_record(c, out_dir) for c in configs) if rec is not None}
    missing = [c for i, c in enumerate(configs) if i not in cached]
    workers = min(workers, max(1, len(missing)))
    if workers == 1:
        for i, config in enumerate(configs):
            yield cached.get(i) or export_one(space, config.arch, out_dir, dataset=config.dataset,
                                              batch_size=batch_size)
        return
    # forkserver: workers fork from a clean server that has torch imported but has never run
    # a torch op, which is both quick and safe (forking a process with live OpenMP threads is not).
    # Like any non-fork start method it re-imports the caller's __main__: scripts need the
    # `if __name__ == "__main__":` guard.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "onnxruntime", "harness.export"])
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        futures = {i: pool.submit(export_one, space, c.arch, str(out_dir), dataset=c.dataset, batch_size=batch_size)
                   for i, c in enumerate(configs) if i not in cached}
        try:
            for i in range(len(configs)):
                yield cached[i] if i in cached else futures[i].result()
        finally:
            for future in futures.values():
                future.cancel()


def cached_record(config: ExportConfig, out_dir, *, verify: bool = True) -> ExportRecord | None:
    """The record of ``config``'s model if the store at ``out_dir`` holds it (without importing torch).

    ``verify=False`` skips hashing the file, for a caller that hashes the bytes it reads itself."""
    try:
        found = ArtifactStore(out_dir).get(config.to_dict(), verify=verify)
    except ExportError:
        return None  # corrupt: the worker's export_one re-exports it
    return None if found is None else _record(config, found, cache_hit=True, export_s=0.0)


@functools.lru_cache(maxsize=1)
def _torch_version() -> str:
    # from the package metadata: importing torch only to look up cached exports is slow
    return importlib.metadata.version("torch")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def prepare_model(config: ExportConfig):
    """The eval-mode torch model that ``config`` exports: seeded weights, calibrated BatchNorm.

    Each BatchNorm's running variance is set to the power of two nearest the variance of its
    input on a fixed-seed calibration image (running mean stays 0), layer by layer in one
    forward pass. With the initial statistics (mean 0, variance 1) NB201 cells built of
    skip/pool edges grow activations to ~1e3 and FBNet shrinks them to ~1e-2; trained
    networks keep them near 1. Near-1 values keep the onnxruntime check meaningful in
    absolute terms and keep denormal numbers out of latency measurements. Rounding to a
    power of two keeps the weights (and so the file's sha256) stable against last-bit
    differences between machines.
    """
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    model = build_model(config.space, config.arch, config.dataset).eval()
    calib = torch.from_numpy(_fixed_input(config.seed, input_shape(config.space, config.dataset, 1)))

    def set_running_var(module, inputs):
        var = float(inputs[0].double().var(dim=(0, 2, 3), unbiased=False).mean())
        if var > 1e-30:  # an all-zero input (a disconnected NB201 cell) keeps variance 1
            module.running_var.fill_(2.0 ** round(np.log2(var)))

    handles = [m.register_forward_pre_hook(set_running_var) for m in model.modules()
               if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(calib)
    finally:
        for h in handles:
            h.remove()
    return model


def _fixed_input(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _export_bytes(config: ExportConfig, model) -> tuple[bytes, float]:
    import torch

    buffer = io.BytesIO()
    start = time.perf_counter()
    try:
        example = torch.zeros(config.input_shape)  # a batch too large for memory fails here, or in the trace
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation warning
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=config.opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)
    except Exception as exc:
        if looks_like_oom(exc):
            raise ExportError(f"not enough memory to export {config.space} {config.arch!r} at batch size "
                              f"{config.batch_size}: {exc}") from exc
        raise ExportError(f"torch could not export {config.space} {config.arch!r}: {exc}") from exc
    return buffer.getvalue(), time.perf_counter() - start


def _check(config: ExportConfig, model, onnx_bytes: bytes) -> dict:
    """Run the model once in onnxruntime and in torch on the same fixed-seed input."""
    import onnxruntime as ort
    import torch

    start = time.perf_counter()
    x = _fixed_input(config.seed + 1, config.input_shape)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the export of {config.space} {config.arch!r}: {exc}") from exc
    if got.shape != expected.shape:
        raise ExportError(f"export of {config.space} {config.arch!r} gives output shape {got.shape}, "
                          f"torch gives {expected.shape}")
    err = float(np.max(np.abs(got - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    if not err <= CHECK_RTOL * scale:  # also catches NaN
        raise ExportError(f"export of {config.space} {config.arch!r} disagrees with torch: "
                          f"max abs error {err:.3g} on outputs up to {scale:.3g}")
    return {"max_abs_err": err, "check_s": time.perf_counter() - start,
            "output_shape": list(got.shape)}


def _record(config: ExportConfig, artifact, *, cache_hit: bool, export_s: float) -> ExportRecord:
    from agents.server import sha256_of  # the agent's own file hash; imported here, off the CLI's start-up

    meta = artifact.meta
    return ExportRecord(
        space=config.space, arch=config.arch, dataset=config.dataset, batch_size=config.batch_size,
        path=str(artifact.path), sha256=artifact.sha256, export_s=round(export_s, 4),
        check_s=0.0 if cache_hit else round(meta["check_s"], 4), max_abs_err=meta["max_abs_err"],
        onnx_bytes=artifact.path.stat().st_size, input_shape=config.input_shape,
        output_shape=tuple(meta["output_shape"]), seed=config.seed, cache_hit=cache_hit,
        first_export_s=round(meta["export_s"], 4),
        model_sha256=sha256_of(artifact.path),
    )
