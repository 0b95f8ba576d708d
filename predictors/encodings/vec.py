"""Vec: the search space's own one-hot encoding (op per NB201 edge / per FBNet layer)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from spaces import get_space


def arch_keys(X, space: str) -> list:
    """Canonical keys of ``space`` for a sequence of keys (indices, arch strings, FBNet keys)."""
    from predictors.data import resolve_keys  # data imports pandas-heavy code; keep encodings light

    return resolve_keys(pd.Series(list(X), dtype=object), space, where="architectures")


class VecEncoder(BaseEstimator, TransformerMixin):
    """One-hot op per edge (NB201, 30 columns) or per layer (FBNet, 198 columns).

    Parameters
    ----------
    space : {"nb201", "fbnet"}
        Search space of the architecture keys passed to ``transform``.

    Attributes
    ----------
    n_features_out_ : int
        Width of the encoding.

    Examples
    --------
    >>> VecEncoder("nb201").fit_transform([0]).shape
    (1, 30)
    """

    def __init__(self, space: str = "nb201"):
        self.space = space

    def fit(self, X=None, y=None):
        mod = get_space(self.space)
        self.n_features_out_ = mod.vec_encoding([0] if mod.NAME == "nb201" else [",".join(["skip"] * 22)]).shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        return get_space(self.space).vec_encoding(arch_keys(X, self.space)).astype(np.float64)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        return np.array([f"vec{i}" for i in range(self.n_features_out_)], dtype=object)
