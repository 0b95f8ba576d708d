"""Names of the proxies (torch-free, so the CLI can check flags before importing torch)."""
from __future__ import annotations

from predictors.zcp.errors import ZCPError

PROXY_NAMES = ("fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain", "snip",
               "synflow", "zen")
# No input batch at all (flops, params, l2_norm), an all-ones input (synflow) or seeded Gaussian
# inputs of their own (zen): their values do not depend on the data.
DATA_INDEPENDENT = ("flops", "l2_norm", "params", "synflow", "zen")


def check_proxies(names) -> tuple[str, ...]:
    """``names`` as a tuple (all when None); raises ZCPError naming the valid proxies."""
    if names is None:
        return PROXY_NAMES
    names = tuple([names] if isinstance(names, str) else names)
    unknown = [n for n in names if n not in PROXY_NAMES]
    if unknown or not names:
        raise ZCPError(f"unknown proxies {unknown or '(none given)'}; valid proxies: {', '.join(PROXY_NAMES)}")
    return names
