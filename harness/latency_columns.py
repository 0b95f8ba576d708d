"""Which column names of a wide latency table (one column per device) name no device: a lab's table may carry
FLOPs, params, an accuracy, a proxy score or a setting beside its devices' latencies, all positive numbers.

Reading them as devices gave a silent wrong number (`hwl evaluate` averaged a FLOPs column's rho into its mean), so
the wide table's readers refuse them (``harness.export_tables.wide_cells``) and its writer warns of a device named
like one (``harness.exporting.export_help``). The names of the public tables' devices (fpga, eyeriss, 1080ti_1,
gold_6226, ...) match none.
"""
from __future__ import annotations

import re


def _words(*words: str) -> str:
    """A regex of any of ``words`` as a whole word of a column name (words split on anything but a letter or a
    digit), so 'test_acc' has the word acc and 'gold_6226' no word of these lists."""
    either = "|".join(words)
    return rf"(?:^|[^a-z0-9])(?:{either})(?:$|[^a-z0-9])"


# Each a pattern of the lower-cased name and what such a column holds. Words that may be part of a device's name,
# naming its hardware or setting ("mac_m1", "xeon_8_cores", "amd_zen_3"), count only as the column's whole name.
_NOT_LATENCY = (
    (re.compile(r"^(?:n_?|num_?)?(?:batch(?:_?size)?|bs|threads|cores|workers)$|^(?:seed|epochs?|resolution)$"),
     "a setting"),
    (re.compile(_words(r"[kmgt]?flops?", r"[kmg]?macs", r"(?:n|num)?params", r"parameters", r"size", r"bytes")),
     "a count or size"),
    # by the figure's own word, not a val_/test_/train_ prefix: a lab's "test_rig" or "train-gpu" is a device
    (re.compile(_words(r"acc", r"accuracy", r"top[-_ ]?[15]", r"loss", r"error")),
     "an accuracy, a loss or a train/test figure"),
    # the zero-cost proxies `hwl zcp` computes (predictors.zcp.PROXY_NAMES; harness reads no predictors module)
    # and NAS-Bench-Suite-Zero's epe_nas
    (re.compile(r"^(?:epe_nas|fisher|grad_norm|grasp|jacov|l2_norm|nwot|plain|snip|synflow|zen)$"),
     "a zero-cost proxy"),
    (re.compile(r"^(?:rowid|row|level_\d+)$|" + _words(r"id", r"idx", r"index") + "$"),
     "a row number or id"),
)


def non_latency_kind(column) -> str | None:
    """What a column named ``column`` holds when its name says it is no device's latencies (an accuracy, a FLOPs
    count, a proxy score, a setting, an id), else None."""
    name = str(column).strip().lower()
    return next((kind for pattern, kind in _NOT_LATENCY if pattern.search(name)), None)


def named_as_no_latency(columns) -> list[str]:
    """"'flops' (a count or size)" for each of ``columns`` whose name says it holds no latencies."""
    return [f"{column!r} ({kind})" for column in columns if (kind := non_latency_kind(column))]


__all__ = ["named_as_no_latency", "non_latency_kind"]
