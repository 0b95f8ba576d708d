"""Zero-cost proxies on small models with known answers, and on real NB201/FBNet networks."""
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from predictors.zcp import BatchSpec, ProxyStore, ZCPError, check_proxies, load_batch
from predictors.zcp import proxies as zp
from spaces import fbnet
from spaces.cost import flops_params
from spaces.fbnet_net import build_fbnet
from spaces.nb201_net import build_nb201
from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse)


def _batch(n=4, classes=10, side=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, 3, side, side), generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_params_and_flops_exact_on_a_tiny_convnet():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(2, 3, 5, 5)
    assert zp.params(model) == 3 * 4 * 9 + 2 * 4 + 4 * 2 + 2
    assert zp.flops(model, x) == 5 * 5 * 4 * 3 * 9 + 4 * 2


@pytest.mark.parametrize("space,key", [("nb201", 1), ("nb201", 6111), ("fbnet", fbnet.sample(1, 3)[0])])
def test_flops_and_params_match_the_analytic_counts(space, key):
    model = build_nb201(key) if space == "nb201" else build_fbnet(key)
    x, _ = _batch(2, side=32)
    flops, params = flops_params(space, [key])
    assert zp.flops(model, x) == flops[0]
    assert zp.params(model) == params[0]


def test_synflow_of_a_two_layer_linear_net_is_twice_the_flow():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    w1, w2 = model[0].weight.detach().abs().double(), model[1].weight.detach().abs().double()
    flow = float(torch.ones(2, dtype=torch.float64) @ w2 @ w1 @ torch.ones(3, dtype=torch.float64))
    # each layer's sum of w * dR/dw equals R for a linear network (Tanaka et al. 2020, conservation)
    assert zp.synflow(model, torch.randn(5, 3)) == pytest.approx(2 * flow, rel=1e-12)


def test_synflow_is_positive_and_ignores_the_data():
    torch.manual_seed(0)
    model = build_nb201(1, "ImageNet16-120")
    a, _ = _batch(4, seed=1, side=16)
    b, _ = _batch(4, seed=2, side=16)
    s_a, _ = zp.score_model(model, a, None, ["synflow"])
    s_b, _ = zp.score_model(model, b * 10, None, ["synflow"])
    assert s_a["synflow"] > 0
    assert s_a["synflow"] == s_b["synflow"]


def test_jacov_of_a_linear_net_is_the_fully_correlated_score():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(5, 3, 2, 2)
    k = 1e-5
    # identical jacobian rows: correlation matrix of ones, eigenvalues 5 and four zeros
    expected = -(math.log(5 + k) + 1 / (5 + k) + 4 * (math.log(k) + 1 / k))
    assert zp.jacov(model, x) == pytest.approx(expected, rel=1e-6)


def test_nwot_on_a_known_relu_code():
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    # codes 10, 11, 00: K = units - Hamming = [[2,1,1],[1,2,0],[1,0,2]], det 4
    assert zp.nwot(nn.Sequential(nn.ReLU()), x) == pytest.approx(math.log(4.0))


def test_gradient_proxies_are_finite_on_nb201_and_leave_the_model_untouched():
    torch.manual_seed(0)
    model = build_nb201(6111, "ImageNet16-120")  # 16x16 input: a quarter of the work
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch(4, classes=120, side=16)
    scores, seconds = zp.score_model(model, x, y)
    assert set(scores) == set(zp.PROXY_NAMES) == set(seconds)
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert scores["snip"] > 0 and scores["grad_norm"] > 0 and scores["fisher"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_zen_is_data_free_and_repeatable():
    torch.manual_seed(0)
    model = build_nb201(1)
    a, _ = _batch(4, seed=1)
    b, _ = _batch(4, seed=2)
    assert zp.score_model(model, a, None, ["zen"])[0] == zp.score_model(model, b, None, ["zen"])[0]


def test_proxies_on_a_disconnected_nb201_cell_are_finite_or_filled():
    from predictors.zcp.table import fill_nonfinite
    import pandas as pd

    torch.manual_seed(0)
    # every edge into node 3 is 'none': the cell output is zero
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    x, y = _batch(4, side=16, classes=120)
    scores, _ = zp.score_model(build_nb201(arch, "ImageNet16-120"), x, y, ["jacov", "nwot", "snip", "synflow"])
    assert math.isfinite(scores["jacov"]) and math.isfinite(scores["snip"])
    filled = fill_nonfinite(pd.DataFrame({"zen": [1.0, -np.inf, np.nan, 3.0]}))
    assert filled["zen"].tolist() == [1.0, 1.0, 1.0, 3.0]


def test_unknown_proxy_and_tiny_batch_are_refused():
    with pytest.raises(ZCPError, match="valid proxies: fisher"):
        check_proxies(["snip", "epe"])
    with pytest.raises(ZCPError, match="at least 2"):
        BatchSpec(batch_size=1)


def test_a_proxy_named_twice_is_computed_and_stored_once(tmp_path):
    """--proxies flops,flops made two 'flops' columns (a ValueError traceback writing --out, after the run) and, in
    the store, an arch never done: count(DISTINCT proxy) = 1 is not the 2 names asked."""
    assert check_proxies(["flops", "params", "flops"]) == ("flops", "params")
    with ProxyStore(tmp_path / "lab.db") as store:
        store.add("nb201", "cifar10", "synthetic", 7, {"flops": 1.0, "params": 2.0}, {})
        assert store.done_archs("nb201", "cifar10", "synthetic", check_proxies(["flops", "flops"])) == {"7"}


# -- input batches ------------------------------------------------------------------------------
def test_synthetic_batch_is_seeded_and_sized_for_the_dataset():
    x, y = load_batch("nb201", "ImageNet16-120", BatchSpec(batch_size=3, seed=5))
    x2, _ = load_batch("nb201", "ImageNet16-120", BatchSpec(batch_size=3, seed=5))
    assert x.shape == (3, 3, 16, 16) and torch.equal(x, x2) and int(y.max()) < 120


def _write_cifar(folder, n=12, label_key=b"labels", max_label=9):
    folder.mkdir()
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             label_key: list(rng.integers(0, max_label + 1, size=n))}
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump(batch, fh)


def test_cifar_python_directory(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    x, y = load_batch("nb201", "cifar10", BatchSpec(str(tmp_path / "cifar-10-batches-py"), batch_size=8))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    # resized for ImageNet16-120's 16x16 input
    x16, _ = load_batch("nb201", "ImageNet16-120", BatchSpec(str(tmp_path / "cifar-10-batches-py"), batch_size=4))
    assert x16.shape == (4, 3, 16, 16)


def test_cifar100_labels_do_not_fit_a_cifar10_head(tmp_path):
    _write_cifar(tmp_path / "c100", label_key=b"fine_labels", max_label=99)
    with pytest.raises(ZCPError, match="choose the matching --dataset"):
        load_batch("nb201", "cifar10", BatchSpec(str(tmp_path / "c100"), batch_size=12))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    (tmp_path / "evil").mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil" / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": [0]}, fh)
    with pytest.raises(ZCPError, match="not a CIFAR python batch"):
        load_batch("nb201", "cifar10", BatchSpec(str(tmp_path / "evil"), batch_size=2))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    x, y = load_batch("nb201", "cifar10", BatchSpec(str(tmp_path), batch_size=4, seed=1))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= {0, 1}
    with pytest.raises(ZCPError, match="fewer than the batch size"):
        load_batch("nb201", "cifar10", BatchSpec(str(tmp_path), batch_size=10))


def test_bad_data_paths(tmp_path):
    with pytest.raises(ZCPError, match="does not exist"):
        load_batch("nb201", None, BatchSpec(str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZCPError, match="neither a CIFAR python directory"):
        load_batch("nb201", None, BatchSpec(str(tmp_path / "empty")))
