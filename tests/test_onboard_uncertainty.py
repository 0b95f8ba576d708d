"""The onboarding table's ``uncertainty``: a spread of the latency, which holds the truth as often as it says."""
from __future__ import annotations

import numpy as np
import pytest

from predictors import registry
from predictors.base import TrainTables
from predictors.onboard import OnboardLoop, OnboardSettings
from predictors.onboard.replay import TableDevice
from tests.onboard_tables import small_nb201


@pytest.fixture(scope="module")
def onboarded():
    """raspi4 onboarded with phys_bayes's defaults on 20 measurements of its HELP table (a replay)."""
    tables, truth = small_nb201()
    method = registry.get_method("phys_bayes", random_state=0).pretrain("nb201", TrainTables(tables, tables))
    loop = OnboardLoop(method, "nb201", list(truth.index), TableDevice(truth), OnboardSettings(budget=20),
                       tables=tables)
    loop.run()
    return loop, truth


def test_the_uncertainty_holds_the_fitted_noise_beside_the_means(onboarded):
    loop, _ = onboarded
    rest = loop.unmeasured()
    _, sd = loop.predict_table(rest)
    _, mean_sd = loop.posterior.log_ms_mean_sd(rest)
    mean, _ = loop.posterior.mean_var(rest)
    noise_sd = np.sqrt(loop.posterior.noise_var(mean)) * loop.adapted.log_ms_slope(mean)
    np.testing.assert_allclose(sd ** 2, mean_sd ** 2 + noise_sd ** 2, rtol=1e-9)
    assert np.all(noise_sd > 0)


def test_90_percent_intervals_hold_the_true_latency_of_most_unmeasured_archs(onboarded):
    # Before, the column was the spread of the model's mean alone: after 20 measurements its 90 % intervals held
    # 51 % of raspi4's true latencies here (84 % now) (60 % over 28 train devices, scripts/bench_onboard_uncertainty)
    loop, truth = onboarded
    rest = loop.unmeasured()
    pred_ms, sd = loop.predict_table(rest)
    err = np.abs(np.log(truth.loc[rest].to_numpy()) - np.log(pred_ms))
    assert np.mean(err <= 1.645 * sd) >= 0.8
