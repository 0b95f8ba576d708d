"""Baselines in the few-shot contract: FLOPs, params, copy, HWL ridge and the simple reference."""
from predictors.baselines.copy_device import CopyBaseline, best_correlated
from predictors.baselines.cost_proxy import FlopsBaseline, ParamsBaseline
from predictors.baselines.hwl_ridge import HWLRidge
from predictors.baselines.simple_reference import SimpleReference

__all__ = ["CopyBaseline", "FlopsBaseline", "HWLRidge", "ParamsBaseline", "SimpleReference", "best_correlated"]
