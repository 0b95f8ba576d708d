"""TVM libraries for a device's options.library_dir, built on a build host: ``<model sha256>.so`` beside its
``.so.sha256`` (the digest the agent checks before loading it). scripts/build_tvm_libraries is the command."""
from __future__ import annotations

import json
import time
from pathlib import Path

from agents.runtimes.tvm_vm import build_library, record_library_digest
from agents.server import sha256_of


def parse_target(text: str):
    """A target as a profile gives it: a plain kind ("llvm") or its JSON form."""
    return json.loads(text) if text.lstrip().startswith("{") else text


def export_models(space: str, archs: str | list[str], store: Path, dataset: str | None, batch_size: int, *,
                  seed: int = 0) -> list[Path]:
    """The models a campaign with these settings measures (``archs`` as its --archs, ``seed`` as its --seed)."""
    from harness.export import export_many
    from spaces.selection import resolve_archs

    records = export_many(space, resolve_archs(space, archs, seed=seed), store, dataset=dataset,
                          batch_size=batch_size, workers=1)
    return [Path(r.path) for r in records]


def build_all(models: list[Path], out: Path, target, *, cc=None, tune_trials: int = 0, tuning_dir=None,
              schedule: str = "none", log=print) -> list[Path]:
    """Each model's library in ``out`` under its sha256, with its digest recorded; an existing one is kept."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    built = []
    for model in models:
        lib = out / f"{sha256_of(model)}.so"
        t0 = time.perf_counter()
        if not lib.is_file():
            build_library(model, lib, target, cc=cc, tune_trials=tune_trials, tuning_dir=tuning_dir,
                          schedule=schedule)
            record_library_digest(lib, lib.read_bytes())
        log(f"{model.name}: {lib.name} ({time.perf_counter() - t0:.1f} s)")
        built.append(lib)
    return built
