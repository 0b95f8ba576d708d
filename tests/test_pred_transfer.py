"""The paper's TL method (Eq. 1 + fine-tuning, encodings, device representations) and phys_bayes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from predictors import data, protocol, recommended, registry, tasks
from predictors.base import NotFittedError, TrainTables
from predictors.baselines import bayes_linear
from predictors.recommended import (DEFAULT_GROUPS, PhysBayes, d_optimal, group_prior_root, positive_ms,
                                   grid_coefficients, grid_weights, robust_bma_fit)
from predictors.layer_costs import fit_layer_costs
from predictors.phys_features import NB201_COLUMNS, phys_features
from predictors.transfer import TLHWLVecET, TLIndex, TLSample, TLZCPVecET, TransferLearning
from spaces import fbnet, nb201

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = dict(hidden=32, n_layers=2, epochs=15, batch_size=64, lr=3e-3, transfer_epochs=10)


@pytest.fixture(scope="module")
def nb201_tables():
    return data.by_device(data.help_table("nb201"))


@pytest.fixture(scope="module")
def fbnet_tables():
    return data.by_device(data.help_table("fbnet"))


def _train(tables, devices, n=300, seed=0):
    full = {d: tables[d] for d in devices}
    return protocol.pretrain_sample(full, n, seed)


def _run(method, tables, train_devices, target, k=20, seed=0, n=300):
    method.pretrain("nb201" if isinstance(next(iter(tables[target].index)), (int, np.integer)) else "fbnet",
                    _train(tables, train_devices, n, seed))
    truth = tables[target]
    chosen = method.choose(k, list(truth.index), np.random.default_rng(seed))
    adapted = method.adapt(chosen, truth.loc[chosen].to_numpy(), device=target)
    rest = truth.drop(index=chosen).iloc[:3000]
    return method, adapted, spearmanr(adapted.predict(list(rest.index)), rest.to_numpy()).statistic


def test_eq1_picks_the_train_device_best_correlated_on_the_k_samples():
    archs = list(range(200))
    rng = np.random.default_rng(0)
    base = pd.Series(rng.uniform(1, 10, 200), index=archs)
    train = {"same_order": base * 3 + 1, "reversed": 20 - base, "noise": pd.Series(rng.uniform(1, 10, 200), index=archs)}
    method = TransferLearning(**TINY, random_state=0).pretrain("nb201", TrainTables(train))
    picked = archs[:15]
    adapted = method.adapt(picked, (base.loc[picked] ** 2).to_numpy(), device="new")  # monotone in base
    assert adapted.source_device_ == "same_order"
    assert adapted.source_rho_ == pytest.approx(1.0)
    # ... and the new embedding row started as that device's row: with no fine-tuning they are equal
    frozen = TransferLearning(**{**TINY, "transfer_epochs": 0}, random_state=0).pretrain("nb201", TrainTables(train))
    adapted0 = frozen.adapt(picked, (base.loc[picked] ** 2).to_numpy(), device="new")
    table = adapted0.models_[0].net_.embedding.weight
    torch.testing.assert_close(table[-1], table[adapted0.models_[0].devices_.index("same_order")])


def test_adapt_never_mutates_the_pretrained_method(nb201_tables):
    method = TransferLearning(**TINY, ensemble=2, random_state=0)
    method.pretrain("nb201", _train(nb201_tables, ["1080ti_1", "silver_4114"]))
    before = [{k: v.clone() for k, v in m.net_.state_dict().items()} for m in method.models_]
    devices_before = [list(m.devices_) for m in method.models_]
    adapted = method.adapt(list(range(20)), nb201_tables["gold_6226"].iloc[:20].to_numpy(), device="gold_6226")
    assert adapted is not method and not getattr(method, "adapted_", False)
    for m, state, devs in zip(method.models_, before, devices_before):
        assert m.devices_ == devs
        for k, v in m.net_.state_dict().items():
            torch.testing.assert_close(v, state[k])
    with pytest.raises(NotFittedError, match="adapt"):
        method.predict([0, 1])
    with pytest.raises(NotFittedError, match="pretrain"):
        TransferLearning().adapt([0], [1.0])


@pytest.mark.parametrize("cls", [TransferLearning, TLHWLVecET, TLIndex, TLSample])
def test_tl_variants_pretrain_adapt_predict_nb201(cls, nb201_tables):
    method, adapted, rho = _run(cls(**TINY, random_state=0), nb201_tables,
                                ["1080ti_1", "1080ti_32", "silver_4114"], "titan_rtx_256")
    assert rho > 0.6, f"{cls.name}: rho {rho:.3f}"
    if cls is TLSample:  # the 10 reference archs are measured and count in k
        from predictors.help import NB201_REFERENCES

        assert set(NB201_REFERENCES) <= set(adapted.models_[0].samples_) or adapted.references_ == NB201_REFERENCES


@pytest.mark.skipif(not (SHARED / "fbnet_zcp.csv").exists(), reason="needs ../shared/data/fbnet_zcp.csv")
def test_tl_zcpvec_on_fbnet(fbnet_tables):
    method, adapted, rho = _run(TLZCPVecET(**TINY, proxy_table=SHARED / "fbnet_zcp.csv", random_state=0),
                                fbnet_tables, ["pixel3", "silver_4114"], "raspi4")
    assert rho > 0.6
    with pytest.raises(ValueError, match="needs a proxy table"):
        TLZCPVecET(**TINY).pretrain("fbnet", _train(fbnet_tables, ["pixel3"], n=50))


def test_tl_rejects_bad_settings(nb201_tables):
    train = _train(nb201_tables, ["1080ti_1"], n=50)
    with pytest.raises(ValueError, match="valid encodings: vec, hwl, zcp, hwlvec, zcpvec"):
        TransferLearning(encoding="onehot", **TINY).pretrain("nb201", train)
    with pytest.raises(ValueError, match="valid: embedding, index, sample"):
        TransferLearning(representation="graph", **TINY).pretrain("nb201", train)


# -- phys_bayes (recommended) ---------------------------------------------------------------------
def test_d_optimal_spreads_and_is_distinct():
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 101)[:, None]
    picked = d_optimal(x, 2, rng, pool=None)
    assert set(np.abs(x[picked, 0])) == {1.0}  # the two ends of a line are most informative
    picked = d_optimal(rng.normal(size=(500, 3)), 30, rng, pool=100)
    assert len(set(picked.tolist())) == 30


def test_group_prior_root_leans_toward_what_the_train_devices_use():
    rng = np.random.default_rng(3)
    fits = []
    for scale in (1.0, 2.0, -1.5):  # three devices, all driven by column 0
        x = rng.normal(size=(400, 4)) / 2.0
        y = scale * x[:, 0] + rng.normal(0, 0.05, 400)
        fits.append((x, (y - y.mean()) / y.std()))
    root = group_prior_root(fits, blend=0.1)
    cov = root @ root
    val, vec = np.linalg.eigh(cov)
    assert abs(vec[0, -1]) > 0.99 and val[-1] > 10 * val[-2]  # the prior's main direction is column 0
    gram = np.mean([x.T @ x / len(x) for x, _ in fits], axis=0)
    assert np.trace(cov @ gram) == pytest.approx(np.trace(gram))  # same prior variance of the function
    assert group_prior_root(fits, blend=1.0) is None
    assert group_prior_root([(x[:30], y[:30]) for x, y in fits]) is None  # too few samples to learn from


def test_phys_bayes_learns_its_group_priors_from_the_train_devices(nb201_tables):
    train = _train(nb201_tables, ["1080ti_1", "pixel3", "raspi4"], n=300)
    learned = PhysBayes().pretrain("nb201", train)
    assert set(learned.prior_roots_) == set(learned.groups_)
    assert all(root is not None for root in learned.prior_roots_.values())
    keys = nb201.sample(20, 4)
    both = learned.model_features(keys)  # every group under the isotropic prior, then under the learned one
    assert learned.prior_shapes() == 2 and len(both) == 2 * len(learned.groups_)
    assert all(np.array_equal(a, b) for a, b in zip(both, learned._features(keys, learned.groups_)))
    plain = PhysBayes(prior_blend=None).pretrain("nb201", train)
    assert plain.prior_roots_ == {} and plain.prior_shapes() == 1
    assert all(np.array_equal(a, b) for a, b in zip(plain.model_features(keys), plain._features(keys, plain.groups_)))
    with pytest.raises(ValueError, match="prior_blend must be between 0 and 1"):
        PhysBayes(prior_blend=1.5).pretrain("nb201", train)
    alone = PhysBayes().pretrain("nb201", _train(nb201_tables, ["1080ti_1"], n=300))
    assert alone.prior_roots_["lat"] is None  # a lone device's own column is all the lat group has


def test_phys_bayes_fits_ms_where_latency_adds_up_over_layers(fbnet_tables):
    # HW-NAS-Bench's FBNet raspi4 table is a sum of per-layer times: linear in the one-hot in ms,
    # not in log-ms.
    train = _train(fbnet_tables, ["pixel3"], n=100)
    truth = fbnet_tables["raspi4"]
    keys = list(truth.index)
    picked = set(np.random.default_rng(0).choice(len(keys), 250, replace=False))
    archs, rest = [keys[i] for i in sorted(picked)], [k for i, k in enumerate(keys) if i not in picked]
    rho = {}
    for response in ("ms", "log"):
        method = PhysBayes(groups=("vec",), prior_blend=None, response=response).pretrain("fbnet", train)
        adapted = method.adapt(archs, truth.loc[archs].to_numpy())
        rho[response] = spearmanr(adapted.predict(rest), truth.loc[rest]).statistic
    assert rho["ms"] > 0.999 and rho["ms"] > rho["log"] + 0.01
    # The ms model's groups add up over layers: costs as counts, train latencies in ms.
    ms, log = PhysBayes().pretrain("fbnet", train), PhysBayes(response="log").pretrain("fbnet", train)
    assert ms.response == "ms" and log.response == "log"
    np.testing.assert_allclose(ms._raw("phys", keys[:5]), np.expm1(log._raw("phys", keys[:5])))
    np.testing.assert_allclose(ms._raw("lat", keys[:5])[:, 0], fbnet_tables["pixel3"].loc[keys[:5]])
    with pytest.raises(ValueError, match="unknown response 'sqrt'; valid responses: ms, log"):
        PhysBayes(response="sqrt").pretrain("fbnet", train)


def test_ms_predictions_stay_positive_and_in_order(nb201_tables):
    floor = 2.0
    values = np.array([-1e12, -50.0, -1.0, 0.0, 1.0, 1.999, 2.0, 3.0, 40.0])
    squeezed = positive_ms(values, floor)
    assert np.all(squeezed > 0) and np.all(np.diff(squeezed) > 0)
    np.testing.assert_array_equal(squeezed[values >= floor], values[values >= floor])
    assert squeezed[5] == pytest.approx(1.999, abs=1e-5)  # meets the identity smoothly at the floor
    # NB201's disconnected cells (about 0 ms) push an ms fit below zero; predictions stay positive.
    train = _train(nb201_tables, ["1080ti_1", "pixel3"], n=200)
    method = PhysBayes().pretrain("nb201", train)
    truth = nb201_tables["raspi4"]
    chosen = method.choose(10, list(truth.index), np.random.default_rng(0))
    adapted = method.adapt(chosen, truth.loc[chosen].to_numpy())
    pred = adapted.predict(list(truth.index))
    assert np.all(pred > 0) and adapted.floor_ == pytest.approx(0.5 * truth.loc[chosen].min())
    np.testing.assert_array_equal(rankdata(pred), rankdata(adapted.predict_response(list(truth.index))))
    # A predictor saved before ``response`` existed is a log-latency model and still predicts as one.
    old = PhysBayes(response="log").pretrain("nb201", train).adapt(chosen, truth.loc[chosen].to_numpy())
    del old.__dict__["response"]
    assert old.response == "log"
    np.testing.assert_allclose(old.predict(chosen), np.exp(old.predict_response(chosen)))


def test_relative_noise_weighs_the_small_archs_a_rank_score_needs(nb201_tables):
    # Latency adds up over costs, but the noise is relative: one noise level lets the largest
    # archs steer the fit; precisions from noise_weights rank the many small archs better.
    method = PhysBayes().pretrain("nb201", _train(nb201_tables, ["1080ti_1"], n=50))
    rng = np.random.default_rng(1)
    gains = []
    for _ in range(30):
        costs = rng.exponential(size=(1000, 4))
        truth = 0.2 + costs @ np.array([3.0, 1.0, 0.5, 0.1])
        y = truth[:20] * np.exp(0.2 * rng.standard_normal(20))
        small = np.argsort(truth)[:500]
        small = small[small >= 20]  # unmeasured, the smaller half
        rhos = [spearmanr(bayes_linear.predict(*robust_bma_fit([costs[:20]], y, base_weights=w), [costs[small]]),
                          truth[small]).statistic for w in (None, method.noise_weights(y))]
        gains.append(rhos[1] - rhos[0])
    assert np.mean(gains) > 0.01 and np.mean(np.array(gains) > 0) > 0.6  # 0.029 and 0.8 when written
    w = method.noise_weights(np.array([0.001, 0.01, 1.0, 5.0, 10.0]))
    assert np.all(np.diff(w) < 0) and np.exp(np.log(w).mean()) == pytest.approx(1.0)
    assert w[0] / w[1] < 1.01  # NB201's ~0 ms cells: the floor bounds their weight
    assert PhysBayes(relative_noise=False).noise_weights([1.0, 2.0]) is None
    assert PhysBayes(response="log").noise_weights([1.0, 2.0]) is None  # log-latency noise is relative already
    old = PhysBayes()
    del old.__dict__["relative_noise"]  # saved before relative noise existed: one noise level
    assert old.noise_weights([1.0, 2.0]) is None


def test_robust_fit_resists_an_outlier():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 3))
    y = X @ np.array([1.0, -0.5, 0.2])
    y_bad = y.copy()
    y_bad[0] += 15.0
    Xt = rng.normal(size=(500, 3))
    truth = Xt @ np.array([1.0, -0.5, 0.2])
    plain = bayes_linear.predict(*bayes_linear.fit([X], y_bad), [Xt])
    robust = bayes_linear.predict(*robust_bma_fit([X], y_bad), [Xt])
    assert np.abs(robust - truth).mean() < 0.5 * np.abs(plain - truth).mean()


def test_nb201_phys_counts_the_ops_that_reach_the_output():
    # node 1 gets no input, so both convs run on zeros; in the second cell node 2 never reaches the output
    zero_fed = "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|"
    pruned = "|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|skip_connect~1|none~2|"
    cols = dict(zip(NB201_COLUMNS, np.round(np.expm1(phys_features("nb201", [zero_fed, pruned]))).T))
    assert list(cols["convs"]) == [2, 2] and list(cols["live_convs"]) == [0, 0]
    assert list(cols["out_convs"]) == [2, 0] and list(cols["out_macs"]) == [18, 0] and list(cols["out_skips"]) == [0, 1]


def test_phys_bayes_fitted_on_seven_nb201_phys_columns_predicts_as_before(nb201_tables, monkeypatch):
    # a predictor saved before the out_* columns existed: its scaler knows the first 7 columns
    monkeypatch.setattr(recommended, "phys_features", lambda space, keys: phys_features(space, keys)[:, :7])
    method = PhysBayes().pretrain("nb201", _train(nb201_tables, ["1080ti_1", "pixel3"], n=100))
    chosen = method.choose(10, list(range(15625)), np.random.default_rng(0))
    adapted = method.adapt(chosen, nb201_tables["raspi4"].loc[chosen].to_numpy(), device="raspi4")
    keys = list(range(0, 15625, 50))
    before, design = adapted.predict(keys), method.design_matrix(keys)
    monkeypatch.undo()
    np.testing.assert_array_equal(adapted.predict(keys), before)
    np.testing.assert_array_equal(method.design_matrix(keys), design)
    fresh = PhysBayes().pretrain("nb201", _train(nb201_tables, ["1080ti_1", "pixel3"], n=100))
    assert fresh.model_features(keys[:2])[fresh.groups_.index("phys")].shape[1] == len(NB201_COLUMNS)
    np.testing.assert_array_equal(fresh.design_matrix(keys), design)  # the design reads the first 7 only


def test_layer_costs_recover_an_additive_device_and_leave_its_noise_out(fbnet_tables):
    keys = list(fbnet_tables["pixel3"].index[:1000])
    rng = np.random.default_rng(0)
    costs = np.r_[2.0, rng.uniform(0.0, 0.5, 22 * 9)]
    truth = fbnet.vec_encoding(keys) @ costs[1:] + costs[0]
    noisy = pd.Series(np.round(truth + rng.normal(0.0, 0.5, len(truth))), index=keys)  # a whole-ms phone
    fit = fit_layer_costs("fbnet", noisy)
    assert spearmanr(fit.latency(keys), truth)[0] > spearmanr(noisy, truth)[0] + 0.05
    clean = fit_layer_costs("fbnet", pd.Series(truth, index=keys), ridge=1e-9)
    np.testing.assert_allclose(clean.latency(keys), truth, rtol=1e-6)
    assert fit_layer_costs("fbnet", noisy.iloc[:300]) is None  # fewer than two samples per cost


def test_phys_bayes_fbnet_lat_columns_are_the_train_devices_additive_fits(fbnet_tables, nb201_tables):
    sample = dict(_train(fbnet_tables, ["pixel3", "essential_ph_1"], n=500))
    sample["samsung_s7"] = fbnet_tables["samsung_s7"].iloc[:100]  # too few samples to fit 199 costs
    train = TrainTables(sample, {d: fbnet_tables[d] for d in sample})
    method = PhysBayes().pretrain("fbnet", train)
    assert sorted(method.lat_costs_) == ["essential_ph_1", "pixel3"]
    keys = list(fbnet_tables["pixel3"].index[-50:])
    lat = method._raw("lat", keys)
    np.testing.assert_allclose(lat[:, method.devices_.index("pixel3")], method.lat_costs_["pixel3"].latency(keys))
    np.testing.assert_allclose(lat[:, method.devices_.index("samsung_s7")], fbnet_tables["samsung_s7"].loc[keys])
    tables = PhysBayes(additive_lat=False).pretrain("fbnet", train)
    assert tables.lat_costs_ == {}
    np.testing.assert_allclose(tables._raw("lat", keys)[:, tables.devices_.index("pixel3")],
                               fbnet_tables["pixel3"].loc[keys])
    chosen = method.choose(10, list(fbnet_tables["1080ti_1"].index), np.random.default_rng(0))
    adapted = method.adapt(chosen, fbnet_tables["1080ti_1"].loc[chosen].to_numpy())
    del adapted.lat_costs_  # a predictor saved before the additive fits reads the tables
    np.testing.assert_allclose(adapted._raw("lat", keys), tables._raw("lat", keys))
    assert PhysBayes().pretrain("nb201", _train(nb201_tables, ["1080ti_1", "pixel3"], n=100)).lat_costs_ == {}


def test_grid_given_as_combos_is_the_grid_it_replaces():
    rng = np.random.default_rng(3)
    groups = [rng.normal(size=(12, d)) for d in (2, 3)]
    y = groups[0] @ np.array([1.0, -1.0]) + rng.normal(0, 0.1, 12)
    grid = grid_weights(groups, y, weight_grid=(0.0, 1.0))
    given = grid_weights(groups, y, combos=np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(given.prob, grid.prob)
    coef = grid_coefficients(grid_weights(groups, y, combos=np.array([[1.0, 0.0]])), groups, y)[0]
    assert np.all(coef[1] == 0.0) and np.any(coef[0] != 0.0)  # the second group never enters


def test_phys_bayes_strict_protocol_small_task(fbnet_tables):
    table = data.help_table("fbnet")
    task = tasks.custom_task("fbnet", ["pixel3", "essential_ph_1"], data.select_devices(table, ["1080ti_1"]),
                             train_table=table)
    [res] = protocol.evaluate(lambda: registry.get_method("phys_bayes"), task, samples=(10,), trials=1,
                              n_pretrain=200)
    assert res["method"] == "phys_bayes" and res["mean"] > 0.8  # GPU from phones: the phys group carries it


def test_phys_bayes_contract_and_errors(nb201_tables, fbnet_tables):
    method = PhysBayes()
    assert not [a for a in vars(method) if a.endswith("_")]
    with pytest.raises(ValueError, match="pretrain"):
        method.choose(5, [0, 1, 2, 3, 4, 5], np.random.default_rng(0))
    with pytest.raises(ValueError, match="valid groups"):
        PhysBayes(groups=("lat", "graph")).pretrain("nb201", _train(nb201_tables, ["1080ti_1"], n=50))
    method.pretrain("nb201", _train(nb201_tables, ["1080ti_1", "pixel3"], n=100))
    with pytest.raises(ValueError, match="larger than"):
        method.choose(10, [0, 1, 2], np.random.default_rng(0))
    chosen = method.choose(10, list(range(15625)), np.random.default_rng(0))
    adapted = method.adapt(chosen, nb201_tables["raspi4"].loc[chosen].to_numpy(), device="raspi4")
    assert not hasattr(method, "coef_")
    assert adapted.predict(nb201.sample(50, 1)).shape == (50,)
    assert "ops" in method.groups_  # NB201 keeps op counts (disconnected-cell flag); FBNet's default drops them
    fbnet_method = PhysBayes().pretrain("fbnet", _train(fbnet_tables, ["pixel3"], n=50))
    assert fbnet_method.groups_ == DEFAULT_GROUPS["fbnet"] and "ops" not in fbnet_method.groups_
    assert PhysBayes(groups=("ops", "phys")).pretrain("fbnet", _train(fbnet_tables, ["pixel3"], n=50)).groups_ == \
        ("ops", "phys")


def test_robust_fit_scales_to_many_measurements():
    rng = np.random.default_rng(2)
    groups = [rng.normal(size=(400, d)) / np.sqrt(d) for d in (9, 30, 7)]
    y = np.hstack(groups) @ rng.normal(size=46) + rng.normal(0, 0.05, 400)
    coef, intercept, mean, std = robust_bma_fit([g[:250] for g in groups], y[:250])  # coarse grid, chunked
    pred = bayes_linear.predict(coef, intercept, mean, std, [g[250:] for g in groups])
    assert spearmanr(pred, y[250:]).statistic > 0.95


@pytest.mark.parametrize("base_weights", [None, "relative"])
def test_many_measurements_are_fitted_in_feature_space_with_the_kernel_forms_numbers(monkeypatch, base_weights):
    # above PRIMAL_ABOVE samples the grid runs through grid_primal (k x k kernels ended hwl adapt on a whole
    # table in an out-of-memory kill); both forms of the same grid must give the same fit, outliers reweighted alike
    rng = np.random.default_rng(4)
    groups = [rng.normal(size=(160, d)) / np.sqrt(d) for d in (9, 20, 4)]
    y = np.hstack(groups) @ rng.normal(size=33) + rng.standard_t(2, 160) * 0.1
    weights = None if base_weights is None else rng.uniform(0.5, 2.0, 160)
    assert len(y) > recommended.PRIMAL_ABOVE
    primal = grid_weights(groups, y, base_weights=weights)
    monkeypatch.setattr(recommended, "PRIMAL_ABOVE", 10_000)
    kernel = grid_weights(groups, y, base_weights=weights)
    np.testing.assert_allclose(primal.prob, kernel.prob, atol=1e-8)
    np.testing.assert_allclose(primal.sample_weights, kernel.sample_weights, rtol=1e-7)
    np.testing.assert_allclose(primal.alpha, kernel.alpha, atol=1e-6 * np.abs(kernel.alpha).max())
    for a, b in zip(grid_coefficients(primal, groups, y)[0], grid_coefficients(kernel, groups, y)[0]):
        np.testing.assert_allclose(a, b, atol=1e-6 * np.abs(b).max())
