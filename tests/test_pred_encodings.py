"""Encodings on known architectures: Vec, HWL (train-only scaling), ZCP, concatenations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from predictors.data import LatencyTableError
from predictors.encodings import HWLEncoder, VecEncoder, ZCPEncoder, hwl_vec, read_proxy_table, zcp_vec
from spaces import fbnet, nb201
from spaces.errors import ArchError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
INDEX0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def test_vec_nb201_known_architecture():
    enc = VecEncoder("nb201").fit()
    x = enc.transform([0, INDEX0, "0"])
    assert x.shape == (3, 30) and enc.n_features_out_ == 30
    # index 0: avg_pool, conv1x1, skip, conv1x1, skip, skip (one-hot per edge, ops in nb201.OPS order)
    expected = [nb201.OPS.index(op) for op in ("avg_pool_3x3", "nor_conv_1x1", "skip_connect",
                                               "nor_conv_1x1", "skip_connect", "skip_connect")]
    assert np.flatnonzero(x[0]).tolist() == [5 * e + c for e, c in enumerate(expected)]
    assert (x[0] == x[1]).all() and (x[0] == x[2]).all()


def test_vec_fbnet_known_architecture():
    key = ",".join(["skip"] * 21 + ["k3_e1"])
    x = VecEncoder("fbnet").fit_transform([key])
    assert x.shape == (1, 198) and x.sum() == 22
    assert x[0, 8] == 1 and x[0, 21 * 9 + 0] == 1
    with pytest.raises(ArchError, match="not a fbnet architecture"):
        VecEncoder("fbnet").fit().transform([0])


def test_vec_unfitted_raises_notfitted():
    with pytest.raises(NotFittedError):
        VecEncoder("nb201").transform([0])


def _tables():
    a = pd.Series([10.0, 20.0, 30.0, 40.0], index=[0, 1, 2, 3])
    b = pd.Series([5.0, 1.0, 3.0, 100.0], index=[0, 1, 2, 3])
    return {"a": a, "b": b}


def test_hwl_scaling_is_fitted_on_train_archs_only():
    enc = HWLEncoder(_tables(), ["a", "b"]).fit([0, 1, 2])
    np.testing.assert_allclose(enc.min_, [10.0, 1.0])
    np.testing.assert_allclose(enc.max_, [30.0, 5.0])
    x = enc.transform([0, 1, 3])
    np.testing.assert_allclose(x[0], [0.0, 1.0])
    np.testing.assert_allclose(x[1], [0.5, 0.0])
    np.testing.assert_allclose(x[2], [1.5, 99 / 4])  # an unseen arch may leave [0, 1]: no leak from it
    assert enc.get_feature_names_out().tolist() == ["hwl_a", "hwl_b"]


def test_hwl_missing_latency_is_filled_and_bad_devices_named():
    tables = _tables()
    tables["c"] = pd.Series([1.0, 2.0], index=[0, 1])
    enc = HWLEncoder(tables).fit([0, 1])
    x = enc.transform([2])
    assert x[0, 2] == pytest.approx(enc.fill_[2])
    with pytest.raises(LatencyTableError, match="unknown reference device"):
        HWLEncoder(tables, ["zz"]).fit([0])
    with pytest.raises(LatencyTableError, match="know none"):
        HWLEncoder(tables).fit([3])


def test_hwl_is_a_clonable_estimator():
    enc = HWLEncoder(_tables(), ["a"], log=True)
    assert clone(enc).get_params()["log"] is True
    assert not hasattr(clone(enc.fit([0, 1])), "min_")


@pytest.fixture(scope="module")
def proxies():
    if not (SHARED / "fbnet_zcp.csv").is_file():
        pytest.skip("../shared/data not present")
    return read_proxy_table(SHARED / "fbnet_zcp.csv", "fbnet")


def test_zcp_logs_heavy_tails_and_standardises_on_train_rows(proxies):
    assert proxies.shape == (5000, 13) and "synflow" in proxies.columns
    train = list(proxies.index[:500])
    enc = ZCPEncoder(proxies).fit(train)
    logged = dict(zip(enc.columns_, enc.log_columns_))
    assert logged["synflow"] and not logged["nwot"]
    z = enc.transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-9)
    other = enc.transform(list(proxies.index[500:1000]))
    assert np.abs(other.mean(axis=0)).max() > 1e-6  # statistics come from the train rows only
    assert np.isfinite(other).all() and np.abs(other).max() < 50


def test_zcp_unknown_arch_and_proxy(proxies):
    enc = ZCPEncoder(proxies, ["flops", "params"]).fit(list(proxies.index[:10]))
    with pytest.raises(ArchError, match="no proxy scores"):
        enc.transform([fbnet.to_key(["skip"] * 22)])
    with pytest.raises(LatencyTableError, match="unknown proxies"):
        ZCPEncoder(proxies, ["nope"]).fit(list(proxies.index[:10]))


def test_concatenations(proxies):
    keys = list(proxies.index[:50])
    x = zcp_vec("fbnet", proxies).fit(keys).transform(keys[:3])
    assert x.shape == (3, 13 + 198)
    hv = hwl_vec("nb201", _tables(), ["a", "b"]).fit([0, 1, 2])
    assert hv.transform([0]).shape == (1, 2 + 30)


def test_constructors_only_store_their_arguments():
    from sklearn.utils.estimator_checks import check_no_attributes_set_in_init

    from predictors import registry

    for est in (VecEncoder("fbnet"), HWLEncoder(_tables()), ZCPEncoder(None, ["a"])):
        check_no_attributes_set_in_init(type(est).__name__, est)
    for name in registry.method_names():
        check_no_attributes_set_in_init(name, registry.get_method(name))


def test_a_proxy_table_holding_an_accuracy_a_latency_or_several_datasets_is_refused(tmp_path):
    """Every numeric column was read as a proxy: NASLib's table (../shared/data) gave `hwl search --encoding zcp`
    its val_accuracy as a feature of the accuracy predictor, a latency table its latency_ms, and of its three
    datasets' rows the first of each arch, whichever dataset the search was for."""
    frame = pd.DataFrame({"dataset": "cifar10", "arch_index": [1, 2], "snip": [0.5, 2.0], "val_accuracy": [90., 91.]})
    tables = {"acc.csv": (frame, "val_accuracy"),
              "lat.csv": (pd.DataFrame({"arch_index": [1, 2], "device": "pi", "latency_ms": [3.0, 4.0]}), "latency_ms")}
    for name, (table, column) in tables.items():
        table.to_csv(tmp_path / name, index=False)
        with pytest.raises(LatencyTableError, match=rf"{name} has column\(s\) {column}, which would be read as proxy "
                                                    r"scores but hold what is predicted \(an accuracy or a latency\)"):
            read_proxy_table(tmp_path / name, "nb201")
    mixed = frame.drop(columns="val_accuracy")
    pd.concat([mixed, mixed.assign(dataset="cifar100")]).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(LatencyTableError, match=r"two.csv holds scores of 2 datasets \(cifar10, cifar100\); keep one"):
        read_proxy_table(tmp_path / "two.csv", "nb201")
    mixed.to_csv(tmp_path / "one.csv", index=False)
    assert read_proxy_table(tmp_path / "one.csv", "nb201").to_dict() == {"snip": {1: 0.5, 2: 2.0}}


def test_a_proxy_table_named_pq_or_with_a_bad_score_is_read_or_refused_in_one_line(tmp_path):
    """`hwl zcp --out z.pq` writes Parquet, which --zcp-table read as CSV (a UnicodeDecodeError traceback); a score
    that is not a number was a ValueError traceback."""
    frame = pd.DataFrame({"arch_index": [1, 2], "snip": [0.5, 2.0], "flops": [3.0, 4.0]})
    frame.to_parquet(tmp_path / "z.pq")
    assert read_proxy_table(tmp_path / "z.pq", "nb201")["snip"].to_dict() == {1: 0.5, 2: 2.0}
    frame.astype({"snip": object}).assign(snip=[0.5, "oops"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(LatencyTableError, match=r"bad.csv: 1 snip value\(s\) are not numbers \(first at data row 2: "
                                                r"'oops'\)"):
        read_proxy_table(tmp_path / "bad.csv", "nb201")
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(LatencyTableError, match=r"cut.parquet: not a readable Parquet table"):
        read_proxy_table(tmp_path / "cut.parquet", "nb201")
