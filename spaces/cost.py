"""Analytic FLOPs and parameter counts of NB201 and FBNet networks (numpy only).

The macro structure of both networks (datasets, stage widths, strides) is written down
here once, torch-free, and the torch builders (``spaces.nb201_net``, ``spaces.fbnet_net``)
read it from here, so the analytic counts and the built models cannot drift apart;
``tests/test_cost.py`` checks the two against forward hooks on the built model.

Conventions
-----------
- ``flops`` are multiply-accumulates (MACs) of the convolutions and linear layers for one
  image (batch 1). BatchNorm, ReLU, pooling, additions and channel shuffles are not counted.
- ``params`` are trainable parameters: conv weights, BatchNorm weight and bias, linear weight
  and bias. BatchNorm running statistics are buffers and not counted.
- Everything the network computes is counted, including NB201 edges whose result never
  reaches the cell output (the torch model computes them too).

Parameter counts equal the public tables exactly (NASLib's NB201 ``params``, nasflat's FBNet
CIFAR-100 ``params``). Their ``flops`` columns are 1-7 % (FBNet) and 1-68 % (NB201, pool-heavy
cells) higher because their counters also charge pooling and other element-wise work;
Spearman rho between theirs and ours is 0.9996 (FBNet) and 0.996 (NB201).

Speed: both spaces are sums of independent per-edge (NB201) or per-layer (FBNet) terms, so
a cached (edge/layer, op) cost table plus one fancy-indexing sum prices all 15,625 NB201
architectures in milliseconds.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from spaces import fbnet, nb201
from spaces.errors import ArchError


@dataclass(frozen=True)
class Dataset:
    """Input resolution and class count of a dataset a network is built for."""

    name: str
    resolution: int
    n_classes: int


NB201_DATASETS = {
    "cifar10": Dataset("cifar10", 32, 10),
    "cifar100": Dataset("cifar100", 32, 100),
    "ImageNet16-120": Dataset("ImageNet16-120", 16, 120),
}
FBNET_DATASETS = {
    "cifar100": Dataset("cifar100", 32, 100),
    "cifar10": Dataset("cifar10", 32, 10),
    "imagenet": Dataset("imagenet", 224, 1000),
}
DEFAULT_DATASET = {"nb201": "cifar10", "fbnet": "cifar100"}

# NB201 macro network: stem 16, stages of 5 cells at C = 16/32/64, ResNet reductions between.
NB201_STEM_C = 16
NB201_STAGE_C = (16, 32, 64)
NB201_CELLS_PER_STAGE = 5
NB201_CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}

# FBNet macro network (Wu et al. 2019, Table 1): (out channels, layers) per stage; strides in FBNetPlan.
FBNET_STEM_C = 16
FBNET_STAGES = ((16, 1), (24, 4), (32, 4), (64, 4), (112, 4), (184, 4), (352, 1))
FBNET_OP_SPECS = {  # op -> (depthwise kernel, expansion, groups of the 1x1 convs); skip -> None
    "k3_e1": (3, 1, 1), "k3_e1_g2": (3, 1, 2), "k3_e3": (3, 3, 1), "k3_e6": (3, 6, 1),
    "k5_e1": (5, 1, 1), "k5_e1_g2": (5, 1, 2), "k5_e3": (5, 3, 1), "k5_e6": (5, 6, 1),
    "skip": None,
}


@dataclass(frozen=True)
class FBNetPlan:
    """Strides and widths of the FBNet macro network for one input resolution.

    ImageNet (224x224) follows the paper: stem stride 2, stage strides 1,2,2,2,1,2,1 (total
    /32, 7x7 before the head), head conv1x1 to 1984 channels.

    CIFAR (32x32) follows HW-NAS-Bench's FBNet CIFAR model, which HELP's FBNet latency tables
    were measured with: stem stride 1 and the second stage at stride 1, i.e. strides
    1,1,2,2,1,2,1 (total /8, 4x4 before the head), and a 1504-channel head. With the ImageNet
    strides a 32x32 input would be 1x1 after stage 6, so the late layers would measure
    nothing but 1x1 convolutions; we take HW-NAS-Bench's choice so that our latencies stay
    comparable with HELP's. Our analytic counts with this plan equal the ``flops`` and
    ``params`` columns of ``../shared/data/fbnet_zcp.csv`` (tests/test_cost.py).
    """

    stem_stride: int
    stage_strides: tuple[int, ...]
    head_c: int

    def layers(self, resolution: int) -> list[tuple[int, int, int, int]]:
        """(c_in, c_out, stride, input side) of the 22 searchable layers."""
        side = _conv_out(resolution, 3, self.stem_stride, 1)
        c_in = FBNET_STEM_C
        out = []
        for (c_out, n_layers), stride in zip(FBNET_STAGES, self.stage_strides):
            for i in range(n_layers):
                s = stride if i == 0 else 1
                out.append((c_in, c_out, s, side))
                side = _conv_out(side, 1, s, 0)
                c_in = c_out
        return out


FBNET_PLANS = {
    "imagenet": FBNetPlan(stem_stride=2, stage_strides=(1, 2, 2, 2, 1, 2, 1), head_c=1984),
    "cifar": FBNetPlan(stem_stride=1, stage_strides=(1, 1, 2, 2, 1, 2, 1), head_c=1504),
}


def dataset_of(space: str, dataset: str | None = None) -> Dataset:
    """The Dataset for a space; None gives the space default (cifar10 / cifar100)."""
    table = _datasets_of(space)
    name = DEFAULT_DATASET[space] if dataset is None else dataset
    if name not in table:
        # accept case-insensitive names (imagenet16-120)
        matches = [k for k in table if k.lower() == str(name).lower()]
        if not matches:
            raise ArchError(f"unknown dataset {name!r} for {space}; valid datasets: {', '.join(table)}")
        name = matches[0]
    return table[name]


def fbnet_plan(dataset: str | None = None) -> FBNetPlan:
    ds = dataset_of("fbnet", dataset)
    return FBNET_PLANS["imagenet" if ds.name == "imagenet" else "cifar"]


def input_shape(space: str, dataset: str | None = None, batch_size: int = 1) -> tuple[int, int, int, int]:
    """NCHW input shape of a network of ``space`` built for ``dataset``."""
    ds = dataset_of(space, dataset)
    return (int(batch_size), 3, ds.resolution, ds.resolution)


def flops_params(space: str, keys=None, dataset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MACs and parameter counts of architectures, analytically.

    Parameters
    ----------
    space : {"nb201", "fbnet"}
    keys : sequence
        NB201: indices or arch strings (None = all 15,625 in index order). FBNet: arch keys
        (op names or op-index keys).
    dataset : str, optional
        NB201: cifar10 (default), cifar100, ImageNet16-120. FBNet: cifar100 (default),
        cifar10, imagenet.

    Returns
    -------
    flops, params : np.ndarray of int64, one entry per key, in order.

    Raises
    ------
    ArchError
        Unknown space, dataset or architecture.

    Examples
    --------
    >>> flops, params = flops_params("nb201", [0, 1])
    """
    ds = dataset_of(space, dataset)
    if space == "nb201":
        codes = _nb201_codes(keys)
        edge_flops, edge_params, base_flops, base_params = _nb201_tables(ds.name)
        return (base_flops + edge_flops[codes].sum(axis=1),
                base_params + edge_params[codes].sum(axis=1))
    if keys is None:
        raise ArchError("FBNet has 9^22 architectures: pass the arch keys to price")
    codes = fbnet.op_codes(list(keys)).astype(np.int64).reshape(-1, fbnet.N_LAYERS)
    layer_flops, layer_params, base_flops, base_params = _fbnet_tables(ds.name)
    rows = np.arange(fbnet.N_LAYERS)
    return (base_flops + layer_flops[rows, codes].sum(axis=1),
            base_params + layer_params[rows, codes].sum(axis=1))


def _datasets_of(space: str) -> dict[str, Dataset]:
    if space == "nb201":
        return NB201_DATASETS
    if space == "fbnet":
        return FBNET_DATASETS
    raise ArchError(f"unknown search space {space!r}; valid spaces: nb201, fbnet")


def _conv_out(side: int, kernel: int, stride: int, pad: int) -> int:
    return (side + 2 * pad - kernel) // stride + 1


def _conv(c_in: int, c_out: int, kernel: int, side_out: int, groups: int = 1, bn: bool = True):
    """(MACs, params) of a bias-free conv (plus its BatchNorm when ``bn``)."""
    weights = c_in * c_out * kernel * kernel // groups
    return weights * side_out * side_out, weights + (2 * c_out if bn else 0)


def _nb201_codes(keys) -> np.ndarray:
    if keys is None:
        return nb201.op_codes().astype(np.int64)
    arr = np.asarray(keys) if not isinstance(keys, str) else np.asarray([keys])
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= nb201.N_ARCHS):
            bad = arr[(arr < 0) | (arr >= nb201.N_ARCHS)][0]
            nb201.check_index(int(bad))
        return nb201.op_codes(arr.reshape(-1)).astype(np.int64)
    return nb201.op_codes([nb201.resolve(k) for k in keys]).astype(np.int64)


@functools.lru_cache(maxsize=None)
def _nb201_tables(dataset: str):
    """Per-(edge, op) cost summed over the 15 cells, plus the fixed rest of the network."""
    ds = NB201_DATASETS[dataset]
    sides = [ds.resolution // (2 ** s) for s in range(len(NB201_STAGE_C))]
    op_flops = np.zeros(len(nb201.OPS), dtype=np.int64)
    op_params = np.zeros(len(nb201.OPS), dtype=np.int64)
    for code, op in enumerate(nb201.OPS):
        kernel = NB201_CONV_KERNEL.get(op)
        if kernel is None:  # none, skip_connect, avg_pool_3x3: no MACs, no weights
            continue
        for c, side in zip(NB201_STAGE_C, sides):
            f, p = _conv(c, c, kernel, side)
            op_flops[code] += NB201_CELLS_PER_STAGE * f
            op_params[code] += NB201_CELLS_PER_STAGE * p
    # Every edge sees the same C and side, so the per-edge table is the per-op table.
    base = [_conv(3, NB201_STEM_C, 3, ds.resolution)]
    for c_in, c_out, side_out in zip(NB201_STAGE_C, NB201_STAGE_C[1:], sides[1:]):
        base.append(_conv(c_in, c_out, 3, side_out))             # conv_a, stride 2
        base.append(_conv(c_out, c_out, 3, side_out))            # conv_b
        base.append(_conv(c_in, c_out, 1, side_out, bn=False))   # shortcut: avgpool + conv1x1
    c_last = NB201_STAGE_C[-1]
    base.append((0, 2 * c_last))                                 # final BatchNorm
    base.append((c_last * ds.n_classes, c_last * ds.n_classes + ds.n_classes))  # classifier
    return op_flops, op_params, int(sum(f for f, _ in base)), int(sum(p for _, p in base))


def fbnet_block_cost(op: str, c_in: int, c_out: int, stride: int, side: int) -> tuple[int, int]:
    """(MACs, params) of one FBNet searchable layer on a ``side`` x ``side`` input."""
    spec = FBNET_OP_SPECS[op]
    if spec is None:
        if stride == 1 and c_in == c_out:
            return 0, 0
        return _conv(c_in, c_out, 1, _conv_out(side, 1, stride, 0))  # projection conv1x1 + BN
    kernel, expansion, groups = spec
    mid = c_in * expansion
    side_out = _conv_out(side, kernel, stride, kernel // 2)
    parts = [_conv(c_in, mid, 1, side, groups=groups),
             _conv(mid, mid, kernel, side_out, groups=mid),
             _conv(mid, c_out, 1, side_out, groups=groups)]
    return sum(f for f, _ in parts), sum(p for _, p in parts)


@functools.lru_cache(maxsize=None)
def _fbnet_tables(dataset: str):
    ds = FBNET_DATASETS[dataset]
    plan = fbnet_plan(dataset)
    layers = plan.layers(ds.resolution)
    flops = np.zeros((fbnet.N_LAYERS, len(fbnet.OPS)), dtype=np.int64)
    params = np.zeros_like(flops)
    for layer, (c_in, c_out, stride, side) in enumerate(layers):
        for code, op in enumerate(fbnet.OPS):
            flops[layer, code], params[layer, code] = fbnet_block_cost(op, c_in, c_out, stride, side)
    side = _conv_out(ds.resolution, 3, plan.stem_stride, 1)
    base = [_conv(3, FBNET_STEM_C, 3, side)]
    for _, _, stride, _ in layers:
        side = _conv_out(side, 1, stride, 0)
    c_last = FBNET_STAGES[-1][0]
    base.append(_conv(c_last, plan.head_c, 1, side))
    base.append((plan.head_c * ds.n_classes, plan.head_c * ds.n_classes + ds.n_classes))
    return flops, params, int(sum(f for f, _ in base)), int(sum(p for _, p in base))
