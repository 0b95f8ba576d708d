"""FBNet: 22 searchable layers, 9 candidate blocks each (HELP's FBNet latency tables).

An architecture key is the 22 op names joined by commas, layer 0 first
(``k5_e6,skip,k3_e1_g2,...``); the op-index key joins the op indices with ``_``
(``7_8_1_...``), as nasflat's ``zc_fbnet.json`` does. Both are accepted everywhere.
Block names: k = depthwise kernel size, e = expansion ratio, g2 = grouped 1x1 convs with 2 groups.
"""
from __future__ import annotations

import functools

import numpy as np

from spaces.errors import ArchError

NAME = "fbnet"
OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
N_LAYERS = 22
_OP_CODE = {op: code for code, op in enumerate(OPS)}


def parse(key: str) -> tuple[str, ...]:
    """The 22 op names of an arch key (op names or op-index key); raises ArchError."""
    if not isinstance(key, str):
        raise ArchError(f"FBNet arch key expected as a string, got {key!r}")
    text = key.strip()
    sep = "," if "," in text else "_" if "_" in text and text.replace("_", "").isdigit() else ","
    parts = [p.strip() for p in text.split(sep)]
    if len(parts) != N_LAYERS:
        raise ArchError(
            f"an FBNet architecture has {N_LAYERS} layers, got {len(parts)} in {key!r}"
        )
    ops = []
    for layer, part in enumerate(parts):
        if part.isdigit():
            code = int(part)
            if code >= len(OPS):
                raise ArchError(f"FBNet op index {code} at layer {layer} is out of range 0..{len(OPS) - 1}")
            ops.append(OPS[code])
        elif part in OPS:
            ops.append(part)
        else:
            raise ArchError(f"unknown FBNet op {part!r} at layer {layer}; valid ops: {', '.join(OPS)}")
    return tuple(ops)


@functools.lru_cache(maxsize=1 << 16)
def is_canonical(key: str) -> bool:
    """Whether ``key`` is a canonical key already (op names, comma-joined), which parsing it costs: remembered, since
    a predictor's predict asks of the same 5,000 candidates at every step and trial (its check of them took as long
    as hwl_ridge's whole predict)."""
    return key.count(",") == N_LAYERS - 1 and set(key.split(",")) <= _OP_CODE.keys()


def to_key(ops) -> str:
    return ",".join(ops)


def to_idx_key(ops) -> str:
    return "_".join(str(OPS.index(op)) for op in ops)


def canonical(key: str) -> str:
    """Canonical arch key (op names, comma-joined)."""
    return to_key(parse(key))


# The most random:N draws: a million keys take about 0.4 GB while drawn, and a campaign over them years of device
# time. 10**8 (a typo's extra zeros) grew past 18 GB within a minute, hwl export and campaign run alike.
MAX_SAMPLE = 1_000_000


def sample(n: int, seed: int) -> list[str]:
    """n arch keys drawn uniformly (each layer independently) with a seeded generator."""
    if n <= 0:
        raise ArchError(f"cannot sample {n} FBNet architectures: n must be positive")
    if n > MAX_SAMPLE:
        raise ArchError(f"cannot sample {n:,} FBNet architectures: at most {MAX_SAMPLE:,} at once (a million keys take "
                        "0.4 GB while drawn, and measuring them years); ask for fewer")
    rng = np.random.default_rng(seed)
    try:
        codes = rng.integers(0, len(OPS), size=(n, N_LAYERS))
    except MemoryError as exc:  # the space has 9**22 architectures, so no count is refused above; memory is
        raise ArchError(f"cannot sample {n} FBNet architectures: not enough memory to hold them ({exc}); "
                        "ask for fewer") from None
    return [to_key(OPS[c] for c in row) for row in codes]


def op_codes(keys) -> np.ndarray:
    """(n, 22) op indices of ``keys``. Canonical keys (op names, comma-joined: every table's and sample's) are read
    by a split and a lookup; any other form goes through :func:`parse`. Onboarding and FBNet features read the
    whole candidate pool each round: parsing every key spent 40 % of an FBNet onboarding replay's time."""
    keys = list(keys)  # read twice where the fast path gives up: a generator would be spent by then
    try:
        rows = [[_OP_CODE[op] for op in key.split(",")] for key in keys]
    except (KeyError, AttributeError):  # an op-index key, spaces, no string: parse says what is wrong
        rows = None
    if rows is None or any(len(row) != N_LAYERS for row in rows):
        rows = [[_OP_CODE[op] for op in parse(key)] for key in keys]
    return np.array(rows, dtype=np.uint8).reshape(len(rows), N_LAYERS)


def vec_encoding(keys) -> np.ndarray:
    """Vec encoding: one-hot op per layer, (n, 22 * 9) float32."""
    codes = op_codes(keys)
    onehot = np.zeros((len(codes), N_LAYERS, len(OPS)), dtype=np.float32)
    np.put_along_axis(onehot, codes[..., None].astype(np.int64), 1.0, axis=2)
    return onehot.reshape(len(codes), -1)
