"""Strict protocol edge cases: row order, train devices among the test devices, undefined rho."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from predictors import data, protocol, registry, tasks
from predictors.protocol import EvaluationError


def nb201_table(n_archs=150, devices=("1080ti_1", "gold_6240", "pixel2", "raspi4")):
    table = data.help_table("nb201")
    return table[(table["arch"] < n_archs) & table["device"].isin(devices)].reset_index(drop=True)


def scores(table, method="phys_bayes"):
    task = tasks.custom_task("nb201", ["1080ti_1", "gold_6240"], data.select_devices(table, ["pixel2", "raspi4"]),
                             train_table=table)
    results = protocol.evaluate(lambda: registry.get_method(method), task, samples=(5, 10), trials=2, n_pretrain=60)
    return [(r["k"], r["per_device"]) for r in results]


def test_canonical_order_keeps_the_shipped_tables_and_puts_other_fbnet_keys_last_sorted():
    for space in ("nb201", "fbnet"):
        table = data.help_table(space)
        one = table[table["device"] == "pixel3"]
        assert list(data.by_device(table, ["pixel3"])["pixel3"].index) == one["arch"].tolist()
    help_keys = list(data.help_table("fbnet")["arch"].iloc[[7, 3]])
    fbnet_keys = ["zz", "aa"] + help_keys  # two keys HELP lacks (order only: not real FBNet keys)
    assert [fbnet_keys[i] for i in data.canonical_order(fbnet_keys)] == [help_keys[1], help_keys[0], "aa", "zz"]
    assert list(data.canonical_order(np.array([10, 9, 2], dtype=object))) == [2, 1, 0]  # numbers, not text


@pytest.mark.parametrize("method", ["phys_bayes", "copy"])
def test_a_shuffled_table_scores_exactly_like_the_original(method):
    table = nb201_table()
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert scores(shuffled, method) == scores(table, method)


def test_a_store_gives_the_same_pretraining_sample_as_the_file(tmp_path):
    from harness.importers import import_file
    from harness.store import Store

    path = tmp_path / "lat.parquet"
    nb201_table(n_archs=120, devices=("pixel2", "raspi4")).sample(frac=1.0, random_state=0).to_parquet(path)
    store = Store(tmp_path / "lab.db")
    import_file(store, path, space="nb201")
    store.close()
    from_file = data.by_device(data.load_table("nb201", path=path), ["pixel2", "raspi4"])
    from_store = data.by_device(data.load_table("nb201", store=tmp_path / "lab.db"), ["pixel2", "raspi4"])
    for device in from_file:  # the store returns archs as text ("10" before "9"); the Series must not care
        assert from_store[device].index.equals(from_file[device].index)
        assert list(from_file[device].index) == sorted(from_file[device].index)
    picked_file = protocol.pretrain_sample(from_file, 30, seed=0)
    picked_store = protocol.pretrain_sample(from_store, 30, seed=0)
    assert all(picked_file[d].equals(picked_store[d]) for d in from_file)


def test_train_devices_in_the_test_table_are_not_scored(caplog):
    table = nb201_table()  # 1080ti_1, gold_6240, pixel2, raspi4
    task = tasks.custom_task("nb201", ["1080ti_1", "pixel2"], table, train_table=table)
    assert task.test_devices == ("gold_6240", "raspi4")
    assert "not scoring 1080ti_1, pixel2: a train device cannot also be a test device" in caplog.text
    with pytest.raises(data.LatencyTableError, match=r"holds only train devices \(1080ti_1, pixel2\)"):
        tasks.custom_task("nb201", ["1080ti_1", "pixel2"], data.select_devices(table, ["pixel2", "1080ti_1"]))
    with pytest.raises(data.LatencyTableError, match="'pixel2' cannot be both a train and a test device"):
        tasks.custom_task("nb201", ["1080ti_1", "pixel2"], table, test_devices=["raspi4", "pixel2"])


def test_evaluate_from_a_store_holding_the_train_devices_scores_only_the_others(tmp_path, capsys):
    from harness.cli import main
    from harness.importers import import_file
    from harness.store import Store

    path = tmp_path / "help4.parquet"
    nb201_table(n_archs=60).to_parquet(path)
    store = Store(tmp_path / "imp.db")
    import_file(store, path, space="nb201")
    store.close()
    argv = ["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,pixel2", "--store", str(tmp_path / "imp.db"),
            "--method", "copy", "--samples", "5", "--trials", "1"]
    assert main(argv + ["--json", str(tmp_path / "r.json")]) == 0
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert list(result["per_device"]) == ["gold_6240", "raspi4"] and result["settings"]["test_devices"] == [
        "gold_6240", "raspi4"]
    assert main(argv + ["--test-devices", "raspi4,pixel2"]) == 2
    err = capsys.readouterr().err
    assert "'pixel2' cannot be both a train and a test device" in err and "Traceback" not in err


def one_device(latencies, name="flat"):
    return pd.Series(np.asarray(latencies, dtype=np.float64), index=range(len(latencies)), name=name)


def test_a_test_device_rho_cannot_score_is_refused_before_any_work():
    with pytest.raises(EvaluationError, match=r"'flat' has one latency for every architecture \(5 ms\)"):
        protocol.check_scorable("flat", one_device([5.0] * 50), 5)
    with pytest.raises(EvaluationError, match="k=7 leaves only 1 architecture to score on test device 'tiny': its "
                                              "table has only 8 architectures and rho needs 5 left .k at most 3."):
        protocol.check_scorable("tiny", one_device(np.arange(1.0, 9.0)), 7)
    protocol.check_scorable("tiny", one_device(np.arange(1.0, 9.0)), 3)
    # a device of 5 archs or fewer: no k scores it ('1 architectures ... (k at most 0)' before)
    with pytest.raises(EvaluationError, match=r"k=5 leaves nothing to score on test device 'one': its table has only "
                                              r"1 architecture and rho needs 5 left \(measure at least 10 of its "
                                              r"architectures, or leave the device out\)"):
        protocol.check_scorable("one", one_device([3.0]), 5)
    # whole-ms timings: 10 of 14 rows at 2 ms, so 4 measurements could leave nothing else
    with pytest.raises(EvaluationError, match="10 of the 14 latencies of test device 'ms' are 2 ms: k=4"):
        protocol.check_scorable("ms", one_device([2.0] * 10 + [3.0, 4.0, 5.0, 6.0]), 4)
    protocol.check_scorable("ms", one_device([2.0] * 10 + [3.0, 4.0, 5.0, 6.0]), 3)


def test_spearman_of_a_constant_truth_is_nan_without_scipy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(protocol.spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
        assert protocol.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0


def test_evaluate_refuses_a_constant_device_in_one_line(tmp_path, capsys):
    from harness.cli import main

    table = nb201_table(n_archs=60, devices=("raspi4",)).rename(columns={"arch": "arch_index"})
    flat = table.assign(device="flat", latency_ms=5.0)
    path = tmp_path / "flat.csv"
    pd.concat([table, flat]).to_csv(path, index=False)
    for method in ("copy", "flops", "phys_bayes"):  # were NaN, NaN and 0.000
        assert main(["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,pixel3", "--test-table", str(path),
                     "--method", method, "--samples", "5", "--trials", "1", "--json", str(tmp_path / "r.json")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'flat' has one latency for every architecture" in err
        assert not (tmp_path / "r.json").exists()


def strict_loads(text):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_json_writers_write_null_for_nan(tmp_path):
    from harness.cli import evaluate as evaluate_cli
    from harness.cli import search as search_cli
    from harness.cli.common import strict_json
    from predictors.search import SearchResult

    assert strict_loads(strict_json({"a": [float("nan"), np.float64("inf"), 1.5], "b": (None, 2)})) == {
        "a": [None, None, 1.5], "b": [None, 2]}
    path = evaluate_cli.write_json(tmp_path / "e.json", [{"mean": float("nan"), "per_device": {"x": float("nan")}}])
    assert strict_loads(path.read_text()) == {"results": [{"mean": None, "per_device": {"x": None}}]}
    no_answer = SearchResult(None, float("nan"), float("nan"), False, 20)
    result = {"summary": {"predictor": {"mean_accuracy": float("nan")}}, "runs": {"predictor": [no_answer]}}
    assert strict_loads(strict_json(search_cli.to_json(result))) == {
        "summary": {"predictor": {"mean_accuracy": None}},
        "runs": {"predictor": [{"arch": None, "accuracy": None, "latency_ms": None, "feasible": False,
                                "evaluations": 20}]}}


def test_a_test_table_without_helps_reference_archs_is_one_line_naming_the_device(tmp_path, capsys):
    """HELP adapts only with a latency of one of its reference archs: a custom test table holding none of them
    ended `hwl evaluate --method help` in a ValueError traceback, or, with any --set, in a line blaming the --set."""
    from harness.cli import main
    from predictors.help import reference_archs

    table = nb201_table(n_archs=200, devices=("pixel2",))
    table = table[~table["arch"].isin(reference_archs("nb201"))].assign(device="lab_pi")
    table.rename(columns={"arch": "arch_index"}).to_csv(tmp_path / "lab.csv", index=False)
    assert main(["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,raspi4", "--test-table",
                 str(tmp_path / "lab.csv"), "--method", "help", "--set", "meta_episodes=2", "--samples", "5",
                 "--trials", "1", "--n-pretrain", "60"]) == 2
    err = capsys.readouterr().err
    assert "error: HELP cannot adapt to test device 'lab_pi' on k=5 architectures of its table: HELP needs the new " \
           "device's latency on at least one of its 10 reference architectures" in err
    assert "--set" not in err


def test_a_set_value_that_breaks_the_adaptation_is_still_blamed_on_the_set(capsys):
    """Only a method's refusal of the measurements names the test device: --set nu=-1 breaks phys_bayes'
    adaptation, and the line must name the --set, not the device the first adaptation ran on."""
    from harness.cli import main

    assert main(["evaluate", "--task", "N0", "--samples", "5", "--trials", "1", "--n-pretrain", "60",
                 "--set", "nu=-1"]) == 2
    assert "error: method 'phys_bayes' cannot run with --set nu=-1: LinAlgError" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["copy", "tl_et"])
def test_a_custom_fbnet_task_on_archs_no_train_table_holds_is_one_line_for_the_eq1_methods(tmp_path, capsys, method):
    """copy and tl_et start from the train device that ranks the k measured archs best: on FBNet random:N archs
    none has them, and `hwl evaluate` ended in a ValueError traceback."""
    from harness.cli import main
    from spaces import fbnet

    archs = fbnet.sample(30, 4)  # not among the public tables' 5,000
    pd.DataFrame({"arch_ops": archs, "device": "lab", "latency_ms": np.linspace(1.0, 4.0, 30)}).to_csv(
        tmp_path / "lab.csv", index=False)
    assert main(["evaluate", "--space", "fbnet", "--train-devices", "pixel3,raspi4", "--test-table",
                 str(tmp_path / "lab.csv"), "--method", method, "--samples", "5", "--trials", "1",
                 "--n-pretrain", "100", *(["--set", "epochs=2", "--set", "transfer_epochs=2"] if method == "tl_et"
                                          else [])]) == 2
    assert ("cannot adapt to test device 'lab' on k=5 architectures of its table: no train device has latencies for "
            "all the measured architectures") in capsys.readouterr().err


def test_evaluate_takes_a_method_its_name_a_task_name_and_one_k_as_a_factory_does():
    # a method object and a task name were TypeError / AttributeError deep in evaluate
    table = nb201_table()
    task = tasks.custom_task("nb201", ["1080ti_1", "gold_6240"], data.select_devices(table, ["pixel2", "raspi4"]),
                             train_table=table)
    factory = protocol.evaluate(lambda: registry.get_method("hwl_ridge"), task, samples=(5,), trials=2, n_pretrain=60)
    for method in (registry.get_method("hwl_ridge"), "hwl_ridge"):
        given = protocol.evaluate(method, task, samples=5, trials=2, n_pretrain=60)
        assert [(r["method"], r["k"], r["per_device"]) for r in given] == [
            (r["method"], r["k"], r["per_device"]) for r in factory]
    by_name = protocol.evaluate("copy", "f0", samples=5, trials=1, n_pretrain=30)
    assert by_name[0]["task"] == "F0" and set(by_name[0]["per_device"]) == set(tasks.TASKS["F0"].test_devices)
    with pytest.raises(registry.UnknownMethodError, match="unknown method 'phys-bayes'; valid methods"):
        protocol.evaluate("phys-bayes", task, samples=5)
    with pytest.raises(EvaluationError, match="evaluate needs a method, its name or a function"):
        protocol.evaluate(3, task, samples=5)
