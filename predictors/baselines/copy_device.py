"""The copy baseline: predict with the train device that ranks the k samples best."""
from __future__ import annotations

import logging

import numpy as np
from scipy.stats import spearmanr

from predictors.base import FewShotMethod, UnusableMeasurementsError, full_tables, train_tables
from spaces import get_space

log = logging.getLogger(__name__)


class CopyBaseline(FewShotMethod):
    """Use the whole latency table of the train device best Spearman-correlated on the k samples.

    This is also the device choice of the paper's Eq. 1 (without a model behind it).

    Attributes
    ----------
    space_ : str
    tables_ : dict
        Train device -> whole latency table (lookup).
    device_ : str
        The new device's name; ``source_device_`` the train device copied, ``source_rho_`` its rho.
    """

    name = "copy"

    def __init__(self):
        pass

    def pretrain(self, space, train):
        self.space_ = get_space(space).NAME
        train = train_tables(self.space_, train, f"{type(self).__name__}.pretrain")
        self.tables_ = full_tables(train)
        if not self.tables_:
            raise ValueError("copy needs at least one train device")
        return self

    def _adapt(self, archs, y, device):
        self.source_device_, self.source_rho_ = best_correlated(self.tables_, archs, y)
        self.device_ = device

    def _predict(self, archs):
        pred = self.tables_[self.source_device_].reindex(archs).to_numpy(np.float64)
        missing = np.isnan(pred)
        if missing.any():
            log.warning("%s has no latency for %d archs: predicted as its median", self.source_device_,
                        int(missing.sum()))
            pred[missing] = float(self.tables_[self.source_device_].median())
        return pred


def best_correlated(tables: dict, archs, y) -> tuple[str, float]:
    """(train device, rho) with the highest Spearman against ``y`` on ``archs`` (paper Eq. 1).

    Devices lacking any of the archs are skipped; with a single sample every rho is undefined
    and the first device is returned.
    """
    best, best_rho = None, -np.inf
    for device, series in tables.items():
        lat = series.reindex(list(archs)).to_numpy(np.float64)
        if np.isnan(lat).any():
            continue
        rho = spearmanr(lat, y).statistic if len(y) > 1 and np.ptp(lat) > 0 and np.ptp(y) > 0 else np.nan
        rho = -np.inf if np.isnan(rho) else float(rho)
        if best is None or rho > best_rho:
            best, best_rho = device, rho
    if best is None:
        raise UnusableMeasurementsError("no train device has latencies for all the measured architectures (the "
                                        "device is compared with the train device that ranks them best)")
    return best, best_rho
