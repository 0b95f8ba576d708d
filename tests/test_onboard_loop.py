"""The onboarding loop on a replayed table: budget, no repeats, target stop, resume, failures;
diverse selection on constructed features; the rho estimate and its interval."""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import spearmanr

from predictors import registry
from predictors.base import TrainTables
from predictors.onboard import (OnboardError, OnboardLoop, OnboardSettings, kcenter, kmeans_picks,
                                prepare_method, space_features)
from predictors.onboard.ensemble import adapt_members, predict_spread
from predictors.onboard.estimate import cv_residuals, estimate_rho
from predictors.onboard.replay import TableDevice, replay_device
from tests.onboard_tables import small  # noqa: F401  (the shared fixture)


@pytest.fixture(scope="module")
def method(small):
    tables, _ = small
    m = prepare_method(registry.get_method("simple_reference", random_state=0, select_repeats=1, score_archs=200),
                       range(2, 13))
    return m.pretrain("nb201", TrainTables(tables, tables))


def _loop(method, small, measure, **settings):
    tables, truth = small
    return OnboardLoop(method, "nb201", list(truth.index), measure, OnboardSettings(**settings), tables=tables,
                       device="my_pi")


def test_the_default_for_a_method_without_a_posterior_is_its_design_from_5_picks(method, small):
    # its loop, steered by an ensemble's spread, was never replayed better (settings.SHORT_START is phys_bayes')
    _, truth = small
    loop = _loop(method, small, TableDevice(truth), budget=7, n_members=0)
    assert (loop.settings.strategy, loop.settings.n_initial) == ("design", 5)
    picked = list(loop.run().measured)
    assert [s.n_measured for s in loop.steps] == [5, 6, 7]
    assert picked == list(_loop(method, small, TableDevice(truth), budget=7, n_members=0, strategy="design",
                                n_initial=5).run().measured)


def test_budget_respected_and_nothing_measured_twice(method, small):
    _, truth = small
    device = TableDevice(truth)  # raises on a repeated arch
    result = _loop(method, small, device, budget=10, n_initial=4, batch_size=3, n_members=4).run()
    assert result.stop_reason == "budget"
    assert result.spent == 10 == len(device.asked) == len(set(device.asked))
    assert set(result.measured) == set(device.asked)
    assert [s.n_measured for s in result.steps] == [4, 7, 10]
    assert result.estimate is not None and result.estimate.low <= result.estimate.rho <= result.estimate.high


def test_predicted_table_covers_every_candidate_with_uncertainty(method, small):
    _, truth = small
    loop = _loop(method, small, TableDevice(truth), budget=7, n_initial=5, batch_size=2, n_members=4)
    loop.run()
    pred_ms, spread = loop.predict_table()
    assert pred_ms.shape == spread.shape == (len(truth),)
    assert np.all(pred_ms > 0) and np.all(spread >= 0) and spread.max() > 0
    rest = [a for a in truth.index if a not in loop.measured]
    rho = spearmanr(loop.adapted.predict(rest), truth.loc[rest]).statistic
    assert rho > 0.8  # raspi4 from 7 measurements: a useful predictor, not noise


def test_stops_at_target_rho(method, small):
    _, truth = small
    device = TableDevice(truth)
    result = _loop(method, small, device, budget=12, n_initial=5, batch_size=2, n_members=3,
                   target_rho=0.5).run()
    assert result.stop_reason == "target"
    assert result.spent == 5 == len(device.asked)
    assert result.estimate.rho >= 0.5


def test_an_unsure_estimate_past_the_target_measures_on(method, small):
    _, truth = small
    sure = _loop(method, small, TableDevice(truth), budget=9, n_initial=5, batch_size=2, n_members=3,
                 target_rho=0.5).run()
    assert sure.stop_reason == "target" and not sure.estimate.unsure
    # every interval counts as too wide: the same loop never stops on its estimate, however high
    unsure = _loop(method, small, TableDevice(truth), budget=9, n_initial=5, batch_size=2, n_members=3,
                   target_rho=0.5, unsure_width=0.0).run()
    assert unsure.stop_reason == "budget" and unsure.spent == 9 and unsure.estimate.unsure
    assert unsure.estimate.rho >= 0.5


def test_resumes_from_known_measurements(method, small):
    _, truth = small
    known = {a: float(truth.loc[a]) for a in list(truth.index)[:6]}
    device = TableDevice(truth)
    tables, _ = small
    loop = OnboardLoop(method, "nb201", list(truth.index), device,
                       OnboardSettings(budget=9, n_initial=5, batch_size=2, n_members=3), tables=tables,
                       measured=known)
    result = loop.run()
    assert result.spent == 9
    assert len(device.asked) == 3 and not set(device.asked) & set(known)  # only the rest of the budget
    assert set(known) <= set(result.measured)


def test_failed_measurements_count_and_are_never_retried(method, small):
    _, truth = small
    first = _loop(method, small, TableDevice(truth), budget=5, n_initial=5, n_members=0).run()
    bad = list(first.measured)[:2]  # the loop picks deterministically: make two of its picks fail
    device = TableDevice(truth, fail=bad)
    result = _loop(method, small, device, budget=8, n_initial=5, batch_size=3, n_members=3).run()
    assert sorted(result.failed) == sorted(bad)
    assert result.spent == 8 and len(result.measured) == 6
    assert len(device.asked) == len(set(device.asked)) == 8


def test_every_measurement_failing_is_an_error(method, small):
    _, truth = small
    with pytest.raises(OnboardError, match="no measurement succeeded"):
        _loop(method, small, TableDevice(truth, fail=set(truth.index)), budget=6, n_initial=3).run()


def test_bad_settings_are_refused(method, small):
    with pytest.raises(OnboardError, match="budget"):
        _loop(method, small, TableDevice(small[1]), budget=0)
    with pytest.raises(OnboardError, match="valid: loop, design, diverse, random"):
        _loop(method, small, TableDevice(small[1]), strategy="smart")


def test_replay_reports_true_and_estimated_rho(method, small):
    tables, truth = small
    run = replay_device(method, "nb201", truth, OnboardSettings(budget=8, n_initial=5, batch_size=3, n_members=3),
                        tables=tables)
    assert [s["n"] for s in run["steps"]] == [5, 8]
    assert run["asked"] == run["spent"] == 8
    assert all(-1 <= s["true_rho"] <= 1 and s["low"] <= s["est_rho"] <= s["high"] for s in run["steps"])


def test_replay_reads_the_held_out_table_only_through_its_answers(small):
    """The replayed device's unmeasured latencies are scored, never read: with every latency the loop did not ask
    for permuted among themselves (and scaled, so their range moves too), the picks and every estimate repeat."""
    tables, truth = small
    method = registry.get_method(None, random_state=0).pretrain("nb201", TrainTables(tables, tables))

    def onboard(table):
        device = TableDevice(table)
        result = OnboardLoop(method, "nb201", list(table.index), device, OnboardSettings(budget=8), tables=tables,
                             device=str(table.name)).run()
        return device.asked, [dict(s.to_dict(), seconds=0) for s in result.steps if s.estimate is not None]

    asked, steps = onboard(truth)
    rest = ~truth.index.isin(asked)
    hidden = truth.copy()
    hidden[rest] = np.random.default_rng(0).permutation(truth[rest].to_numpy()) * 2.9
    assert len(steps) >= 4 and onboard(hidden) == (asked, steps)
    replays = [replay_device(method, "nb201", t, OnboardSettings(budget=8), tables=tables) for t in (truth, hidden)]
    assert replays[0]["steps"][-1]["true_rho"] != replays[1]["steps"][-1]["true_rho"]


# -- diverse selection on constructed features ---------------------------------------------------
def _clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.vstack([c + 0.1 * rng.standard_normal((30, 2)) for c in centres])
    return points, np.repeat([0, 1, 2], 30)


@pytest.mark.parametrize("pick", [kcenter, kmeans_picks])
def test_diverse_picks_cover_every_cluster(pick):
    points, cluster = _clusters()
    picks = pick(points, 3)
    assert sorted(cluster[picks]) == [0, 1, 2]
    # With one arch of cluster 0 already measured, two picks go to the two other clusters.
    picks = pick(points, 2, already=[5])
    assert sorted(cluster[picks]) == [1, 2] and 5 not in picks


def test_kcenter_refuses_more_picks_than_candidates():
    points, _ = _clusters()
    with pytest.raises(ValueError, match="only 88 of 90"):
        kcenter(points, 89, already=[0, 1])


def test_space_features_weights_and_groups(small):
    tables, truth = small
    keys = list(truth.index)[:50]
    feats = space_features("nb201", keys, tables, {"hwl": 1.0, "cost": 1.0})
    assert feats.shape[0] == 50 and np.all(np.isfinite(feats))
    assert np.isclose(feats.var(axis=0).sum(), 2.0)  # each group carries its share of the variance
    with pytest.raises(ValueError, match="unknown feature group"):
        space_features("nb201", keys, tables, {"latency": 1.0})


# -- the estimate and its interval ----------------------------------------------------------------
def test_estimate_matches_a_known_noise_level_and_its_interval_holds_it():
    rng = np.random.default_rng(1)
    pred = rng.standard_normal(3000)
    truth = pred + 0.3 * rng.standard_normal(3000)
    true_rho = spearmanr(pred, truth).statistic
    est = estimate_rho(pred, 0.3 * rng.standard_normal(40), rng=rng)
    assert abs(est.rho - true_rho) < 0.03
    assert est.low <= true_rho <= est.high and est.high - est.low < 0.1
    few = estimate_rho(pred, 0.3 * rng.standard_normal(5), rng=rng)
    assert few.high - few.low > est.high - est.low  # fewer measurements, wider interval
    worse = estimate_rho(pred, 1.0 * rng.standard_normal(40), rng=rng)
    assert worse.rho < est.rho - 0.1


def test_cv_residuals_and_ensemble_spread(method, small):
    _, truth = small
    archs = list(truth.index)[:10]
    y = truth.loc[archs].to_numpy()
    resid = cv_residuals(method, archs, y, rng=np.random.default_rng(0))
    assert resid.shape == (10,) and np.all(np.isfinite(resid)) and np.abs(resid).max() > 0
    with pytest.raises(ValueError, match="at least 3"):
        cv_residuals(method, archs[:2], y[:2], rng=np.random.default_rng(0))
    members = adapt_members(method, archs, y, n_members=4, subsample=0.7, rng=np.random.default_rng(0))
    assert len(members) == 4
    spread = predict_spread(method.adapt(archs, y), members, list(truth.index)[100:200])
    assert spread.std_log_ms.shape == (100,) and spread.std_log_ms.max() > 0


def test_acquisition_fills_uncovered_regions_most_uncertain_first():
    from predictors.onboard.acquisition import choose, focus_weights

    points, cluster = _clusters()
    measured = points[cluster == 0][:1]
    scores = np.array([0.2, 1.0, 2.0])[cluster]  # measured in 0: the members agree there; 2 most uncertain
    picks = choose("greedy", scores, points, measured, 2)
    assert sorted(cluster[picks]) == [1, 2]  # damped near the first pick: the second goes elsewhere
    picks = choose("cover", scores, points, measured, 2)
    assert 0 not in cluster[picks] and len(set(picks)) == 2  # the covered region gets nothing
    assert cluster[choose("cover", scores, points, measured, 1)][0] == 2
    w = focus_weights(np.arange(100.0), focus_quantile=0.75, tail_weight=0.5)
    assert w[:75].min() == 1.0 and w[-1] == pytest.approx(0.5, abs=0.02) and np.all(np.diff(w) <= 0)


@pytest.mark.parametrize("n_candidates", [2, 3, 4])
def test_fewer_candidates_than_initial_picks_measures_each_once(method, small, n_candidates):
    """--candidates 0,1,2 with the default 5 initial picks was a ValueError (k=2 is larger than the 0 candidate
    architectures left) before any measurement."""
    tables, truth = small
    candidates = list(truth.index[:n_candidates])
    device = TableDevice(truth)
    result = OnboardLoop(method, "nb201", candidates, device, OnboardSettings(budget=10), tables=tables,
                         device="my_pi").run()
    assert result.stop_reason == "candidates"
    assert sorted(device.asked) == sorted(candidates) == sorted(result.measured)


def test_a_series_answer_is_read_by_its_index_not_its_order(method, small):
    # `truth[truth.index.isin(archs)]` comes back in the table's order, not the order asked: read by position, the
    # loop fitted archs on each other's latencies without a word
    _, truth = small
    result = _loop(method, small, lambda archs: truth[truth.index.isin(archs)], budget=6, n_initial=5,
                   n_members=0).run()
    assert result.measured == {a: truth.loc[a] for a in result.measured}


@pytest.mark.parametrize("answer, words", [(lambda archs: 3.0, "measure returned float 3.0: give one latency"),
                                           (lambda archs: ["n/a"] * len(archs), "returned 'n/a' for architecture")])
def test_an_answer_that_is_no_latency_is_one_clear_error(method, small, answer, words):
    loop = _loop(method, small, answer, budget=6, n_initial=5, n_members=0)
    with pytest.raises(OnboardError, match=words):
        loop.run()
    assert loop.measured == {} and loop.failed == []


def test_arch_string_candidates_onboard_as_their_indices_and_another_space_is_refused(method, small):
    # strings reached the method's design (a KeyError deep in it); fbnet for an nb201 method ran on, silently
    from spaces import nb201

    tables, truth = small
    settings = OnboardSettings(budget=6, n_initial=5, n_members=0)
    by_index = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), settings, tables=tables).run()
    strings = [nb201.to_string(a) for a in truth.index]
    by_string = OnboardLoop(method, "nb201", strings, TableDevice(truth), settings, tables=tables).run()
    assert by_string.measured == by_index.measured
    with pytest.raises(OnboardError, match="SimpleReference was pretrained on nb201, not fbnet"):
        OnboardLoop(method, "fbnet", list(truth.index), TableDevice(truth), settings)


def test_measurements_already_made_may_be_a_series(method, small):
    # resuming from a table's latencies: "The truth value of a Series is ambiguous"
    _, truth = small
    known = truth.iloc[[3, 50, 100]]
    result = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth.drop(index=known.index)),
                         OnboardSettings(budget=6, n_members=0), measured=known).run().measured
    assert len(result) == 6 and {a: result[a] for a in known.index} == known.to_dict()


def test_a_method_not_pretrained_is_refused_before_anything_is_measured(small):
    # its design picks were measured, then the first adapt said "not pretrained": device time spent for nothing
    _, truth = small
    device = TableDevice(truth)
    with pytest.raises(OnboardError, match="SimpleReference is not pretrained: call pretrain"):
        OnboardLoop(registry.get_method("simple_reference"), "nb201", list(truth.index), device,
                    OnboardSettings(budget=6)).run()
    assert device.asked == []


def test_an_answer_by_arch_string_is_read_by_arch(method, small):
    # a Series by arch string in another order was read by position (archs fitted on each other's latencies), and a
    # dict by arch string failed every arch, asked by index, without a word
    from spaces import nb201

    _, truth = small
    by_string = truth.set_axis([nb201.to_string(a) for a in truth.index])
    for answer in (lambda archs: by_string.loc[[nb201.to_string(a) for a in archs[::-1]]],
                   lambda archs: {nb201.to_string(a): truth.loc[a] for a in archs}):
        result = _loop(method, small, answer, budget=6, n_initial=5, n_members=0).run()
        assert len(result.measured) == 6 and result.measured == {a: truth.loc[a] for a in result.measured}


@pytest.mark.parametrize("answer, words", [
    (lambda archs, truth: truth.loc[archs].to_frame("latency_ms"), "measure returned a DataFrame (columns latency_ms)"),
    (lambda archs, truth: truth.loc[archs + archs[:1]], "measure answered architecture"),
])
def test_a_table_or_an_arch_answered_twice_is_one_clear_error(method, small, answer, words):
    # a DataFrame was a KeyError (its columns taken for the archs); a Series naming an arch twice said its two
    # values were "not a latency in ms", printed over lines
    _, truth = small
    loop = _loop(method, small, lambda archs: answer(archs, truth), budget=6, n_initial=5, n_members=0)
    with pytest.raises(OnboardError, match=re.escape(words)):
        loop.run()
    assert loop.measured == {} and loop.failed == []


def test_a_failed_measurement_among_those_already_made_is_failed_not_adapted_on(method, small):
    # a NaN in `measured` (a table's unmeasured cell) was adapted on: ValueError, after the first picks were measured
    _, truth = small
    known = truth.iloc[[3, 50, 100]].copy()
    known.iloc[1] = np.nan
    loop = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth.drop(index=known.index)),
                       OnboardSettings(budget=6, n_members=0), measured=known)
    assert loop.failed == [known.index[1]] and set(loop.measured) == {known.index[0], known.index[2]}
    result = loop.run()
    assert known.index[1] not in result.measured and result.spent == 6
