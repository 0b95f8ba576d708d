"""Learned predictor building blocks: nets, MLPPredictor, MultiDevicePredictor (estimator contract)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_get_params_invariance, check_no_attributes_set_in_init

from predictors.base import NotFittedError
from predictors.mlp import MLPPredictor, pairwise_rank_loss, train
from predictors.multidevice import MultiDevicePredictor
from predictors.nets import CellGraphEncoder, DeviceConditionedNet, binary_codes
from spaces import nb201

torch.set_num_threads(1)


def _toy(n=400, seed=0):
    """NB201 Vec encodings with an additive positive 'latency' (conv-heavy cells are slower)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(nb201.N_ARCHS, n, replace=False)
    X = nb201.vec_encoding(idx).astype(np.float64)
    cost = np.tile([0.0, 0.2, 1.0, 3.0, 0.5], 6)
    y = 2.0 + X @ cost + rng.normal(0, 0.05, n)
    return X, y, cost


@pytest.mark.parametrize("est", [MLPPredictor(), MLPPredictor(64, n_layers=2, loss="rank", random_state=3),
                                 MultiDevicePredictor(), MultiDevicePredictor(representation="sample")])
def test_constructor_only_stores_and_clone_works(est):
    check_no_attributes_set_in_init(type(est).__name__, est)
    check_get_params_invariance(type(est).__name__, est)
    assert clone(est).get_params() == est.get_params()
    assert not [a for a in vars(est) if a.endswith("_")]


def test_mlp_not_fitted_errors_say_what_to_call():
    X, _, _ = _toy(20)
    for call in (MLPPredictor().predict, MLPPredictor().transform):
        with pytest.raises(NotFittedError, match="fit"):
            call(X)
    with pytest.raises(ValueError):  # NotFittedError is a ValueError too (sklearn convention)
        MLPPredictor().predict(X)


@pytest.mark.parametrize("loss", ["mse", "l1", "rank"])
def test_mlp_learns_an_additive_latency_with_every_loss(loss):
    X, y, _ = _toy()
    model = MLPPredictor(64, n_layers=3, lr=3e-3, epochs=30, loss=loss, random_state=0)
    assert model.fit(X[:300], y[:300]) is model
    rho = spearmanr(model.predict(X[300:]), y[300:]).statistic
    assert rho > 0.9, f"{loss}: rho {rho:.3f}"
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    assert model.transform(X[:5]).shape == (5, 64)


def test_mlp_is_deterministic_given_random_state_and_checks_input():
    X, y, _ = _toy(120)
    a = MLPPredictor(32, n_layers=2, epochs=3, random_state=7).fit(X, y).predict(X)
    b = MLPPredictor(32, n_layers=2, epochs=3, random_state=7).fit(X, y).predict(X)
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="unknown loss 'huber'; valid losses: mse, l1, rank"):
        MLPPredictor(loss="huber").fit(X, y)
    with pytest.raises(ValueError, match="positive"):
        MLPPredictor(epochs=1).fit(X, -y)
    with pytest.raises(ValueError, match="rows"):
        MLPPredictor(epochs=1).fit(X, y[:-1])
    model = MLPPredictor(16, n_layers=2, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="columns"):
        model.predict(X[:, :10])


def test_pairwise_rank_loss_prefers_the_right_order():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    right = pairwise_rank_loss(torch.tensor([0.1, 0.2, 0.3, 0.4]) * 10, target)
    wrong = pairwise_rank_loss(torch.tensor([0.4, 0.3, 0.2, 0.1]) * 10, target)
    assert right < 0.25 < 1.5 < wrong
    assert float(pairwise_rank_loss(torch.zeros(3), torch.ones(3))) == 0.0  # all ties: no pairs


def test_binary_index_and_embedding_row_copy():
    np.testing.assert_array_equal(binary_codes(torch.tensor([5]), bits=4).numpy(), [[1, 0, 1, 0]])
    net = DeviceConditionedNet(30, 3, "embedding")
    new = net.add_device(init_from=1)
    assert new == 3 and net.embedding.weight.shape == (4, 8)
    torch.testing.assert_close(net.embedding.weight[3], net.embedding.weight[1])
    index_net = DeviceConditionedNet(30, 3, "index")
    assert index_net.add_device() == 3  # the paper: next free index
    with pytest.raises(ValueError, match="valid: embedding, index, sample"):
        DeviceConditionedNet(30, 3, "onehot")


def test_cell_graph_encoder_ignores_none_edges_and_encodes_cells():
    enc = CellGraphEncoder(out_dim=16)
    codes = torch.as_tensor(nb201.op_codes([0, 1, 2]).astype(np.int64))
    assert enc(codes).shape == (3, 16)
    # a cell whose every edge is 'none' gives the same output as another all-'none' cell: nothing flows
    none = torch.zeros(2, 6, dtype=torch.long)
    out = enc(none)
    torch.testing.assert_close(out[0], out[1])


def _two_device_rows():
    X, y, cost = _toy(300)
    y2 = 1.0 + X @ (cost[::-1] + 0.1)  # a second, differently shaped device
    return np.vstack([X, X]), np.concatenate([y, y2]), ["gpu"] * 300 + ["cpu"] * 300, X, y


@pytest.mark.parametrize("representation", ["embedding", "index", "sample"])
def test_multidevice_fit_predict_and_adapt_without_mutation(representation):
    X2, y2, devices, X, y = _two_device_rows()
    samples = {"gpu": y[:10], "cpu": y2[300:310], "new": y[:10] * 1.3} if representation == "sample" else None
    model = MultiDevicePredictor(64, n_layers=3, representation=representation, lr=3e-3, epochs=40,
                                 random_state=0).fit(X2, y2, devices, samples={k: v for k, v in (samples or {}).items()
                                                                               if k != "new"} or None)
    assert spearmanr(model.predict(X, "gpu"), y).statistic > 0.9
    before = {k: v.clone() for k, v in model.net_.state_dict().items()}
    adapted = model.adapt(X[:20], y[:20] * 1.3, "new", init_from="gpu" if representation == "embedding" else None,
                          sample=None if samples is None else samples["new"], epochs=10)
    assert adapted is not model and model.devices_ == ["gpu", "cpu"] and "new" in adapted.devices_
    for k, v in model.net_.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert spearmanr(adapted.predict(X[20:], "new"), y[20:]).statistic > 0.85
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        model.predict(X, "tpu")
    with pytest.raises(ValueError, match="already known"):
        model.adapt(X[:5], y[:5], "gpu")


def test_multidevice_eq1_initial_row_is_the_source_row():
    X2, y2, devices, X, y = _two_device_rows()
    model = MultiDevicePredictor(32, n_layers=2, epochs=2, random_state=0).fit(X2, y2, devices)
    adapted = model.adapt(X[:5], y[:5], "new", init_from="cpu", epochs=0)
    torch.testing.assert_close(adapted.net_.embedding.weight[2], model.net_.embedding.weight[1])
    with pytest.raises(NotFittedError, match="fit"):
        MultiDevicePredictor().predict(X, "gpu")


def test_training_runs_on_one_thread_and_restores_the_setting():
    """A second torch thread only waits for a core at this net size; the caller's setting comes back after."""
    X, y, _ = _toy(300)
    seen = []

    def forward(net, x):
        seen.append(torch.get_num_threads())
        return net(x)

    fits = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        try:
            est = MLPPredictor(32, n_layers=2, epochs=2, batch_size=64, random_state=0)
            est.fit(X, y)  # under the caller's setting; then once more through a forward that records it
            train(est.net_, forward, [torch.from_numpy(X.astype(np.float32))], torch.from_numpy(y.astype(np.float32)),
                  loss="mse", lr=1e-3, epochs=1, batch_size=64, weight_decay=0.0,
                  generator=torch.Generator().manual_seed(0))
            assert torch.get_num_threads() == threads
            fits.append(est.predict(X))
        finally:
            torch.set_num_threads(1)
    assert set(seen) == {1}
    np.testing.assert_array_equal(fits[0], fits[1])
