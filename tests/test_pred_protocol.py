"""Strict protocol guarantees: measured archs never scored, no leak between test devices, errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from predictors import data, protocol, tasks
from predictors.base import FewShotMethod, TrainTables, full_tables
from predictors.protocol import EvaluationError


class Recorder(FewShotMethod):
    """Predicts a train device's latencies and records everything the protocol shows it."""

    name = "recorder"
    events: list = []  # class attribute: survives the deep copies adapt makes

    def __init__(self, random_state=None):
        self.random_state = random_state

    def pretrain(self, space, train):
        self.space_ = space
        self.sizes_ = {d: len(s) for d, s in train.items()}
        self.full_sizes_ = {d: len(s) for d, s in full_tables(train).items()}
        self.first_ = next(iter(full_tables(train).values()))
        self.seen_ = []
        Recorder.events.append(("pretrain", self.random_state, dict(self.sizes_), dict(self.full_sizes_)))
        return self

    def _adapt(self, archs, y, device):
        Recorder.events.append(("adapt", device, list(archs), list(self.seen_)))
        self.seen_ = self.seen_ + list(archs)

    def _predict(self, archs):
        Recorder.events.append(("predict", list(archs)))
        return self.first_.reindex(archs).to_numpy()


class ReturnsSelf(Recorder):
    def adapt(self, archs, latency_ms, device=None):
        return self


def small_task(n_archs=120, n_test_devices=3):
    table = data.help_table("nb201")
    table = table[table["arch"] < n_archs]
    test = table[table["device"].isin(["pixel2", "raspi4", "eyeriss"][:n_test_devices])]
    return tasks.custom_task("nb201", ["1080ti_1", "gold_6240"], test, train_table=table)


def test_never_scores_a_measured_arch_and_no_device_sees_another():
    Recorder.events = []
    results = protocol.evaluate(Recorder, small_task(), samples=(5, 10), trials=2, n_pretrain=50)
    adapts = [e for e in Recorder.events if e[0] == "adapt"]
    predicts = [e for e in Recorder.events if e[0] == "predict"]
    assert len(adapts) == len(predicts) == 2 * 2 * 3  # trials x k x devices
    for (_, device, measured, seen_before), (_, scored) in zip(adapts, predicts):
        assert len(measured) in (5, 10) and len(set(measured)) == len(measured)
        assert seen_before == []  # each test device starts from the pretrained state
        assert not set(measured) & set(scored)
        assert len(scored) == 120 - len(measured)
    pretrains = [e for e in Recorder.events if e[0] == "pretrain"]
    assert [p[1] for p in pretrains] == [0, 1]  # the trial seed reaches random_state
    assert pretrains[0][2] == {"1080ti_1": 50, "gold_6240": 50} and pretrains[0][3] == {"1080ti_1": 120,
                                                                                      "gold_6240": 120}
    assert [r["k"] for r in results] == [5, 10]
    r = results[0]
    assert set(r) == {"task", "method", "k", "trials", "mean", "std", "per_device", "settings", "seeds", "seconds"}
    assert r["task"] == "custom" and r["method"] == "recorder" and r["seeds"] == [0, 1]
    assert list(r["per_device"]) == ["eyeriss", "pixel2", "raspi4"] or set(r["per_device"]) == {
        "eyeriss", "pixel2", "raspi4"}
    assert r["mean"] == pytest.approx(np.mean(list(r["per_device"].values())))


def test_draws_repeat_with_the_seed_and_differ_between_trials():
    Recorder.events = []
    protocol.evaluate(Recorder, small_task(n_test_devices=1), samples=(5,), trials=2, n_pretrain=50)
    first = [e[2] for e in Recorder.events if e[0] == "adapt"]
    Recorder.events = []
    protocol.evaluate(Recorder, small_task(n_test_devices=1), samples=(5,), trials=2, n_pretrain=50)
    again = [e[2] for e in Recorder.events if e[0] == "adapt"]
    assert first == again and first[0] != first[1]


def test_k_larger_than_the_table_is_refused():
    with pytest.raises(EvaluationError, match="k=120 leaves nothing to score.*only 120 architectures"):
        protocol.evaluate(Recorder, small_task(), samples=(5, 120), trials=1)
    with pytest.raises(EvaluationError, match="positive"):
        protocol.evaluate(Recorder, small_task(), samples=(0,), trials=1)
    with pytest.raises(EvaluationError, match="trials"):
        protocol.evaluate(Recorder, small_task(), samples=(5,), trials=0)
    with pytest.raises(ValueError, match="larger than"):
        Recorder().choose(10, [1, 2, 3], np.random.default_rng(0))


def test_adapt_must_not_return_the_pretrained_object():
    with pytest.raises(EvaluationError, match="new object"):
        protocol.evaluate(ReturnsSelf, small_task(n_test_devices=1), samples=(5,), trials=1, n_pretrain=20)


def test_pretrain_sample_sizes_and_full_tables():
    full = {"a": pd.Series(np.arange(10.0), index=range(10)), "b": pd.Series([1.0, 2.0], index=[3, 4])}
    train = protocol.pretrain_sample(full, 4, seed=3)
    assert isinstance(train, TrainTables) and len(train["a"]) == 4 and len(train["b"]) == 2
    assert train.full["a"] is full["a"] and full_tables(dict(full)) == full


def test_suite_matches_the_protocol_doc():
    assert list(tasks.TASKS) == ["N0", "F0", "F1", "F2", "F3", "F4", "F5"]
    f5 = tasks.get_task("F5")
    assert len(f5.train_devices) == 15 and f5.test_devices == ("gold_6226", "essential_ph_1", "samsung_s7", "pixel2")
    assert len(tasks.get_task("n0").train_devices) == 9 and len(tasks.get_task("F4").train_devices) == 10
    for task in tasks.TASKS.values():  # every device exists in the shipped tables
        train, test = task.tables()
        assert set(train["device"]) == set(task.train_devices) and set(test["device"]) == set(task.test_devices)
    with pytest.raises(data.LatencyTableError, match="valid tasks: N0, F0"):
        tasks.get_task("F9")


def test_custom_task_bad_input():
    table = data.help_table("nb201")
    with pytest.raises(data.LatencyTableError, match="unknown train device 'nope'"):
        tasks.custom_task("nb201", ["nope"], table[table["device"] == "pixel2"])
    with pytest.raises(data.LatencyTableError, match="empty"):
        tasks.custom_task("nb201", ["pixel2"], table.iloc[:0])


def test_held_out_pretraining_leaves_the_device_and_optionally_its_family_out():
    full = {d: pd.Series([1.0, 2.0]) for d in ("1080ti_1", "1080ti_32", "silver_4114", "pixel3", "my_board")}
    assert set(protocol.held_out_pretraining(full, "1080ti_1", "fbnet")) == {"1080ti_32", "silver_4114", "pixel3",
                                                                            "my_board"}
    # with the family: every GPU goes; a device devices.csv does not know stays
    assert set(protocol.held_out_pretraining(full, "1080ti_1", "fbnet", family=True)) == {"silver_4114", "pixel3",
                                                                                          "my_board"}
    # an unknown held device has no family to leave out
    assert set(protocol.held_out_pretraining(full, "my_board", "fbnet", family=True)) == {
        "1080ti_1", "1080ti_32", "silver_4114", "pixel3"}


def test_a_huge_number_of_trials_takes_memory_as_the_trials_run():
    """--trials 100000000000 ended at once in a MemoryError traceback (a list of every seed and a score array for
    every trial were made before the first one ran); trials now run one after another until stopped."""
    made = []

    class Stop(Exception):
        pass

    def make_method():
        made.append(1)
        if len(made) > 3:  # the 4th trial stops the run, as Ctrl-C would
            raise Stop()
        return Recorder()

    with pytest.raises(Stop):
        protocol.evaluate(make_method, small_task(n_test_devices=1), samples=(5,), trials=10 ** 11, n_pretrain=20)
    assert len(made) == 4


@pytest.mark.parametrize("method", ["phys_bayes", "hwl_ridge", "copy"])
def test_a_test_devices_table_reaches_a_method_only_through_its_own_k_measurements(method):
    """Pretraining and every other test device must not see a test device's table: permuting and scaling
    raspi4's latencies leaves gold_6226's score bit-identical, while raspi4's own moves."""
    table = data.help_table("nb201")
    table = table[table["arch"] < 600]
    train_table = table[table["device"].isin(["1080ti_1", "pixel3", "silver_4114"])]
    test_table = table[table["device"].isin(["gold_6226", "raspi4"])].copy()

    def scores(test):
        task = tasks.custom_task("nb201", ["1080ti_1", "pixel3", "silver_4114"], test, train_table=train_table)
        (result,) = protocol.evaluate(method, task, samples=10, trials=1, n_pretrain=100)
        return result["per_device"]

    before = scores(test_table)
    raspi4 = (test_table["device"] == "raspi4").to_numpy()
    test_table.loc[raspi4, "latency_ms"] = np.random.default_rng(0).permutation(
        test_table.loc[raspi4, "latency_ms"].to_numpy()) * 3.7
    after = scores(test_table)
    assert after["gold_6226"] == before["gold_6226"] and after["raspi4"] != before["raspi4"]
