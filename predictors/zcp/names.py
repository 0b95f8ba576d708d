"""Names of the proxies (torch-free, so the CLI can check flags before importing torch)."""
from __future__ import annotations

from predictors.zcp.errors import ZCPError

PROXY_NAMES = ("fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain", "snip",
               "synflow", "zen")
# No input batch at all (flops, params, l2_norm), an all-ones input (synflow) or seeded Gaussian
# inputs of their own (zen): their values do not depend on the data.
DATA_INDEPENDENT = ("flops", "l2_norm", "params", "synflow", "zen")


def check_proxies(names) -> tuple[str, ...]:
    """``names`` as a tuple, each once, in order (all when None); raises ZCPError naming the valid proxies."""
    if names is None:
        return PROXY_NAMES
    # once each: a name given twice made two columns of one name (the Parquet write failed after the whole run)
    # and an arch never counted as done in the store (a rerun computed it again)
    names = tuple(dict.fromkeys([names] if isinstance(names, str) else names))
    unknown = [n for n in names if n not in PROXY_NAMES]
    if unknown or not names:
        raise ZCPError(f"unknown proxies {unknown or '(none given)'}; valid proxies: {', '.join(PROXY_NAMES)}")
    return names
