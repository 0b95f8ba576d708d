"""Baselines in the few-shot contract: copy (Eq. 1 choice), HWL ridge, simple reference, cost."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from predictors import data, protocol, registry
from predictors.base import NotFittedError, TrainTables
from predictors.baselines import (CopyBaseline, FlopsBaseline, HWLRidge, ParamsBaseline, SimpleReference,
                                  best_correlated, bayes_linear)
from predictors.baselines.features import op_counts, op_features
from predictors.baselines.simple_reference import candidate_sets
from spaces import cost


def constructed_tables():
    """'same' ranks archs like the target, 'reverse' the other way round, 'noise' at random."""
    archs = list(range(40))
    truth = pd.Series(np.linspace(1.0, 5.0, 40), index=archs)
    rng = np.random.default_rng(0)
    return truth, {
        "reverse": pd.Series(truth.to_numpy()[::-1].copy(), index=archs),
        "noise": pd.Series(rng.permutation(truth.to_numpy()), index=archs),
        "same": pd.Series(truth.to_numpy() ** 2, index=archs),
    }


def test_best_correlated_device_is_the_eq1_choice():
    truth, tables = constructed_tables()
    picked = [3, 9, 17, 30]
    device, rho = best_correlated(tables, picked, truth.loc[picked].to_numpy())
    assert device == "same" and rho == pytest.approx(1.0)


def test_copy_predicts_with_the_chosen_device_and_keeps_the_pretrained_object():
    truth, tables = constructed_tables()
    method = CopyBaseline().pretrain("nb201", TrainTables(tables))
    adapted = method.adapt([1, 5, 9], truth.loc[[1, 5, 9]].to_numpy(), device="new")
    assert adapted.source_device_ == "same" and adapted is not method
    np.testing.assert_allclose(adapted.predict([0, 39]), [1.0, 25.0])
    assert not hasattr(method, "source_device_")  # adapt worked on a deep copy
    with pytest.raises(NotFittedError, match="adapt"):
        method.predict([0])
    with pytest.raises(NotFittedError, match="pretrain"):
        CopyBaseline().adapt([0], [1.0])


def test_bayes_linear_recovers_a_linear_law_and_falls_back_on_constants():
    rng = np.random.default_rng(1)
    groups = [rng.normal(size=(200, 3)), rng.normal(size=(200, 20))]
    y = 2.0 + groups[0] @ np.array([1.0, -0.5, 0.3])  # only the first group matters
    pred = bayes_linear.fit_predict([g[:20] for g in groups], y[:20], [g[20:] for g in groups])
    assert np.corrcoef(pred, y[20:])[0, 1] > 0.95
    const = bayes_linear.fit_predict([g[:5] for g in groups], np.full(5, 3.0), [g[5:] for g in groups])
    np.testing.assert_allclose(const, 3.0)


def test_feature_groups():
    counts = op_counts("nb201", [0])
    assert counts.tolist() == [[0, 3, 2, 0, 1]]  # index 0: 3 skips, 2 conv1x1, 1 avg pool
    # index 10 cuts the cell output off its input (raspi4 reports 0.012 ms for it): flagged
    assert op_features("nb201", [0, 10])[:, -1].tolist() == [0.0, 1.0]
    assert op_features("fbnet", [",".join(["skip"] * 22)]).tolist() == [[0] * 8 + [22]]
    assert len(candidate_sets(("lat", "ops", "vec", "cost"))) == 15
    with pytest.raises(ValueError, match="valid groups"):
        SimpleReference(groups=("nope",)).pretrain("nb201", TrainTables({"a": pd.Series([1.0], index=[0])}))


@pytest.fixture(scope="module")
def small_nb201():
    """Train: 3 devices on 600 archs; test: raspi4 on the same archs."""
    table = data.help_table("nb201")
    table = table[table["arch"] < 600]
    full = data.by_device(table, ["1080ti_1", "silver_4114", "pixel3"])
    return protocol.pretrain_sample(full, 300, seed=0), data.by_device(table, ["raspi4"])["raspi4"]


@pytest.mark.parametrize("make", [
    lambda: SimpleReference(select_ks=(10,), select_repeats=1, score_archs=200, random_state=0),
    lambda: HWLRidge(select_ks=(10,), select_repeats=1, random_state=0),
    CopyBaseline,
])
def test_baselines_rank_a_new_device(small_nb201, make):
    train, truth = small_nb201
    method = make().pretrain("nb201", train)
    rng = np.random.default_rng(0)
    picked = method.choose(10, list(truth.index), rng)
    adapted = method.adapt(picked, truth.loc[picked].to_numpy(), device="raspi4")
    rest = truth.drop(index=picked)
    rho = protocol.spearman(adapted.predict(list(rest.index)), rest.to_numpy())
    assert rho > 0.5, rho  # far above chance (HWL ridge is the weakest here, ~0.6)
    assert clone(make()).get_params() == make().get_params()


def test_simple_reference_chooses_groups_on_train_devices_only(small_nb201):
    train, _ = small_nb201
    method = SimpleReference(select_ks=(10,), select_repeats=1, score_archs=200, random_state=0).pretrain(
        "nb201", train)
    assert set(method.selection_[10]) == {"+".join(s) for s in candidate_sets(method.groups, method.optional)}
    assert set(method.feature_sets_[10]) <= {"lat", "ops", "vec", "cost"}
    fixed = SimpleReference(feature_set=("ops", "cost")).pretrain("nb201", train)
    assert fixed.feature_sets_[5] == ("ops", "cost") and fixed.selection_ == {}


def test_flops_and_params_rank_by_cost():
    flops, params = cost.flops_params("nb201", [0, 1, 2])
    train = TrainTables({"a": pd.Series([1.0, 2.0], index=[0, 1])})
    f = FlopsBaseline().pretrain("nb201", train).adapt([0, 1], [1.0, 2.0])
    np.testing.assert_array_equal(f.predict([0, 1, 2]), flops)
    p = ParamsBaseline().pretrain("nb201", train).adapt([0, 1], [1.0, 2.0])
    np.testing.assert_array_equal(p.predict([0, 1, 2]), params)


def test_registry_names_and_errors():
    assert registry.RECOMMENDED in registry.method_names()
    assert isinstance(registry.get_method(), registry.get_class(registry.RECOMMENDED))
    assert registry.get_method("hwl_ridge", alpha=0.5).alpha == 0.5
    with pytest.raises(registry.UnknownMethodError, match="valid methods: .*copy"):
        registry.get_method("nope")
    with pytest.raises(registry.UnknownMethodError, match="does not take"):
        registry.get_method("copy", bogus=1)
    for name in registry.method_names():
        cls = registry.get_class(name)
        assert cls.name == name


def test_hwl_ridge_refuses_measurements_no_train_table_holds_and_names_predictions_it_cannot_tell_apart(
        tmp_path, capsys, caplog):
    """hwl_ridge reads an arch's train-device latencies: on FBNet random:N archs (or a lab table's other archs) each
    feature was the fill value, and `hwl adapt` / `hwl onboard` wrote one latency for every architecture."""
    from harness.cli import main
    from spaces import fbnet

    assert main(["train", "--space", "fbnet", "--devices", "pixel3,raspi4", "--n-pretrain", "200", "--method",
                 "hwl_ridge", "--out", str(tmp_path / "m.pt")]) == 0
    archs = fbnet.sample(12, 7)  # not among the public tables' 5,000
    pd.DataFrame({"arch_ops": archs, "device": "lab", "latency_ms": np.linspace(1.0, 3.0, 12)}).to_csv(
        tmp_path / "lab.csv", index=False)
    assert main(["adapt", str(tmp_path / "m.pt"), "--device", "lab", "--measurements", str(tmp_path / "lab.csv"),
                 "--out", str(tmp_path / "a.pt")]) == 2
    assert ("error: method hwl_ridge cannot adapt to lab: hwl_ridge predicts from the train devices' latencies of an "
            "architecture, and none of the 12 measured ones is in a train device's table") in capsys.readouterr().err
    public = data.by_device(data.help_table("fbnet"), ["gold_6226"])["gold_6226"].iloc[:12]
    adapted = HWLRidge(alpha=1.0).pretrain("fbnet", TrainTables(data.by_device(
        data.help_table("fbnet"), ["pixel3", "raspi4"]))).adapt(list(public.index), public.to_numpy(), device="lab")
    assert np.ptp(adapted.predict(list(public.index))) > 0
    with caplog.at_level("WARNING", logger="predictors.baselines.hwl_ridge"):
        assert np.ptp(adapted.predict(archs)) == 0
    assert "12 of the 12 architectures are in no train device's table: it predicts one and the same latency" in (
        caplog.text)


def test_adapt_and_predict_take_arch_strings_and_refuse_keys_of_no_architecture():
    from spaces import nb201
    from spaces.errors import ArchError

    truth, tables = constructed_tables()
    method = CopyBaseline().pretrain("nb201", TrainTables(tables))
    picked = [3, 9, 17, 30]
    by_index = method.adapt(picked, truth.loc[picked].to_numpy())
    by_string = method.adapt([nb201.to_string(a) for a in picked], truth.loc[picked].to_numpy())
    np.testing.assert_array_equal(by_string.predict([nb201.to_string(0), 39]), by_index.predict([0, 39]))
    for key, words in ((99999, "99999 is not a nb201 architecture"), ("foo", "'foo' is not a nb201 architecture")):
        with pytest.raises(ArchError, match=f"CopyBaseline.predict: {words}"):  # an IndexError / ValueError deep in it
            by_index.predict([0, key])


def test_adapt_reads_a_series_by_its_index_and_refuses_nan_or_a_2d_array():
    truth, tables = constructed_tables()
    method = HWLRidge().pretrain("nb201", TrainTables(tables))
    picked = [3, 9, 17, 30]
    by_position = method.adapt(picked, truth.loc[picked].to_numpy())
    shuffled = truth.loc[picked[::-1]]  # the same latencies, indexed by arch, in another order
    np.testing.assert_array_equal(method.adapt(picked, shuffled).predict(range(40)), by_position.predict(range(40)))
    y = truth.loc[picked].to_numpy()
    with pytest.raises(ValueError, match=r"not NaN or infinity \(1 of 4; first: arch 9, nan\)"):
        method.adapt(picked, np.where(np.arange(4) == 1, np.nan, y))
    with pytest.raises(ValueError, match=r"a 1-d sequence; got an array of shape \(4, 1\)"):
        method.adapt(picked, y[:, None])


def test_pretrain_takes_a_long_table_and_refuses_what_is_no_train_table_of_the_space_in_one_line():
    from spaces.errors import ArchError

    table = data.help_table("nb201")
    table = table[(table["arch"] < 200) & table["device"].isin(["1080ti_1", "pixel3", "raspi4"])]
    train = table[table["device"] != "raspi4"]
    truth = data.by_device(table, ["raspi4"])["raspi4"]
    picked = [3, 9, 17, 30, 44]
    expected = HWLRidge().pretrain("nb201", data.by_device(train)).adapt(picked, truth.loc[picked]).predict(range(200))
    from_frame = HWLRidge().pretrain("nb201", train)  # the long table: 'The truth value of a DataFrame is ambiguous'
    np.testing.assert_array_equal(from_frame.adapt(picked, truth.loc[picked]).predict(range(200)), expected)
    wide = train.pivot(index="arch", columns="device", values="latency_ms")
    wide.loc[wide.index[:5], "pixel3"] = np.nan  # not measured there: left out, as a long table that lacks the rows
    method = HWLRidge().pretrain("nb201", {d: wide[d] for d in wide.columns})
    assert len(method.tables_["pixel3"]) == 195 and not method.tables_["pixel3"].isna().any()
    fbnet = data.by_device(data.help_table("fbnet").head(50))
    with pytest.raises(ArchError, match=r"HWLRidge.pretrain: train device '\w+': 'k\w+,.*' is not a nb201 "
                                        r"architecture \(it looks like a fbnet architecture\)"):
        HWLRidge().pretrain("nb201", fbnet)  # an NB201 HWLRidge pretrained on FBNet's tables without a word
    with pytest.raises(ValueError, match="train device 'a' has a ndarray, not a latency Series indexed by arch"):
        SimpleReference().pretrain("nb201", {"a": np.arange(1.0, 11.0)})
    with pytest.raises(ValueError, match="PhysBayes.pretrain needs train devices: a dict device -> latency Series"):
        registry.get_method("phys_bayes").pretrain("nb201", {})


def test_fbnet_keys_are_parsed_once_not_at_every_predict():
    # space_keys parsed each of FBNet's 5,000 candidates at every predict: 10.8 ms of hwl_ridge's 23.4 ms here
    from predictors.base import space_keys
    from spaces import fbnet

    keys = sorted(set(data.help_table("fbnet")["arch"]))[:300]
    fbnet.is_canonical.cache_clear()
    assert space_keys("fbnet", keys) == keys == space_keys("fbnet", keys)
    assert fbnet.is_canonical.cache_info().hits == len(keys)


def test_adapt_reads_a_series_by_its_index_in_the_other_spelling_of_the_archs():
    # arch strings given with a table's Series (indexed by index), or indices with one indexed by arch string, in
    # another order: the two were compared as given, found to differ, and the Series was read by position
    from spaces import nb201

    truth, tables = constructed_tables()
    method = HWLRidge().pretrain("nb201", TrainTables(tables))
    picked = [3, 9, 17, 30]
    strings = [nb201.to_string(a) for a in picked]
    expected = method.adapt(picked, truth.loc[picked].to_numpy()).predict(range(40))
    shuffled = truth.loc[picked[::-1]]
    np.testing.assert_array_equal(method.adapt(strings, shuffled).predict(range(40)), expected)
    by_string = shuffled.set_axis([nb201.to_string(a) for a in shuffled.index])
    np.testing.assert_array_equal(method.adapt(picked, by_string).predict(range(40)), expected)
    with pytest.raises(ValueError, match="names arch 3 more than once, in another order than the archs given"):
        method.adapt([3, 3, 9, 17], truth.loc[[3, 9, 3, 17]])
