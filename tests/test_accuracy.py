"""Few-shot accuracy predictors: estimator contract, encodings, strict protocol, task transfer."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from harness.errors import UserError
from predictors.accuracy import (AccuracyMLP, AccuracyTableError, AccuracyTransfer, as_task_table, evaluate_scratch,
                                 evaluate_transfer, read_accuracy_table)
from sklearn.exceptions import NotFittedError
from predictors.encodings import read_proxy_table
from predictors.zcp import fill_nonfinite
from spaces import nb201

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "nb201_accuracy.csv").is_file(), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def accuracy():
    return read_accuracy_table(SHARED / "nb201_accuracy.csv")


@pytest.fixture(scope="module")
def proxies(tmp_path_factory):
    # NASLib's public CIFAR-10 proxies of ~725 archs: a real ZCP table for the pool
    raw = pd.read_csv(SHARED / "nb201_zcp_naslib_subset.csv")
    path = tmp_path_factory.mktemp("zcp") / "naslib_cifar10.csv"
    raw[raw["dataset"] == "cifar10"].drop(columns=["naslib_op_indices", "val_accuracy", "arch_str"]).to_csv(
        path, index=False)
    return fill_nonfinite(read_proxy_table(path, "nb201").drop(columns=["epe_nas"]))


def test_accuracy_table_columns_and_errors(accuracy, tmp_path):
    assert list(accuracy.columns) == ["cifar10", "cifar100", "ImageNet16-120"] and len(accuracy) == 15625
    assert accuracy.loc[6111, "cifar10"] == pytest.approx(94.37, abs=0.01)
    long = as_task_table(accuracy, ["cifar100"], archs=[0, 1])
    assert list(long.columns) == ["arch", "device", "latency_ms"] and len(long) == 2
    with pytest.raises(AccuracyTableError, match="does not exist"):
        read_accuracy_table(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("arch_index,acc\n0,1\n")
    with pytest.raises(AccuracyTableError, match="cifar10_test_acc"):
        read_accuracy_table(tmp_path / "bad.csv")


def test_an_unreadable_or_non_numeric_accuracy_table_is_one_line(tmp_path):
    """A cell like '93.1%' (ValueError) or a Parquet file named .pq (UnicodeDecodeError) were tracebacks."""
    (tmp_path / "pct.csv").write_text("arch_index,cifar10_test_acc\n0,91.2\n1,\n2,93.1%\n")
    with pytest.raises(AccuracyTableError, match=r"pct.csv: 1 cifar10_test_acc value\(s\) are not numbers "
                                                 r"\(first at data row 3: '93.1%'\)"):
        read_accuracy_table(tmp_path / "pct.csv")
    pd.DataFrame({"arch_index": [0, 1], "cifar10_test_acc": [91.2, 93.1]}).to_parquet(tmp_path / "acc.pq")
    assert read_accuracy_table(tmp_path / "acc.pq")["cifar10"].tolist() == [91.2, 93.1]
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(AccuracyTableError, match=r"cut.parquet: not a readable Parquet table \(ArrowInvalid"):
        read_accuracy_table(tmp_path / "cut.parquet")
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AccuracyTableError, match=r"bin.csv: not a readable CSV table") as bad:
        read_accuracy_table(tmp_path / "bin.csv")
    assert "\n" not in str(bad.value)
    (tmp_path / "gap.csv").write_text("arch_index,cifar10_test_acc\n0,91.2\n1,\n")  # an empty cell: no accuracy
    assert read_accuracy_table(tmp_path / "gap.csv")["cifar10"].dropna().tolist() == [91.2]


def test_an_arch_given_two_accuracies_is_refused(tmp_path):
    """Two rows of one arch (arch_index 5 and its arch_str) with different accuracies: the first row was kept
    silently, so the search's truth depended on the row order."""
    from spaces import nb201

    (tmp_path / "two.csv").write_text(f"arch,cifar10_test_acc\n5,91.2\n{nb201.to_string(5)},88.0\n7,90.0\n")
    with pytest.raises(AccuracyTableError, match=r"two.csv: 1 architecture\(s\) appear in rows with different "
                                                 r"accuracies \(first: arch 5: .*91.2.*88.0"):
        read_accuracy_table(tmp_path / "two.csv")
    (tmp_path / "same.csv").write_text("arch_index,cifar10_test_acc\n5,91.2\n5,91.2\n7,90.0\n")
    assert read_accuracy_table(tmp_path / "same.csv")["cifar10"].to_dict() == {5: 91.2, 7: 90.0}


def test_an_accuracy_or_proxy_table_whose_index_and_string_disagree_is_refused(tmp_path):
    """A table with arch_index and arch_str was read by the index alone: an arch_str column one row off (an edited
    spreadsheet) gave each arch its neighbour's accuracy, and hwl search went on with them."""
    from predictors.data import LatencyTableError
    from spaces import nb201

    rows = [(i, nb201.to_string(i + 1), 90.0 + i) for i in range(3)]
    (tmp_path / "acc.csv").write_text("arch_index,arch_str,cifar10_test_acc\n"
                                      + "".join(f"{i},{s},{a}\n" for i, s, a in rows))
    with pytest.raises(AccuracyTableError, match=r"acc.csv: 3 row\(s\) whose arch_index and arch_str name "
                                                 r"different cells \(first at data row 1: arch_index 0, arch_str "
                                                 r".* is index 1\)"):
        read_accuracy_table(tmp_path / "acc.csv")
    (tmp_path / "zcp.csv").write_text("arch_index,arch_str,snip\n" + "".join(f"{i},{s},{a}\n" for i, s, a in rows))
    with pytest.raises(LatencyTableError, match=r"proxy table .*zcp.csv: 3 row\(s\) whose arch_index and arch_str"):
        read_proxy_table(tmp_path / "zcp.csv", "nb201")
    rows = [(i, nb201.to_string(i), 90.0 + i) for i in range(3)]  # both naming one cell: read as before
    (tmp_path / "ok.csv").write_text("arch_index,arch_str,cifar10_test_acc\n"
                                     + "".join(f"{i},{s},{a}\n" for i, s, a in rows))
    assert read_accuracy_table(tmp_path / "ok.csv")["cifar10"].to_dict() == {0: 90.0, 1: 91.0, 2: 92.0}


def test_a_proxy_table_giving_an_arch_two_scores_is_refused(tmp_path):
    """Two rows of arch 5 with snip 1.0 and 9.0: the first was kept silently (an accuracy table refused them)."""
    from predictors.data import LatencyTableError

    (tmp_path / "two.csv").write_text("arch_index,snip\n5,1.0\n5,9.0\n7,2.0\n")
    with pytest.raises(LatencyTableError, match=r"proxy table .*two.csv: 1 architecture\(s\) appear in rows with "
                                                r"different scores \(first: arch 5: .*1.0.*9.0"):
        read_proxy_table(tmp_path / "two.csv", "nb201")
    (tmp_path / "same.csv").write_text("arch_index,snip\n5,1.0\n5,1.0\n7,2.0\n")
    assert read_proxy_table(tmp_path / "same.csv", "nb201")["snip"].to_dict() == {5: 1.0, 7: 2.0}


def test_accuracy_and_proxy_tables_named_in_capitals_are_read_as_parquet(tmp_path):
    """ACC.PARQUET (a name from Windows) was read as CSV: 'not a readable CSV table (UnicodeDecodeError ...)', where a
    latency table's suffix is read in any case."""
    pd.DataFrame({"arch_index": [0, 1], "cifar10_test_acc": [91.2, 93.1]}).to_parquet(tmp_path / "ACC.PARQUET")
    assert read_accuracy_table(tmp_path / "ACC.PARQUET")["cifar10"].tolist() == [91.2, 93.1]
    pd.DataFrame({"arch_index": [0, 1], "snip": [1.0, 2.0]}).to_parquet(tmp_path / "ZCP.PQ")
    assert read_proxy_table(tmp_path / "ZCP.PQ", "nb201")["snip"].tolist() == [1.0, 2.0]


def test_estimator_contract_and_finetune_copies(accuracy, proxies):
    model = AccuracyMLP("zcp", proxies=proxies, epochs=30, random_state=0)
    assert clone(model).get_params()["epochs"] == 30
    with pytest.raises(NotFittedError):
        model.predict([0])
    archs = list(proxies.index[:40])
    model.fit(archs, accuracy.loc[archs, "cifar10"])
    before = model.predict(archs)
    tuned = model.finetune(archs[:10], accuracy.loc[archs[:10], "cifar100"])
    assert tuned is not model and np.array_equal(model.predict(archs), before)
    assert tuned.predict(archs).shape == (40,)


def test_bad_encoding_and_missing_proxies(accuracy):
    with pytest.raises(UserError, match="valid encodings: vec, zcp, zcpvec"):
        AccuracyMLP("graph").fit([0, 1], [1.0, 2.0])
    with pytest.raises(UserError, match="hwl zcp"):
        AccuracyMLP("zcp").fit([0, 1], [1.0, 2.0])
    with pytest.raises(UserError, match="pool size"):
        evaluate_scratch(accuracy, encoding="vec", samples=(10,), trials=1, pool=range(8))


@pytest.mark.parametrize("kwargs, match", [
    (dict(source="cifar10"), r"another source task than the target 'cifar10'"),  # was scored on its pretraining
    (dict(k=0), r"k=0 must be between 2 and 15"),  # was a ValueError from the method
    (dict(k=1), r"k=1 must be between 2"),
    (dict(k=19), r"k=19 must be between 2 and 15: the pool size 20 less the 5"),  # was rho nan
    (dict(k=40), r"k=40 must be between 2"),  # was a ValueError from the picks
    (dict(trials=0), r"trials must be at least 1, got 0"),  # was a mean of nan
    (dict(pretrain_fraction=2.0), r"pretraining fraction must be in \(0, 1\], got 2.0"),  # numpy's ValueError
])
def test_transfer_refuses_what_the_protocol_cannot_score(accuracy, kwargs, match):
    args = dict(encoding="vec", source="cifar100", target="cifar10", k=5, trials=1, pool=range(20), epochs=5) | kwargs
    with pytest.raises(UserError, match=match):
        evaluate_transfer(accuracy, **args)


def test_scratch_leaves_the_protocol_s_archs_to_score_and_runs_a_trial(accuracy):
    with pytest.raises(UserError, match=r"k=17 must be between 2 and 15"):  # was rho over 3 archs (nan at 19)
        evaluate_scratch(accuracy, encoding="vec", samples=(17,), trials=1, pool=range(20), epochs=5)
    with pytest.raises(UserError, match=r"trials must be at least 1"):
        evaluate_scratch(accuracy, encoding="vec", samples=(5,), trials=0, pool=range(20), epochs=5)
    (result,) = evaluate_scratch(accuracy, encoding="vec", samples=(15,), trials=1, pool=range(20), epochs=5)
    assert result["k"] == 15 and np.isfinite(result["mean"])
    # one k as a number, as evaluate takes it: "'int' object is not iterable"
    (one,) = evaluate_scratch(accuracy, encoding="vec", samples=15, trials=1, pool=range(20), epochs=5)
    assert dict(one, seconds=0) == dict(result, seconds=0)


def test_a_pool_of_arch_strings_is_the_pool_of_their_indices(accuracy):
    # it was "only 0 architectures have both an accuracy and the encoding's inputs"
    strings = [nb201.to_string(i) for i in range(20)]
    (by_string,) = evaluate_scratch(accuracy, encoding="vec", samples=(15,), trials=1, pool=strings, epochs=5)
    (by_index,) = evaluate_scratch(accuracy, encoding="vec", samples=(15,), trials=1, pool=range(20), epochs=5)
    assert dict(by_string, seconds=0) == dict(by_index, seconds=0)


@pytest.mark.slow
def test_zcp_beats_vec_from_scratch_with_few_samples(accuracy, proxies):
    pool = proxies.index
    kwargs = dict(samples=(20,), trials=3, pool=pool, epochs=100)
    vec = evaluate_scratch(accuracy, encoding="vec", **kwargs)[0]
    zcp = evaluate_scratch(accuracy, encoding="zcp", proxies=proxies, **kwargs)[0]
    assert zcp["pool"] == len(pool) and len(zcp["scores"]) == 3
    assert zcp["mean"] > 0.5 and zcp["mean"] > vec["mean"]


@pytest.mark.slow
def test_transfer_across_tasks_beats_vec_scratch_at_k10(accuracy, proxies):
    # the paper's comparison (Fig. 9): ZCP transfer against a Vec predictor trained from scratch
    pool = proxies.index
    common = dict(source="cifar10", target="cifar100", k=10, trials=2, pool=pool, epochs=100)
    zcp_transfer = evaluate_transfer(accuracy, encoding="zcp", proxies=proxies, **common)
    vec_transfer = evaluate_transfer(accuracy, encoding="vec", **common)
    vec_scratch = evaluate_scratch(accuracy, encoding="vec", dataset="cifar100", samples=(10,), trials=2, pool=pool,
                                   epochs=100)[0]
    assert zcp_transfer["n_pretrain"] == round(0.15 * len(pool))
    assert zcp_transfer["mean"] > vec_scratch["mean"] and vec_transfer["mean"] > vec_scratch["mean"]


def test_scratch_and_transfer_are_fitted_on_the_same_k_archs_of_a_trial(accuracy, monkeypatch):
    """bench_accuracy's table sets transfer beside scratch on the same target, k and seeds; transfer drew its k
    archs from another random stream, so the two columns of a row were fitted (and scored) on different archs."""
    from predictors.base import FewShotMethod

    adapted_on = []
    adapt = FewShotMethod.adapt

    def recording(self, archs, latency_ms, device=None):  # the real adapt, its archs written down
        adapted_on.append((type(self).__name__, sorted(archs)))
        return adapt(self, archs, latency_ms, device=device)

    monkeypatch.setattr(FewShotMethod, "adapt", recording)
    common = dict(encoding="vec", trials=2, pool=range(0, 600, 10), epochs=5)
    evaluate_scratch(accuracy, dataset="cifar100", samples=(10,), **common)
    evaluate_transfer(accuracy, source="cifar10", target="cifar100", k=10, **common)
    scratch = [archs for name, archs in adapted_on if name == "AccuracyScratch"]
    transfer = [archs for name, archs in adapted_on if name == "AccuracyTransfer"]
    assert len(scratch) == len(transfer) == 2 and scratch[0] != scratch[1]
    assert transfer == scratch


def test_transfer_method_never_mutates_the_pretrained_model(accuracy):
    archs = list(range(0, 600, 10))
    method = AccuracyTransfer("vec", epochs=20, transfer_epochs=10, random_state=0)
    method.pretrain("nb201", {"cifar10": accuracy.loc[archs, "cifar10"]})
    before = method._predict(archs[:5])
    adapted = method.adapt(archs[:10], accuracy.loc[archs[:10], "ImageNet16-120"], device="ImageNet16-120")
    assert adapted is not method and np.array_equal(method._predict(archs[:5]), before)
    assert adapted.predict(archs[10:15]).shape == (5,)


# A shell that runs the suite in the background starts it with SIGINT ignored, which Python then leaves ignored:
# the fit takes Ctrl-C's KeyboardInterrupt as a terminal's Python would.
FIT = ("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
       "import numpy as np\nfrom predictors.accuracy import fit_mlp, make_mlp\n"
       "rng = np.random.default_rng(0)\nX, y = rng.normal(size=(200, 8)), rng.normal(size=200)\n"
       "print('fitting', flush=True)\nfit_mlp(make_mlp(n_samples=200, epochs=100000), X, y)\n"
       "print('fit returned', flush=True)\n")


def test_ctrl_c_during_a_fit_stops_the_program():
    """sklearn caught the KeyboardInterrupt of a Ctrl-C (and of hwl's SIGTERM) during a fit, warned and returned
    the half-trained model: `hwl search` went on after each SIGTERM (still running 39 s after one, measured)."""
    import signal
    import subprocess
    import sys
    import time

    fit = subprocess.Popen([sys.executable, "-c", FIT], cwd=Path(__file__).resolve().parents[1],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fit.stdout.readline() == "fitting\n", fit.communicate(timeout=60)[1]
        time.sleep(0.5)  # well inside the fit's 100,000 epochs
        fit.send_signal(signal.SIGINT)
        out, err = fit.communicate(timeout=60)
    finally:
        fit.kill()
        fit.wait()
    assert "fit returned" not in out and err.rstrip().endswith("KeyboardInterrupt"), err
