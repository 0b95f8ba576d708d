"""The closed-form posterior of phys_bayes and what the onboarding does with it: the mean is the
method's own prediction, draws have the posterior's moments, designs and variance batches pick
where the model is unsure, and the loop runs on them with a model-based rho estimate."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import spearmanr

from predictors import data, recommended, registry
from predictors.base import TrainTables
from predictors.onboard import OnboardLoop, OnboardSettings
from predictors.onboard.design import design_matrix, design_picks, integrated_picks, variance_picks
from predictors.onboard.estimate import (DEFAULT_CALIBRATION, RhoEstimate, calibrate, coarse_timer, fit_calibration,
                                        fit_interval, interval_half_width, is_whole_ms, widen)
from predictors.onboard.settings import OnboardError
from predictors.onboard.posterior import (FeaturePosterior, GridPosterior, expected_log_error, fit_posterior,
                                          measured_noise_factor, model_rho, model_rho_at, spearman_rows, supports)
from predictors.onboard.replay import TableDevice, replay_device
from predictors.onboard.report import text_lines
from spaces import nb201
from tests.onboard_tables import small  # noqa: F401  (the shared fixture)


@pytest.fixture(scope="module")
def method(small):
    tables, _ = small
    return registry.get_method("phys_bayes", random_state=0).pretrain("nb201", TrainTables(tables, tables))


@pytest.fixture(scope="module")
def fitted(method, small):
    _, truth = small
    archs = list(truth.index[::50])[:12]
    y = truth.loc[archs].to_numpy()
    return method.adapt(archs, y), archs, y


def test_posterior_mean_is_the_methods_prediction(fitted, small):
    adapted, archs, y = fitted
    _, truth = small
    post = fit_posterior(adapted, archs, y, mass=1.0, max_points=100_000)  # every grid point: exact
    others = list(truth.index[1:200:7])
    mean, var = post.mean_var(others)
    assert adapted.response == "ms"  # the default: the mean is in ms
    np.testing.assert_allclose(mean, adapted.predict_response(others), atol=1e-8)
    np.testing.assert_allclose(adapted.from_response(mean), adapted.predict(others), rtol=1e-10)
    assert np.all(var > 0)
    # As log-ms: the log of the prediction, and a spread relative to it.
    log_mean, log_sd = post.log_ms_mean_sd(others)
    np.testing.assert_allclose(log_mean, np.log(adapted.predict(others)), atol=1e-8)
    np.testing.assert_allclose(log_sd, np.sqrt(var) / adapted.predict(others), rtol=1e-10)
    # The default keeps the most probable points only; its mean stays close (within 5 %).
    mean_top, _ = fit_posterior(adapted, archs, y).mean_var(others)
    assert np.abs(np.log(adapted.from_response(mean_top) / adapted.predict(others))).max() < 0.05
    # Measured archs are known up to the noise: far less variance than elsewhere.
    assert post.mean_var(archs)[1].mean() < 0.5 * var.mean()


def test_the_posterior_reuses_the_adapts_grid_which_no_copy_or_model_file_carries(method, fitted, tmp_path):
    import copy

    from harness.model_file import load_model, save_model

    _, archs, y = fitted
    adapted = method.adapt(archs, y)  # the module's fixture keeps its own
    kept = adapted.__dict__["_measured_fit"][3]
    features, grid = adapted.measured_fit(archs, y)
    assert grid is kept and "_measured_fit" not in adapted.__dict__  # the adapt's own, handed over once
    fresh = adapted.fit_grid(adapted.model_features(archs), y)
    np.testing.assert_array_equal(grid.prob, fresh.prob)
    np.testing.assert_array_equal(grid.alpha, fresh.alpha)
    # Another measured set gets its own grid.
    _, other = adapted.measured_fit(archs[:-1], y[:-1])
    assert other is not grid and other.alpha.shape[1] == len(archs) - 1
    # Copies and model files leave it out (the restricted loader would refuse its class).
    adapted = method.adapt(archs, y)
    assert "_measured_fit" in adapted.__dict__ and "_measured_fit" not in copy.deepcopy(adapted).__dict__
    saved = load_model(save_model(tmp_path / "m.pt", adapted, method="phys_bayes", space="nb201", train_devices=[]))
    assert "_measured_fit" not in saved["model"].__dict__
    np.testing.assert_allclose(saved["model"].predict(archs), adapted.predict(archs))


def test_draws_have_the_posteriors_moments(fitted, small):
    adapted, archs, y = fitted
    _, truth = small
    post = fit_posterior(adapted, archs, y)
    others = list(truth.index[3:300:10])
    feats = post.features(others)
    funcs, noise_sd = post.draws(feats, 4000, np.random.default_rng(0))
    mean, var = post.mean_var(feats=feats)
    draws_log = post.y_mean + post.y_std * funcs
    assert funcs.shape == (4000, len(others)) and noise_sd.shape == (4000,) and np.all(noise_sd > 0)
    np.testing.assert_allclose(draws_log.mean(axis=0), mean, atol=4 * np.sqrt(var.max() / 4000) + 1e-3)
    np.testing.assert_allclose(draws_log.var(axis=0), var, rtol=0.15, atol=1e-4)


def test_model_rho_tracks_the_noise_it_is_told(fitted, small):
    adapted, archs, y = fitted
    _, truth = small
    post = fit_posterior(adapted, archs, y)
    rest = [a for a in truth.index if a not in set(archs)]
    feats = post.features(rest)
    pred = adapted.predict_response(rest)
    rho, low, high = model_rho(post, pred, feats, rng=np.random.default_rng(0))
    assert -1 <= low <= rho <= high <= 1
    cold, warm = model_rho_at(post, pred, feats, [0.0, 1.0], rng=np.random.default_rng(0))
    assert cold[0] > warm[0]  # temperature 0: only the noise is left
    # The rho of each draw is Spearman's.
    rows = np.random.default_rng(1).standard_normal((3, 50))
    ref = rows[0] + 0.1 * rows[1]
    assert spearman_rows(ref, rows)[0] == pytest.approx(spearmanr(ref, rows[0]).statistic)


def test_expected_error_is_the_rms_over_archs_of_the_predictive_spread(fitted, small):
    """The expected error is a root mean square over archs of each one's predictive log spread, an arch predicted
    at a fraction of a millisecond (NB201's near-empty cells) counted as a log-normal of its spread: bounded, not
    the first-order sd / ms that grows without bound."""
    adapted, archs, y = fitted
    _, truth = small
    post = fit_posterior(adapted, archs, y)
    rest = [a for a in truth.index if a not in set(archs)]
    feats = post.features(rest)
    mean, sd = post.log_ms_mean_sd(feats=feats, with_noise=True)
    rms = expected_log_error(post, feats, y, tails=False)
    assert rms == pytest.approx(np.sqrt(np.mean(np.log1p(sd ** 2))), rel=1e-9)
    assert rms < np.sqrt(np.mean(sd ** 2))  # log(1 + s^2) < s^2: a spread as large as the latency counts less
    assert expected_log_error(post, feats, y, mean_weight=0.0, tails=False) < rms
    # outliers among the measured latencies (Student-t weights below 1) widen the noise of a new one
    assert (measured_noise_factor(post, y) > 1) == (expected_log_error(post, feats, y) > rms)


def _close(a, b, rel=1e-6):
    np.testing.assert_allclose(a, b, atol=rel * np.abs(b).max())


def test_many_measurements_give_the_kernel_forms_posterior_in_feature_space(method, small, monkeypatch):
    # above PRIMAL_ABOVE measurements the onboarding posterior is held in feature space (its k x k form ran out
    # of memory on a device's whole table); means, variances, draws, rho and picks must be the kernel form's
    _, truth = small
    archs = list(truth.index[::3])[:160]
    y = truth.loc[archs].to_numpy()
    adapted = method.adapt(archs, y)
    pool = [a for a in truth.index if a not in set(archs)][:300]
    assert len(archs) > recommended.PRIMAL_ABOVE
    loop_measured = dict(zip(archs, y))

    def forms():
        post = fit_posterior(adapted, archs, y)
        feats = post.features(pool)
        pred = adapted.predict_response(pool)
        loop = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), OnboardSettings(budget=2),
                           measured=loop_measured)
        loop.run()
        return post, {
            "mean_var": post.mean_var(feats=feats), "log_ms": post.log_ms_mean_sd(feats=feats),
            "loo": post.loo_residuals(), "draws": post.draws(feats, 16, np.random.default_rng(3)),
            "rho": model_rho(post, pred, feats, rng=np.random.default_rng(4)),
            "rho_loo": model_rho(post, pred, feats, rng=np.random.default_rng(4), loo_scale=1.0),
            "variance_picks": variance_picks(post, feats, 4),
            "integrated_picks": integrated_picks(post, feats, 4, np.random.default_rng(5)),
            "loop_estimate": loop.estimate.to_dict(), "loop_table": loop.predict_table()}

    primal, got = forms()
    monkeypatch.setattr(recommended, "PRIMAL_ABOVE", 10_000)
    kernel, want = forms()
    assert isinstance(primal, FeaturePosterior) and isinstance(kernel, GridPosterior)
    np.testing.assert_allclose(primal.prob, kernel.prob, atol=1e-8)
    assert got["variance_picks"] == want["variance_picks"] and got["integrated_picks"] == want["integrated_picks"]
    for name in ("mean_var", "log_ms", "draws", "loop_table"):
        for a, b in zip(got[name], want[name]):
            _close(a, b)
    _close(got["loo"], want["loo"])
    _close(np.array(got["rho"]), np.array(want["rho"]))
    _close(np.array(got["rho_loo"]), np.array(want["rho_loo"]))
    for key, value in want["loop_estimate"].items():
        assert got["loop_estimate"][key] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value)


def test_design_continues_from_measured_rows():
    design = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.5, 0.5]]) * 3
    rng = np.random.default_rng(0)
    assert design_picks(design, 1, [], rng, pool=None)[0] in (0, 2)
    # With the x direction measured, the most informative next row points along y.
    assert design_picks(design, 1, [0], rng, pool=None) == [2]
    picks = design_picks(design, 2, [0, 2], rng, pool=None)
    assert not {0, 2} & set(picks) and len(set(picks)) == 2
    with pytest.raises(ValueError, match="the 3 candidate architectures left"):
        design_picks(design, 4, [0, 2], rng)


def test_variance_batches_pick_uncertain_distinct_archs(fitted, small, method):
    adapted, archs, y = fitted
    _, truth = small
    post = fit_posterior(adapted, archs, y)
    pool = [a for a in truth.index if a not in set(archs)][:300]
    feats = post.features(pool)
    _, var = post.mean_var(feats=feats)
    picks = variance_picks(post, feats, 3)
    assert len(set(picks)) == 3 and picks[0] == int(np.argmax(var))
    assert var[picks].mean() > np.quantile(var, 0.9)
    weights = np.where(np.arange(len(pool)) == picks[0], 0.0, 1.0)  # a zero weight is never picked
    assert picks[0] not in variance_picks(post, feats, 3, weights=weights)
    ipicks = integrated_picks(post, feats, 3, np.random.default_rng(0))
    assert len(set(ipicks)) == 3
    assert design_matrix(method, pool).shape[0] == len(pool)
    assert supports(adapted) and supports(method)


@pytest.mark.parametrize("strategy", ["loop", "design"])
def test_loop_with_a_posterior_runs_without_ensemble_or_cv(method, small, strategy):
    tables, truth = small
    device = TableDevice(truth)
    loop = OnboardLoop(method, "nb201", list(truth.index), device,
                       OnboardSettings(budget=9, n_initial=5, batch_size=2, strategy=strategy), tables=tables)
    result = loop.run()
    assert result.spent == 9 == len(set(device.asked))
    assert loop.members == [] and set(loop.estimate_parts) == {"model"}
    est = result.estimate
    assert est.n_measured == 9 and est.source == "model" and est.low <= est.rho <= est.high
    half = interval_half_width(9, est.whole_ms)  # at least what train-device replay showed, either side
    assert half > 0 and est.low <= est.rho - half + 1e-12 and est.high >= min(1.0, est.rho + half)
    pred_ms, sd = loop.predict_table()
    assert np.all(pred_ms > 0) and np.all(sd > 0)
    # as predict takes them (a KeyError in the posterior's features)
    some = [nb201.to_string(a) for a in truth.index[:3]]
    np.testing.assert_allclose(np.column_stack(loop.predict_table(some)), np.column_stack([pred_ms, sd])[:3], rtol=1e-9)
    rest = [a for a in truth.index if a not in result.measured]
    assert spearmanr(result.adapted.predict(rest), truth.loc[rest]).statistic > 0.8


def test_the_design_adapts_after_every_measurement_and_ignores_the_schedule(method, small):
    # The design's picks read no latency, so the model after n measurements is the one a budget
    # of n ends with: the replay can read the curve at every n.
    tables, truth = small
    probe = list(truth.index[:50])
    predicted_at = {}  # measurements -> the adapted model's prediction on ``probe``

    def record(loop, step):
        predicted_at[step.n_measured] = loop.adapted.predict(probe)

    design = OnboardSettings(budget=9, strategy="design")
    longer = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), design,
                         tables=tables, on_step=record).run()
    assert list(predicted_at) == [5, 6, 7, 8, 9]  # 5 picks before the first adaptation: the design's own start
    shorter = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), replace(design, budget=7),
                          tables=tables).run()
    assert list(shorter.measured) == list(longer.measured)[:7]
    np.testing.assert_allclose(shorter.adapted.predict(probe), predicted_at[7], rtol=1e-12)


def test_the_default_for_a_method_with_a_posterior_is_3_design_picks_then_its_variance(method, small):
    # issue 8: the short start ranked better after 5-9 measurements on train-device replay (settings.SHORT_START)
    tables, truth = small
    rounds = []

    def loop(settings, on_step=None):
        return OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), settings, tables=tables,
                           on_step=on_step)

    default = loop(OnboardSettings(budget=8), lambda _, step: rounds.append(step.n_measured))
    assert (default.settings.strategy, default.settings.n_initial) == ("loop", 3)
    picked = list(default.run().measured)
    assert rounds == [3, 4, 5, 6, 7, 8]
    assert picked == list(loop(OnboardSettings(budget=8, strategy="loop", n_initial=3)).run().measured)
    design = list(loop(OnboardSettings(budget=8, strategy="design")).run().measured)
    assert picked[:3] == design[:3] and set(picked[3:]) - set(design)  # then picks the design would not make


def test_a_target_stop_waits_for_5_measurements_after_the_short_start(method, small):
    # the estimate's calibration and interval were fitted on rounds after 5 or more (settings.STOP_FROM)
    tables, truth = small
    anything = OnboardSettings(budget=9, target_rho=-0.9, unsure_width=2.0)  # every estimate reaches it, none unsure
    result = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), anything, tables=tables).run()
    assert result.stop_reason == "target" and [s.n_measured for s in result.steps] == [3, 4, 5]
    early = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), replace(anything, stop_from=3),
                        tables=tables).run()
    assert early.stop_reason == "target" and early.spent == 3


def test_loop_returns_to_the_design_once_design_after_archs_are_measured(method, small):
    # 3 design picks, then the posterior variance until 5 are measured, then the rest of the design's sequence
    tables, truth = small

    def run(**settings):
        return OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth),
                           OnboardSettings(budget=9, **settings), tables=tables).run()

    design = list(run(strategy="design").measured)
    variance = list(run(strategy="loop", n_initial=3).measured)
    hybrid = list(run(strategy="loop", n_initial=3, design_after=5).measured)
    assert hybrid[:5] == variance[:5] and hybrid[:3] == design[:3]
    assert set(hybrid[3:5]) - set(design)  # the variance picks are not the design's
    assert hybrid[5:] == [a for a in design if a not in set(hybrid[:5])][:4]
    with pytest.raises(OnboardError, match="design_after is None or a positive number"):
        run(strategy="loop", design_after=0)


def test_calibration_maps_the_raw_model_estimate_and_its_bounds(method, small):
    tables, truth = small
    runs = {cal: replay_device(method, "nb201", truth, OnboardSettings(budget=9, calibration=cal), tables=tables)
            for cal in (DEFAULT_CALIBRATION, None)}
    for cal, run in runs.items():
        for step in run["steps"]:
            raw = step["raw_rho"]
            assert step["est_rho"] == pytest.approx(calibrate(raw, step["n"], cal, coarse=step["coarse"]))
            assert step["low"] <= step["est_rho"] <= step["high"]
            if cal is not None:  # the widened interval holds the calibrated posterior-draw bounds
                low, high = (calibrate(step[b], step["n"], cal, coarse=step["coarse"])
                             for b in ("raw_low", "raw_high"))
                assert step["low"] <= low + 1e-12 and step["high"] >= high - 1e-12
    # the same seed and picks: the raw estimate does not depend on the calibration
    raw = {cal: [step["raw_rho"] for step in run["steps"]] for cal, run in runs.items()}
    assert raw[None] == pytest.approx(raw[DEFAULT_CALIBRATION])
    assert calibrate(0.9, 10, None) == 0.9 and -1.0 < calibrate(0.99, 5) < 1.0


def test_fit_calibration_recovers_a_known_map():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.5, 0.99, 400)
    n = rng.integers(5, 21, 400)
    true = np.array([calibrate(r, k, (0.3, 0.8, 1.5)) for r, k in zip(raw, n)])
    assert fit_calibration(raw, true, n) == pytest.approx((0.3, 0.8, 1.5, 0.0, 0.0), abs=0.02)
    # with coarse-timer rounds, their own shift and slope are recovered too
    coarse = rng.random(400) < 0.3
    coef = (0.3, 0.8, 1.5, -0.4, -0.2)
    true = np.array([calibrate(r, k, coef, coarse=c) for r, k, c in zip(raw, n, coarse)])
    assert fit_calibration(raw, true, n, coarse) == pytest.approx(coef, abs=0.03)
    with pytest.raises(ValueError, match="at least 3 rounds"):
        fit_calibration([0.9], [0.9], [10])
    with pytest.raises(ValueError, match="3 or 5 numbers"):
        calibrate(0.9, 10, (0.1, 0.2))


def test_interval_widening_depends_on_the_timer_and_is_fitted_to_a_coverage():
    floor, scale = (0.0, 0.12), (0.1, 0.0)  # (float timings, whole-ms timings)
    assert interval_half_width(4, False, floor, scale) == pytest.approx(0.05)
    assert interval_half_width(4, True, floor, scale) == pytest.approx(0.12)
    assert interval_half_width(4, True, 0.02, 0.1) == interval_half_width(4, False, 0.02, 0.1) == pytest.approx(0.05)
    # the shipped widths: a whole-ms timer's interval is never narrower than a float one's, however many measured
    counts = np.array([3, 5, 10, 20, 66, 100, 1000, 15625])
    assert np.all(interval_half_width(counts, True) >= interval_half_width(counts, False))
    assert widen(0.9, 0.88, 0.91, 0.15) == (0.75, 1.0) and widen(0.9, 0.5, 0.99, 0.05) == (0.5, 0.99)
    # estimates off by N(0, 0.05) with zero-width draws: 90 % needs about 1.645 * 0.05 either side
    rng = np.random.default_rng(0)
    true = rng.uniform(0.5, 0.9, 2000)
    rho, n = true + rng.normal(0, 0.05, 2000), np.full(2000, 10)
    f, s = fit_interval(n, rho, true, rho, rho, coverage=0.9)
    half = interval_half_width(10, False, f, s)
    assert 0.07 <= half <= 0.095
    fresh = rng.normal(0, 0.05, 20000)
    assert np.mean(np.abs(fresh) <= half) == pytest.approx(0.9, abs=0.03)
    # a second split twice as noisy: over all rounds 90 % needs less than within that split
    rho2 = true + rng.normal(0, 0.1, 2000)
    both = [np.concatenate(v) for v in ((n, n), (rho, rho2), (true, true))]
    pooled = interval_half_width(10, False, *fit_interval(*both, both[1], both[1]))
    per_split = interval_half_width(10, False, *fit_interval(*both, both[1], both[1], groups=np.repeat([0, 1], 2000)))
    assert pooled < 0.15 <= per_split <= 0.18
    with pytest.raises(ValueError, match="at least 10 rounds"):
        fit_interval([5], [0.9], [0.9], [0.9], [0.9])
    for bad in ((0.1, 0.2, 0.3), -0.1, (0.1, -0.2)):
        with pytest.raises(OnboardError, match="interval_floor"):
            OnboardSettings(interval_floor=bad).check(100)


def test_whole_ms_measurements_are_recognised_and_recorded(method, small):
    assert is_whole_ms([12.0, 7.0, 30.0]) and not is_whole_ms([12.0, 7.5, 30.0]) and not is_whole_ms([12.0, 7.0])
    # the calibration's whole-ms terms are FBNet's: the same phones rank at 0.93-0.98 on NB201
    assert coarse_timer([12.0, 7.0, 30.0], "fbnet") and not coarse_timer([12.0, 7.5, 30.0], "fbnet")
    assert not coarse_timer([12.0, 7.0, 30.0], "nb201")
    assert calibrate(0.95, 7, DEFAULT_CALIBRATION, coarse=True) < calibrate(0.95, 7, DEFAULT_CALIBRATION)
    tables, truth = small
    coarse = truth.round().clip(lower=1.0)  # the same device read with a whole-millisecond timer
    run = replay_device(method, "nb201", coarse, OnboardSettings(budget=7), tables=tables)
    steps = [step for step in run["steps"] if step["raw_rho"] is not None]
    assert steps and all(step["whole_ms"] and not step["coarse"] for step in steps)
    for step in steps:  # NB201: no calibration shift, but the whole-ms interval, wider than the float one
        assert step["est_rho"] == pytest.approx(calibrate(step["raw_rho"], step["n"], DEFAULT_CALIBRATION))
        half = interval_half_width(step["n"], True)
        assert half > interval_half_width(step["n"], False)
        assert step["low"] <= step["est_rho"] - half + 1e-12 and step["high"] >= min(1.0, step["est_rho"] + half)
    assert not any(step["whole_ms"] for step in replay_device(method, "nb201", truth, OnboardSettings(budget=7),
                                                              tables=tables)["steps"])
    # and the printed report says so, and whether the estimate was calibrated for it
    for coarse_terms in (False, True):
        est = RhoEstimate(0.8, 0.7, 0.9, 0.9, 7, 0.1, source="model", whole_ms=True, coarse=coarse_terms)
        report = {"device": "phone", "space": "fbnet", "method": "phys_bayes", "measurements_spent": 7, "budget": 7,
                  "already_in_store": 0, "failed": [], "stop_reason": "budget", "estimated_rho": est.to_dict(),
                  "candidates": 600, "measured": 7, "resembles": None}
        note = [line for line in text_lines(report) if "whole milliseconds" in line]
        assert len(note) == 1 and ("calibrated for it" in note[0]) == coarse_terms


def test_a_whole_ms_fbnet_phone_gets_the_coarse_timer_calibration():
    table = data.help_table("fbnet")
    table = table[table["arch"].isin(sorted(table["arch"].unique())[:400])]
    tables = data.by_device(table, ["1080ti_1", "silver_4114", "pixel3", "raspi4"])
    phone = data.by_device(table, ["samsung_a50"])["samsung_a50"]  # timed in whole ms in HELP's table
    fbnet_method = registry.get_method("phys_bayes", random_state=0).pretrain("fbnet", TrainTables(tables, tables))
    steps = replay_device(fbnet_method, "fbnet", phone, OnboardSettings(budget=7), tables=tables)["steps"]
    assert steps and all(step["whole_ms"] and step["coarse"] for step in steps)
    for step in steps:
        assert step["est_rho"] == pytest.approx(calibrate(step["raw_rho"], step["n"], DEFAULT_CALIBRATION,
                                                          coarse=True))


def test_replay_records_both_estimators_when_blended(method, small):
    tables, truth = small
    run = replay_device(method, "nb201", truth, OnboardSettings(budget=7, n_initial=5, estimator="blend"),
                        tables=tables, temperatures=(0.5, 1.0))
    last = run["steps"][-1]
    assert set(last["est_parts"]) == {"model", "cv"}
    assert last["est_rho"] == pytest.approx(np.mean([last["est_parts"]["model"][0], last["est_parts"]["cv"][0]]))
    assert {0.5, 1.0} <= set(last["model_at"]) and len(last["model_at"][1.0]) == 3


def test_loo_residuals_are_the_refit_residuals_of_one_grid_point(fitted):
    adapted, archs, y = fitted
    post = fit_posterior(adapted, archs, y, max_points=1)  # one grid point: the identity is exact
    yn = (adapted.to_response(y) - post.y_mean) / post.y_std
    cov = np.linalg.inv(post.kinv[0])  # prior + noise covariance of the measured set
    for i in (0, 5, 11):
        rest = np.delete(np.arange(len(yn)), i)
        pred = cov[i, rest] @ np.linalg.solve(cov[np.ix_(rest, rest)], yn[rest])
        assert post.loo_residuals()[i] == pytest.approx(yn[i] - pred, rel=1e-6, abs=1e-9)


def test_adaptive_loop_without_a_posterior_falls_back_to_the_ensemble(small):
    tables, truth = small
    ref = registry.get_method("simple_reference", random_state=0, select_repeats=1, score_archs=200)
    ref = ref.pretrain("nb201", TrainTables(tables, tables))
    loop = OnboardLoop(ref, "nb201", list(truth.index), TableDevice(truth),
                       OnboardSettings(budget=7, n_initial=5, batch_size=2, strategy="loop", n_members=3),
                       tables=tables)
    result = loop.run()
    assert result.spent == 7 and loop.posterior is None and len(loop.members) == 3
    assert result.estimate.source == "cv"
