"""PyTorch builder of the standard NAS-Bench-201 macro network (imports torch).

Stem conv3x3 (16) + BN; three stages of 5 cells at C = 16/32/64 with a ResNet basic block
(stride 2) between stages; final BN + ReLU, global average pool, linear classifier.
Cell: node j = sum over i < j of op_ij(node i), cell output = node 3.
Widths and datasets come from ``spaces.cost`` so the analytic counts match this model.
"""
from __future__ import annotations

import torch
from torch import nn

from spaces import nb201
from spaces.cost import NB201_CELLS_PER_STAGE, NB201_CONV_KERNEL, NB201_STAGE_C, NB201_STEM_C, dataset_of

__all__ = ["NB201Network", "build_nb201"]


class ReLUConvBN(nn.Sequential):
    """ReLU -> bias-free Conv -> BatchNorm, the NB201 ``nor_conv`` op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: an all-zero tensor of the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, c: int) -> nn.Module:
    if op in NB201_CONV_KERNEL:
        return ReLUConvBN(c, c, NB201_CONV_KERNEL[op])
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "skip_connect":
        return nn.Identity()
    if op == "none":
        return Zero()
    raise ValueError(f"unknown NB201 op {op!r}")  # unreachable: ops are validated by spaces.nb201


class Cell(nn.Module):
    """One NB201 cell: 6 edge ops on a 4-node DAG, edges in arch-string order."""

    def __init__(self, ops: tuple[str, ...], c: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, c) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for node in range(1, nb201.N_NODES):
            total = None
            for src in range(node):
                out = self.edges[k](nodes[src])
                total = out if total is None else total + out
                k += 1
            nodes.append(total)
        return nodes[-1]


class ResNetReduction(nn.Module):
    """ResNet basic block with stride 2: two ReLU-Conv3x3-BN, shortcut avgpool2 + conv1x1."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NB201 macro network for one cell architecture.

    Parameters
    ----------
    ops : tuple of str
        The 6 edge ops in arch-string order (``spaces.nb201.ops_of``).
    n_classes : int
        Classifier outputs (10, 100 or 120).
    """

    def __init__(self, ops: tuple[str, ...], n_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, NB201_STEM_C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(NB201_STEM_C))
        layers: list[nn.Module] = []
        c_prev = NB201_STEM_C
        for stage, c in enumerate(NB201_STAGE_C):
            if stage > 0:
                layers.append(ResNetReduction(c_prev, c))
            layers.extend(Cell(ops, c) for _ in range(NB201_CELLS_PER_STAGE))
            c_prev = c
        self.cells = nn.Sequential(*layers)
        self.last_act = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_act(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_nb201(arch, dataset: str | None = None) -> NB201Network:
    """NB201 network for an index, decimal string or arch string; dataset defaults to cifar10.

    Raises ``ArchError`` (naming the valid choices) for a bad architecture or dataset.
    """
    ds = dataset_of("nb201", dataset)
    return NB201Network(nb201.ops_of(nb201.resolve(arch)), ds.n_classes)
