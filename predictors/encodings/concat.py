"""Concatenated encodings (ZCPVec, HWLVec) as scikit-learn ``FeatureUnion``s."""
from __future__ import annotations

from sklearn.pipeline import FeatureUnion

from predictors.encodings.hwl import HWLEncoder
from predictors.encodings.vec import VecEncoder
from predictors.encodings.zcp import ZCPEncoder


def zcp_vec(space: str, proxies, columns=None) -> FeatureUnion:
    """ZCPVec: standardised proxies followed by the Vec one-hot."""
    return FeatureUnion([("zcp", ZCPEncoder(proxies, columns)), ("vec", VecEncoder(space))])


def hwl_vec(space: str, tables, devices=None, *, log: bool = False) -> FeatureUnion:
    """HWLVec: reference-device latencies (min-max scaled on train archs) followed by Vec."""
    return FeatureUnion([("hwl", HWLEncoder(tables, devices, log=log)), ("vec", VecEncoder(space))])
