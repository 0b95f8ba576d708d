"""Architecture encodings as scikit-learn transformers: Vec, HWL, ZCP and their concatenations.

Each transformer takes a sequence of architecture keys as ``X``.
"""
from predictors.encodings.concat import hwl_vec, zcp_vec
from predictors.encodings.hwl import HWLEncoder, latency_matrix
from predictors.encodings.vec import VecEncoder, arch_keys
from predictors.encodings.zcp import PROXIES, ZCPEncoder, read_proxy_table

__all__ = ["HWLEncoder", "PROXIES", "VecEncoder", "ZCPEncoder", "arch_keys", "hwl_vec", "latency_matrix",
           "read_proxy_table", "zcp_vec"]
