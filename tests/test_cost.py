"""Analytic FLOPs/params (spaces.cost) against counting on the built torch models."""
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spaces import ArchError, fbnet, nb201
from spaces.cost import flops_params
from spaces.fbnet_net import build_fbnet
from spaces.nb201_net import build_nb201

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _hook_counts(model: nn.Module, shape) -> tuple[int, int]:
    """MACs of Conv2d/Linear seen by forward hooks on one batch-1 pass, and parameter count."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            macs += output.numel() * module.in_channels * k_h * k_w // module.groups
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    return macs, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dataset,side", [("cifar10", 32), ("cifar100", 32), ("ImageNet16-120", 16)])
def test_nb201_analytic_equals_hooks(dataset, side):
    torch.set_num_threads(1)
    archs = [0, 1, 6111, 15624] + nb201.sample(3, seed=5)
    flops, params = flops_params("nb201", archs, dataset)
    for arch, f, p in zip(archs, flops, params):
        assert (f, p) == _hook_counts(build_nb201(arch, dataset), (1, 3, side, side)), arch


@pytest.mark.parametrize("dataset,side", [("cifar100", 32), ("imagenet", 224)])
def test_fbnet_analytic_equals_hooks(dataset, side):
    torch.set_num_threads(1)
    keys = fbnet.sample(3, seed=11) + [",".join(["skip"] * 22), ",".join(["k5_e6"] * 22)]
    if dataset == "imagenet":
        keys = keys[:2] + keys[-1:]  # 224x224 models are slower to run
    flops, params = flops_params("fbnet", keys, dataset)
    for key, f, p in zip(keys, flops, params):
        assert (f, p) == _hook_counts(build_fbnet(key, dataset), (1, 3, side, side)), key


def test_all_nb201_fast_and_consistent():
    start = time.perf_counter()
    flops, params = flops_params("nb201")
    elapsed_s = time.perf_counter() - start
    assert flops.shape == params.shape == (nb201.N_ARCHS,)
    assert elapsed_s < 2.0  # generous bound, it takes milliseconds; guards against a per-arch torch build
    by_string, _ = flops_params("nb201", [nb201.to_string(7)])
    assert by_string[0] == flops[7]
    # all-conv3x3 cell is the most expensive, all-'none' the cheapest
    conv3 = nb201.to_index("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert flops.argmax() == conv3 and params.argmax() == conv3


def test_params_match_public_tables():
    """Parameter counts equal NASLib's NB201 and nasflat's FBNet-CIFAR-100 tables exactly."""
    pd = pytest.importorskip("pandas")
    if not (SHARED / "fbnet_zcp.csv").exists():
        pytest.skip("shared data not present")
    z = pd.read_csv(SHARED / "fbnet_zcp.csv")
    _, params = flops_params("fbnet", z["op_idx_key"].tolist(), "cifar100")
    np.testing.assert_array_equal(params, z["params"].to_numpy())
    n = pd.read_csv(SHARED / "nb201_zcp_naslib_subset.csv")
    for dataset, rows in n.groupby("dataset"):
        _, params = flops_params("nb201", rows["arch_index"].to_numpy(), dataset)
        np.testing.assert_allclose(params / 1e6, rows["params"].to_numpy(), atol=1e-6)


def test_bad_input_names_choices():
    with pytest.raises(ArchError, match="valid datasets"):
        flops_params("nb201", [0], "imagenet")
    with pytest.raises(ArchError, match="0..15624"):
        flops_params("nb201", [15625])
    with pytest.raises(ArchError, match="22 layers"):
        flops_params("fbnet", [",".join(["skip"] * 21)])
    with pytest.raises(ArchError, match="valid spaces"):
        flops_params("darts", [0])


def test_importing_spaces_and_cost_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, spaces, spaces.cost; spaces.cost.flops_params('nb201', [0]); " \
           "sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
