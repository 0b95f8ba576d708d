"""scripts/experiments/noise_blindness.py's leave-one-out check of the draws' spread and its left-out calibration."""
from importlib.machinery import SourceFileLoader
from pathlib import Path

import numpy as np

from predictors.onboard.posterior import GridPosterior

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiments" / "noise_blindness.py"
nb = SourceFileLoader("noise_blindness", str(SCRIPT)).load_module()


def test_loo_z2_is_the_refit_without_each_point():
    """The closed form (alpha_i ** 2 / (K^-1)_ii, averaged over grid points by probability) equals conditioning the
    Gaussian on the other points, point by point."""
    rng = np.random.default_rng(3)
    k, y = 6, rng.standard_normal(6)
    covs = []
    for noise in (0.1, 0.5):
        x = rng.standard_normal((k, 3))
        covs.append(x @ x.T + noise * np.eye(k))
    kinv = np.stack([np.linalg.inv(c) for c in covs])
    prob = np.array([0.3, 0.7])
    post = GridPosterior(None, [], np.ones((2, 1)), np.array([0.1, 0.5]), prob, kinv, kinv @ y, np.ones(k), 0.0, 1.0)
    brute = []
    for cov in covs:
        z2 = []
        for i in range(k):
            rest = np.arange(k) != i
            gain = np.linalg.solve(cov[np.ix_(rest, rest)], cov[rest, i])
            z2.append((y[i] - gain @ y[rest]) ** 2 / (cov[i, i] - gain @ cov[rest, i]))
        brute.append(np.mean(z2))
    assert np.isclose(nb.loo_z2(post), prob @ np.array(brute))


def test_check_noise_scale_matches_the_draws_variance_to_the_ratio():
    assert np.isclose(nb.check_noise_scale(1.0, 0.02, 0.1), 1.0)
    func, noise = 0.02, 0.1
    scale = nb.check_noise_scale(2.0, func, noise)
    assert np.isclose(func + noise * scale ** 2, 2.0 * (func + noise))
    assert nb.check_noise_scale(0.01, func, noise) == 0.1  # a tenth of the noise sd at least


def test_left_out_calibration_does_not_read_the_device_it_calibrates():
    """Of two devices, one estimated right and one 0.2 too high, each is calibrated by a fit on the other alone."""
    rng = np.random.default_rng(0)
    rows = []
    for d in range(2):
        for n in range(5, 13):
            raw = float(rng.uniform(0.6, 0.95))
            rows.append(dict(task="T", device=f"d{d}", n=n, raw=raw, coarse=False, true_rho=raw - 0.2 * d))
    estimate = nb.left_out_calibrated(rows, "raw", rows)
    raw = np.array([r["raw"] for r in rows])
    right = np.array([r["device"] == "d0" for r in rows])
    assert np.abs(estimate[~right] - raw[~right]).max() < 0.02  # d1 by d0's fit: (near) identity
    assert np.all(estimate[right] - raw[right] < -0.1)  # d0 by d1's fit: pulled down
