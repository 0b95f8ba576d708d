"""The batch the data-dependent proxies read: synthetic by default, or the user's images.

- ``synthetic`` (default): N(0, 1) images and uniform labels from a fixed seed, so proxy values
  are reproducible everywhere and no dataset needs to be downloaded.
- a CIFAR directory in the python-pickle format (``cifar-10-batches-py`` with ``data_batch_*``
  / ``test_batch``, or ``cifar-100-python`` with ``train`` / ``test``),
- an image folder: one sub-folder per class holding image files (read with Pillow).

Images are scaled to [0, 1], normalised with the CIFAR channel statistics and resized to the
network's input resolution. ``batch_size`` images are drawn with ``seed``.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.runtimes.base import looks_like_oom
from predictors.zcp.errors import ZCPError
from spaces.cost import dataset_of

__all__ = ["BatchSpec", "load_batch"]

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".webp")


@dataclass(frozen=True)
class BatchSpec:
    """Which batch the proxies read; ``key`` identifies it in the store.

    Parameters
    ----------
    data : str or None
        None for the synthetic batch, else a CIFAR directory or an image folder.
    batch_size : int
    seed : int
        Seed of the synthetic images, or of which images are drawn from ``data``.
    """

    data: str | None = None
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        if int(self.batch_size) < 2:
            raise ZCPError(f"batch size must be at least 2 (jacov and nwot compare images), got {self.batch_size}")

    @property
    def key(self) -> str:
        source = "synthetic" if self.data is None else str(Path(self.data).resolve())
        return f"{source}|bs={int(self.batch_size)}|seed={int(self.seed)}"

    def run_key(self, init_seed: int = 0) -> str:
        """The store's key of the scores of this batch on weights drawn with ``init_seed``: ``key``, plus the seed
        when it is not the default 0 (the keys stores hold from before are seed 0's). Keyed by the batch alone,
        a run with ``--init-seed 7`` found seed 0's scores stored and handed them back as its own."""
        return self.key if int(init_seed) == 0 else f"{self.key}|init={int(init_seed)}"


def load_batch(space: str, dataset: str | None, spec: BatchSpec):
    """(inputs, targets) torch tensors for a network of ``space`` built for ``dataset``.

    Raises
    ------
    ZCPError
        The data path is missing or not a CIFAR directory / image folder, has too few images,
        or has labels the model's classifier cannot take.
    """
    import torch

    ds = dataset_of(space, dataset)
    n = int(spec.batch_size)
    if spec.data is None:
        gen = torch.Generator().manual_seed(int(spec.seed))
        try:
            x = torch.randn((n, 3, ds.resolution, ds.resolution), generator=gen)
        except (RuntimeError, MemoryError) as exc:  # --batch-size 99999999 was torch's allocator traceback
            if not looks_like_oom(exc):
                raise
            raise ZCPError(f"not enough memory for a batch of {n} {ds.name} images: {exc}; give a smaller "
                           "--batch-size") from None
        y = torch.randint(0, ds.n_classes, (n,), generator=gen)
        return x, y
    images, labels = _read_images(Path(spec.data), n, int(spec.seed))
    if labels.max() >= ds.n_classes:
        raise ZCPError(f"{spec.data} has labels up to {int(labels.max())} but a {ds.name} network has "
                       f"{ds.n_classes} classes; choose the matching --dataset")
    x = torch.from_numpy(((images - CIFAR_MEAN) / CIFAR_STD).transpose(0, 3, 1, 2).copy())
    if x.shape[-1] != ds.resolution or x.shape[-2] != ds.resolution:
        x = torch.nn.functional.interpolate(x, size=(ds.resolution, ds.resolution), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x.float(), torch.from_numpy(labels.astype(np.int64))


def _read_images(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, 3) float32 in [0, 1] and (n,) labels from a CIFAR directory or image folder."""
    if not path.exists():
        raise ZCPError(f"data path {path} does not exist")
    if not path.is_dir():
        raise ZCPError(f"data path {path} is not a directory: give a CIFAR python directory or an image folder")
    batches = sorted(path.glob("data_batch_*")) + sorted(path.glob("test_batch")) + \
        [p for p in (path / "train", path / "test") if p.is_file()]
    if batches:
        return _read_cifar(batches, n, seed)
    return _read_folder(path, n, seed)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's dicts of numpy arrays and lists, and refuses anything else (a pickle
    can otherwise run arbitrary code)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_cifar(files: list[Path], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    data, labels = [], []
    for file in files:
        try:
            with open(file, "rb") as fh:
                batch = _ArrayUnpickler(fh, encoding="bytes").load()
            raw = np.asarray(batch[b"data"], dtype=np.uint8)
            lab = batch.get(b"labels", batch.get(b"fine_labels"))
            if lab is None:
                raise KeyError("labels")
        except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError, AttributeError) as exc:
            raise ZCPError(f"{file} is not a CIFAR python batch file ({exc})") from None
        if raw.ndim != 2 or raw.shape[1] != 3 * 32 * 32:
            raise ZCPError(f"{file}: data has shape {raw.shape}, expected (N, 3072) CIFAR rows")
        data.append(raw)
        labels.append(np.asarray(lab, dtype=np.int64))
        if sum(len(d) for d in data) >= max(n, 10_000):
            break
    data_all, labels_all = np.concatenate(data), np.concatenate(labels)
    if len(data_all) < n:
        raise ZCPError(f"{files[0].parent} holds {len(data_all)} images, fewer than the batch size {n}")
    pick = np.sort(np.random.default_rng(seed).choice(len(data_all), size=n, replace=False))
    images = data_all[pick].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return images, labels_all[pick]


def _read_folder(root: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ZCPError(f"{root} is neither a CIFAR python directory (data_batch_*, test_batch, train, test) "
                       "nor an image folder (one sub-folder of images per class)")
    if len(files) < n:
        raise ZCPError(f"{root} holds {len(files)} images, fewer than the batch size {n}")
    try:
        from PIL import Image
    except ImportError:
        raise ZCPError("reading an image folder needs Pillow (pip install pillow)") from None
    pick = np.sort(np.random.default_rng(seed).choice(len(files), size=n, replace=False))
    images, labels = [], []
    side = None
    for i in pick:
        file, label = files[i]
        try:
            with Image.open(file) as img:
                img = img.convert("RGB")
                side = side or min(img.size)
                img = img.resize((side, side))
                images.append(np.asarray(img, dtype=np.float32) / 255.0)
        except OSError as exc:
            raise ZCPError(f"cannot read image {file}: {exc}") from None
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
