"""Zero-cost proxies computed by hwl in PyTorch for any NB201 or FBNet architecture.

- ``predictors.zcp.proxies``: the 12 proxies (fisher, flops, grad_norm, grasp, jacov, l2_norm,
  nwot, params, plain, snip, synflow, zen), each from its paper (imports torch).
- ``predictors.zcp.inputs``: the batch they read (synthetic by default, CIFAR or an image folder).
- ``predictors.zcp.run``: one architecture in process, or many as Ray tasks, resumable.
- ``predictors.zcp.store``: the ``zcp_scores`` table in a harness store file.
- ``predictors.zcp.table``: the proxy frame the ZCP / ZCPVec encodings take, and Parquet output.

Importing this package does not import torch, Ray or pandas: each name below is imported from its module on first
use, so `hwl zcp`'s parser, which reads ``errors`` and ``names``, does not wait for pandas (``run``, ``store``,
``table``).
"""
from predictors.lazy import lazy_names

_HOMES = {
    "ZCPError": "errors",
    "DATA_INDEPENDENT": "names", "PROXY_NAMES": "names", "check_proxies": "names",
    "BatchSpec": "inputs", "load_batch": "inputs",
    "RunReport": "run", "run_proxies": "run", "score_arch": "run", "wide_table": "run",
    "ProxyStore": "store",
    "fill_nonfinite": "table", "proxy_frame": "table", "run_table": "table", "write_parquet": "table",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
