"""PyTorch builder of the FBNet macro network (imports torch).

Stem conv3x3 (16) + BN + ReLU; 22 searchable layers in stages of 16(1) 24(4) 32(4) 64(4)
112(4) 184(4) 352(1) channels (Wu et al. 2019, Table 1); head conv1x1 + BN + ReLU; global
average pool; linear classifier. Strides and head width depend on the input resolution
(``spaces.cost.FBNetPlan``):

- ImageNet 224x224: the paper's stem stride 2 and stage strides 1,2,2,2,1,2,1, head 1984.
- CIFAR 32x32: HW-NAS-Bench's FBNet CIFAR model (the one HELP's FBNet latencies were
  measured with) uses stem stride 1 and stage strides 1,1,2,2,1,2,1 (32 -> 4x4 at the end
  instead of collapsing to 1x1), head 1504. We chose the same so that our measurements are
  comparable with HELP's; the parameter counts of this model equal the ``params`` column
  of ``fbnet_zcp.csv`` for all 5,000 HELP architectures.

Blocks ``kK_eE[_g2]``: 1x1 expand to ``E * c_in`` channels (2 groups for ``_g2``, followed by a
channel shuffle) -> BN ReLU -> depthwise KxK (stride) -> BN ReLU -> 1x1 project (2 groups for
``_g2``) -> BN, plus the input when stride is 1 and channels are kept.
``skip``: identity when stride is 1 and channels are kept; otherwise the smallest projection
that matches the shape: conv1x1 with the layer's stride + BN + ReLU (as HW-NAS-Bench does,
so it prices the same as the measured model).
"""
from __future__ import annotations

import torch
from torch import nn

from spaces import fbnet
from spaces.cost import FBNET_OP_SPECS, FBNET_STAGES, FBNET_STEM_C, dataset_of, fbnet_plan

__all__ = ["FBNetNetwork", "build_fbnet"]


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups so grouped 1x1 convs mix information."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class InvertedResidual(nn.Module):
    """FBNet block: 1x1 expand, depthwise KxK, 1x1 project, residual when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expansion: int, groups: int):
        super().__init__()
        mid = c_in * expansion
        expand = [conv_bn(c_in, mid, 1, groups=groups)]
        if groups > 1:
            expand.append(ChannelShuffle(groups))
        self.expand = nn.Sequential(*expand)
        self.depthwise = conv_bn(mid, mid, kernel, stride=stride, groups=mid)
        self.project = conv_bn(mid, c_out, 1, groups=groups, relu=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


def make_layer(op: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    spec = FBNET_OP_SPECS[op]
    if spec is None:
        if stride == 1 and c_in == c_out:
            return nn.Identity()
        return conv_bn(c_in, c_out, 1, stride=stride)
    kernel, expansion, groups = spec
    return InvertedResidual(c_in, c_out, stride, kernel, expansion, groups)


class FBNetNetwork(nn.Module):
    """The FBNet macro network for one 22-layer architecture.

    Parameters
    ----------
    ops : tuple of str
        The 22 op names, layer 0 first (``spaces.fbnet.parse``).
    dataset : str
        cifar100, cifar10 or imagenet; sets strides, head width and class count.
    """

    def __init__(self, ops: tuple[str, ...], dataset: str):
        super().__init__()
        ds = dataset_of("fbnet", dataset)
        plan = fbnet_plan(ds.name)
        self.stem = conv_bn(3, FBNET_STEM_C, 3, stride=plan.stem_stride)
        self.layers = nn.Sequential(*(
            make_layer(op, c_in, c_out, stride)
            for op, (c_in, c_out, stride, _) in zip(ops, plan.layers(ds.resolution))
        ))
        self.head = conv_bn(FBNET_STAGES[-1][0], plan.head_c, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(plan.head_c, ds.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_fbnet(key: str, dataset: str | None = None) -> FBNetNetwork:
    """FBNet network for an arch key (op names or op-index key); dataset defaults to cifar100.

    Raises ``ArchError`` (naming the valid choices) for a bad key or dataset.
    """
    ds = dataset_of("fbnet", dataset)
    return FBNetNetwork(fbnet.parse(key), ds.name)
