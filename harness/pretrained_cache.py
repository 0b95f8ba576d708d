"""Pretrained few-shot methods kept on disk, so `hwl onboard` pretrains once per set of tables.

Pretraining ``tl_et`` on the public tables (400,000 rows for NB201) takes minutes, and onboarding the next device
on the same store pretrains the same model again. A pretrained method is written to ``CACHE_DIR/<key>.pt`` (the
model-file format, through ``written_whole``) and read back instead of pretraining when the key matches. The key
is a sha256 over everything the pretrained model depends on: the method's class and parameters (seed included),
the space, every table in its order (device names, architecture keys, latencies), the source of hwl's
``predictors`` and ``spaces`` packages, and the torch and numpy versions. A method whose parameters are not plain
values (a proxy table given as a DataFrame), or whose class does not ask for it (``cache_pretrained``: a
pretraining of seconds), is pretrained every time.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from harness.model_file import ModelFileError, load_model, save_model
from predictors.base import TrainTables

log = logging.getLogger(__name__)

CACHE_DIR = Path("~/.cache/hwl/pretrained")
KEEP = 8  # newest entries kept: a pretrained tl_et holds its tables (tens of MB)
PLAIN = (str, int, float, bool, type(None))
CODE_PACKAGES = ("predictors", "spaces")


def pretrained(method, space: str, tables: dict, *, cache_dir=CACHE_DIR):
    """``method`` pretrained on ``tables`` (device -> latency Series), read from the cache when it holds it."""
    key = cache_key(method, space, tables)
    if key is None:
        return method.pretrain(space, TrainTables(tables, tables))
    path = Path(cache_dir).expanduser() / f"{key}.pt"
    if path.exists():
        try:
            saved = load_model(path)
            path.touch()  # recently used: kept by the pruning
            log.info("pretrained %s read from %s", type(method).__name__, path)
            return saved["model"]
        except ModelFileError as exc:  # a damaged entry is pretrained again and replaced
            log.warning("pretraining again: %s", exc)
    method.pretrain(space, TrainTables(tables, tables))
    try:
        save_model(path, method, method=type(method).__name__, space=space, train_devices=list(tables))
        _prune(path.parent)
    except (OSError, ModelFileError) as exc:  # a full or read-only disk costs the next run time, nothing else
        log.warning("pretrained model not cached: %s", exc)
    return method


def cache_key(method, space: str, tables: dict) -> str | None:
    """The sha256 naming ``method`` pretrained on ``tables``; None for a method not to cache."""
    import torch

    if not getattr(method, "cache_pretrained", False):
        return None
    params = method.get_params(deep=False)
    if not all(isinstance(v, PLAIN) or (isinstance(v, tuple) and all(isinstance(x, PLAIN) for x in v))
               for v in params.values()):
        return None
    digest = hashlib.sha256()
    head = {"class": f"{type(method).__module__}.{type(method).__qualname__}",
            "params": {k: repr(v) for k, v in sorted(params.items())}, "space": space, "code": _code_digest(),
            "torch": torch.__version__, "numpy": np.__version__}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for device, series in tables.items():  # in order: it sets the embedding rows and the batches
        digest.update(f"\0{device}\0{len(series)}\0".encode())
        digest.update("\n".join(map(repr, series.index)).encode())
        digest.update(np.ascontiguousarray(series.to_numpy(np.float64)).tobytes())
    return digest.hexdigest()


def _code_digest() -> str:
    """sha256 of the predictors' and spaces' source: a changed method is a new pretrained model."""
    import importlib

    digest = hashlib.sha256()
    for name in CODE_PACKAGES:
        root = Path(importlib.import_module(name).__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _prune(folder: Path) -> None:
    entries = []
    for path in folder.glob("*.pt"):
        if path.name.startswith("."):  # another onboarding's entry, still being written (written_whole)
            continue
        with contextlib.suppress(FileNotFoundError):  # pruned by another onboarding meanwhile
            entries.append((path.stat().st_mtime, path))
    for _, old in sorted(entries, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)


__all__ = ["CACHE_DIR", "cache_key", "pretrained"]
