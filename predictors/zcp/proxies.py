"""The 12 zero-cost proxies, each written from its original definition (imports torch).

Every proxy is a function ``proxy(model, inputs, targets) -> float`` that may change ``model``
(weights made positive, re-initialised, cast to double): pass a fresh model or a deep copy
(:func:`score_model` does). ``inputs`` is an NCHW float batch, ``targets`` its class labels.
Gradient proxies run the model in train mode (BatchNorm on batch statistics), as the papers do
at initialisation. "Weights" are the weights of every ``Conv2d`` and ``Linear`` layer, the
prunable parameters of the pruning-at-initialisation papers.

Data-independent: ``flops``, ``params``, ``l2_norm`` (no input at all), ``synflow`` (an all-ones
input) and ``zen`` (Gaussian inputs from a fixed seed); the others read the batch.

A proxy may return a non-finite value for a degenerate network (a jacobian or Zen's feature
difference that is exactly zero because the output does not depend on the input); the caller
decides what to do with it (``predictors.zcp.table`` fills with the column's worst value).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from predictors.zcp.names import DATA_INDEPENDENT, PROXY_NAMES, check_proxies

__all__ = ["DATA_INDEPENDENT", "PROXIES", "PROXY_NAMES", "fisher", "flops", "grad_norm", "grasp", "jacov",
           "l2_norm", "nwot", "params", "plain", "score_model", "snip", "synflow", "zen"]


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _loss_backward(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(inputs), targets).backward()


def params(model: nn.Module, inputs=None, targets=None) -> float:
    """Number of trainable parameters (the "params" baseline of Ning et al. 2021 /
    NAS-Bench-Suite-Zero). BatchNorm running statistics are buffers and do not count."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


def flops(model: nn.Module, inputs: torch.Tensor, targets=None) -> float:
    """Multiply-accumulates of the Conv2d and Linear layers for one image (baseline of
    Abdelfattah et al. 2021 / NAS-Bench-Suite-Zero), counted by forward hooks on one pass of a
    single zero image of the batch's shape; the convention of ``spaces.cost``."""
    macs = 0

    def hook(module, _inp, out):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            macs += out.numel() * module.in_channels * k_h * k_w // module.groups
        else:
            macs += out.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in _layers(model)]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *inputs.shape[1:]), dtype=inputs.dtype))
    finally:
        for h in handles:
            h.remove()
    return float(macs)


def l2_norm(model: nn.Module, inputs=None, targets=None) -> float:
    """Sum over layers of the L2 norm of the weights at initialisation (Abdelfattah et al. 2021,
    "Zero-Cost Proxies for Lightweight NAS", baseline)."""
    with torch.no_grad():
        return float(sum(m.weight.norm(p=2) for m in _layers(model)))


def grad_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Sum over layers of the L2 norm of the cross-entropy loss gradient w.r.t. the weights
    (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS")."""
    _loss_backward(model, inputs, targets)
    return float(sum(m.weight.grad.norm(p=2) for m in _layers(model) if m.weight.grad is not None))


def plain(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Sum of gradient x weight (first-order Taylor saliency without the absolute value;
    Mozer & Smolensky 1989 as used by Abdelfattah et al. 2021)."""
    _loss_backward(model, inputs, targets)
    with torch.no_grad():
        return float(sum((m.weight.grad * m.weight).sum() for m in _layers(model) if m.weight.grad is not None))


def snip(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """SNIP connection sensitivity |dL/dw * w| summed over all weights (Lee et al. 2019,
    "SNIP: Single-shot Network Pruning based on Connection Sensitivity")."""
    _loss_backward(model, inputs, targets)
    with torch.no_grad():
        return float(sum((m.weight.grad * m.weight).abs().sum() for m in _layers(model) if m.weight.grad is not None))


def grasp(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """GraSP: sum of -w * (H g) with H the loss Hessian and g the loss gradient (Wang et al.
    2020, "Picking Winning Tickets Before Training by Preserving Gradient Flow"); temperature 1,
    as in Abdelfattah et al. 2021. H g is the gradient of g . stop_grad(g)."""
    model.train()
    model.zero_grad(set_to_none=True)
    weights = [m.weight for m in _layers(model)]
    loss = F.cross_entropy(model(inputs), targets)
    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    z = sum((g * g.detach()).sum() for g in grads if g is not None)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:
        return 0.0
    hess_grads = torch.autograd.grad(z, weights, allow_unused=True)
    with torch.no_grad():
        return float(sum((-w * hg).sum() for w, hg in zip(weights, hess_grads) if hg is not None))


def fisher(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fisher pruning saliency of every conv output channel, summed (Theis et al. 2018, "Faster
    gaze prediction with dense networks and Fisher pruning"; as a NAS proxy: Turner et al. 2020,
    "BlockSwap"): for activation a with loss gradient g, channel c scores
    1/(2N) sum_n (sum_hw a g)^2."""
    acts: list[torch.Tensor] = []

    def keep(_module, _inp, out):
        if out.requires_grad:
            out.retain_grad()
            acts.append(out)

    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        _loss_backward(model, inputs, targets)
    finally:
        for h in handles:
            h.remove()
    total = 0.0
    with torch.no_grad():
        for a in acts:
            if a.grad is None:
                continue
            per_channel = (a * a.grad).sum(dim=(2, 3))  # N x C
            total += float(0.5 * per_channel.pow(2).mean(dim=0).sum())
    return total


def jacov(model: nn.Module, inputs: torch.Tensor, targets=None) -> float:
    """Jacobian covariance score (Mellor et al. 2021 v1, "Neural Architecture Search without
    Training", arXiv:2006.04647v1): J = d(sum of outputs)/d(input) per image, C = correlation
    of the rows of J, score = -sum_i [log(v_i + k) + 1/(v_i + k)] over C's eigenvalues, k=1e-5.

    An image whose jacobian row is constant (the output ignores the input) has no defined
    correlation; it is taken as perfectly correlated with every other (the worst case), so
    such networks get the lowest scores instead of NaN.
    """
    model.train()
    model.zero_grad(set_to_none=True)
    x = inputs.detach().clone().requires_grad_(True)
    out = model(x)
    out.backward(torch.ones_like(out))
    jac = x.grad.reshape(len(x), -1).double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(jac)
    corr = np.where(np.isfinite(corr), corr, 1.0)
    eig = np.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-np.sum(np.log(np.abs(eig) + k) + 1.0 / (np.abs(eig) + k)))


def nwot(model: nn.Module, inputs: torch.Tensor, targets=None) -> float:
    """NASWOT (Mellor et al. 2021 v2, ICML, "Neural Architecture Search without Training"):
    binary ReLU activation codes c per image; K = c c^T + (1-c)(1-c)^T summed over ReLUs
    (= number of units minus Hamming distance); score = log |det K|."""
    n = len(inputs)
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def accumulate(_module, inp, _out):
        code = (inp[0].detach() > 0).reshape(n, -1).double()
        kernel.add_(code @ code.T + (1.0 - code) @ (1.0 - code).T)

    handles = [m.register_forward_hook(accumulate) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model.train()
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    _sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet)


def synflow(model: nn.Module, inputs: torch.Tensor, targets=None) -> float:
    """SynFlow (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
    conserving synaptic flow"): with every parameter replaced by its absolute value, in double
    precision, R = 1^T f(1) for an all-ones input; score = sum over weights of w * dR/dw.
    BatchNorm uses its initial running statistics (eval mode), so the score is data-free."""
    model.double()
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad(set_to_none=True)
    out = model(torch.ones((1, *inputs.shape[1:]), dtype=torch.float64))
    out.sum().backward()
    with torch.no_grad():
        return float(sum((m.weight * m.weight.grad).sum() for m in _layers(model) if m.weight.grad is not None))


def _feature_input(model: nn.Module) -> nn.Module:
    """The last global pooling layer: Zen-score reads the feature map it receives."""
    pools = [m for m in model.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    if not pools:
        raise ValueError("zen needs a network with a global pooling layer (AdaptiveAvgPool2d)")
    return pools[-1]


def zen(model: nn.Module, inputs: torch.Tensor, targets=None, *, alpha: float = 0.01, seed: int = 0) -> float:
    """Zen-score (Lin et al. 2021, "Zen-NAS: A Zero-Shot NAS for High-Performance Deep Image
    Recognition"): weights re-initialised from N(0, 1), BatchNorm in train mode, Gaussian inputs
    x and perturbations e; Delta = E ||f(x) - f(x + alpha e)||_F on the pre-pooling feature map
    f; score = log Delta + sum over BN layers of log sqrt(mean over channels of the batch
    variance (+ BN eps)). Data-free: x and e come from ``seed``, not from ``inputs``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                if m.bias is not None:
                    m.bias.zero_()
    x = torch.randn(inputs.shape, generator=gen)
    e = torch.randn(inputs.shape, generator=gen)
    feats: list[torch.Tensor] = []
    bn_log_std: list[float] = []
    record_bn = [True]

    def grab(_module, inp):
        feats.append(inp[0])

    def bn_stat(module, inp):
        if record_bn[0]:
            var = inp[0].var(dim=(0, 2, 3), unbiased=False).mean()
            bn_log_std.append(0.5 * math.log(float(var) + module.eps))

    handles = [_feature_input(model).register_forward_pre_hook(grab)]
    handles += [m.register_forward_pre_hook(bn_stat) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        model.train()
        with torch.no_grad():
            model(x)
            record_bn[0] = False
            model(x + alpha * e)
    finally:
        for h in handles:
            h.remove()
    delta = float((feats[0] - feats[1]).flatten(1).norm(dim=1).mean())
    with np.errstate(divide="ignore"):
        return float(np.log(delta) + sum(bn_log_std))


PROXIES: dict[str, Callable] = {
    "fisher": fisher, "flops": flops, "grad_norm": grad_norm, "grasp": grasp, "jacov": jacov,
    "l2_norm": l2_norm, "nwot": nwot, "params": params, "plain": plain, "snip": snip, "synflow": synflow,
    "zen": zen,
}
if tuple(PROXIES) != PROXY_NAMES:  # one list of names, checked at import
    raise RuntimeError("predictors.zcp.names and proxies disagree")


def score_model(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, proxies=None,
                *, clock=time.perf_counter) -> tuple[dict[str, float], dict[str, float]]:
    """Every proxy in ``proxies`` on a deep copy of ``model``; (scores, seconds per proxy).

    ``model`` itself is left untouched, so each proxy sees the same initial weights.
    """
    scores, seconds = {}, {}
    for name in check_proxies(proxies):
        work = copy.deepcopy(model)
        start = clock()
        scores[name] = float(PROXIES[name](work, inputs, targets))
        seconds[name] = clock() - start
        del work
    return scores, seconds
