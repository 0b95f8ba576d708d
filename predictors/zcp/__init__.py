"""Zero-cost proxies computed by hwl in PyTorch for any NB201 or FBNet architecture.

- ``predictors.zcp.proxies``: the 12 proxies (fisher, flops, grad_norm, grasp, jacov, l2_norm,
  nwot, params, plain, snip, synflow, zen), each from its paper (imports torch).
- ``predictors.zcp.inputs``: the batch they read (synthetic by default, CIFAR or an image folder).
- ``predictors.zcp.run``: one architecture in process, or many as Ray tasks, resumable.
- ``predictors.zcp.store``: the ``zcp_scores`` table in a harness store file.
- ``predictors.zcp.table``: the proxy frame the ZCP / ZCPVec encodings take, and Parquet output.

Importing this package does not import torch or Ray.
"""
from predictors.zcp.errors import ZCPError
from predictors.zcp.names import DATA_INDEPENDENT, PROXY_NAMES, check_proxies
from predictors.zcp.inputs import BatchSpec, load_batch
from predictors.zcp.run import RunReport, run_proxies, score_arch, wide_table
from predictors.zcp.store import ProxyStore
from predictors.zcp.table import fill_nonfinite, proxy_frame, run_table, write_parquet


__all__ = ["BatchSpec", "DATA_INDEPENDENT", "PROXY_NAMES", "ProxyStore", "RunReport", "ZCPError", "check_proxies", "fill_nonfinite",
           "load_batch", "proxy_frame", "run_proxies", "run_table", "score_arch", "wide_table", "write_parquet"]
