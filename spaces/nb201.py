"""NAS-Bench-201: 15,625 cell architectures, 5 ops on the 6 edges of a 4-node cell.

An architecture is known by its official NAS-Bench-201 index (0..15624, the index of
``NASBench201API.query_by_index``) or by its arch string, e.g.
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.
Edges in string order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.

The index order is not an enumeration order of the ops, so it is shipped as data
(``data/nb201_index.txt``, derived from HELP's ``str_arch2idx.pt``, MIT licence).
"""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from spaces.errors import ArchError

NAME = "nb201"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in arch-string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_ARCHS = 5 ** 6
N_NODES = 4


@functools.lru_cache(maxsize=1)
def _index_table() -> np.ndarray:
    """(15625, 6) uint8 op codes per official index."""
    text = resources.files("spaces").joinpath("data/nb201_index.txt").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    table = np.array([[int(c) for c in ln] for ln in lines], dtype=np.uint8)
    if table.shape != (N_ARCHS, len(EDGES)):
        raise RuntimeError(f"corrupt NB201 index table: shape {table.shape}")
    return table


@functools.lru_cache(maxsize=1)
def _code_to_index() -> dict[tuple[int, ...], int]:
    return {tuple(int(c) for c in row): i for i, row in enumerate(_index_table())}


def ops_of(index: int) -> tuple[str, ...]:
    """The 6 edge ops of an index, in arch-string order."""
    check_index(index)
    return tuple(OPS[c] for c in _index_table()[index])


def check_index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ArchError(f"NB201 index must be an integer in 0..{N_ARCHS - 1}, got {index!r}")
    if not 0 <= int(index) < N_ARCHS:
        raise ArchError(f"NB201 index {index} is out of range: valid indices are 0..{N_ARCHS - 1}")
    return int(index)


def to_string(index: int) -> str:
    """Official arch string of an index."""
    ops = ops_of(index)
    nodes = []
    k = 0
    for node in range(1, N_NODES):
        parts = []
        for src in range(node):
            parts.append(f"{ops[k]}~{src}")
            k += 1
        nodes.append("|" + "|".join(parts) + "|")
    return "+".join(nodes)


def parse_string(arch_str: str) -> tuple[str, ...]:
    """Edge ops of an arch string, validated; raises ArchError naming the problem."""
    if not isinstance(arch_str, str):
        raise ArchError(f"NB201 arch string expected, got {arch_str!r}")
    nodes = arch_str.strip().split("+")
    if len(nodes) != N_NODES - 1:
        raise ArchError(
            f"NB201 arch string needs {N_NODES - 1} nodes separated by '+', got {len(nodes)} in {arch_str!r}"
        )
    ops: list[str] = []
    for node, text in enumerate(nodes, start=1):
        if not (text.startswith("|") and text.endswith("|")):
            raise ArchError(f"node {node} of {arch_str!r} must look like |op~0|op~1|")
        parts = text[1:-1].split("|")
        if len(parts) != node:
            raise ArchError(
                f"node {node} of an NB201 cell has {node} incoming edges, got {len(parts)} in {text!r}"
            )
        for src, part in enumerate(parts):
            op, sep, from_node = part.partition("~")
            if not sep or from_node != str(src):
                raise ArchError(f"edge {part!r} of node {node} must be written {op or 'op'}~{src}")
            if op not in OPS:
                raise ArchError(f"unknown NB201 op {op!r}; valid ops: {', '.join(OPS)}")
            ops.append(op)
    return tuple(ops)


def to_index(arch_str: str) -> int:
    """Official index of an arch string."""
    ops = parse_string(arch_str)
    return _code_to_index()[tuple(OPS.index(op) for op in ops)]


def resolve(key: str | int) -> int:
    """Index from an index, a decimal string or an arch string."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return check_index(int(key))
    text = str(key).strip()
    if text.lstrip("-").isdigit():
        return check_index(int(text))
    return to_index(text)


def all_strings() -> list[str]:
    return [to_string(i) for i in range(N_ARCHS)]


def sample(n: int, seed: int) -> list[int]:
    """n distinct indices, sorted: the first n of a seeded permutation of the space, so a larger n keeps a smaller
    one's picks (random:200 adds 100 to random:100's), as :func:`spaces.fbnet.sample` does. Before
    December 2026 they were ``rng.choice(N_ARCHS, n, replace=False)``, which drew unrelated sets."""
    if not 0 < n <= N_ARCHS:
        raise ArchError(f"cannot sample {n} NB201 architectures: choose 1..{N_ARCHS}")
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(N_ARCHS)[:n])


def op_codes(indices=None) -> np.ndarray:
    """(n, 6) op codes for the given indices (all when None)."""
    table = _index_table()
    return table if indices is None else table[np.asarray(indices, dtype=np.int64)]


def vec_encoding(indices=None) -> np.ndarray:
    """Vec encoding: one-hot op per edge, (n, 6 * 5) float32, edges in string order."""
    codes = op_codes(indices)
    onehot = np.zeros((len(codes), len(EDGES), len(OPS)), dtype=np.float32)
    np.put_along_axis(onehot, codes[..., None].astype(np.int64), 1.0, axis=2)
    return onehot.reshape(len(codes), -1)


def adjacency(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell DAG for graph models: (4x4 adjacency of non-'none' edges, 6 op codes)."""
    codes = op_codes([index])[0]
    adj = np.zeros((N_NODES, N_NODES), dtype=np.float32)
    for (to, src), code in zip(EDGES, codes):
        if OPS[code] != "none":
            adj[src, to] = 1.0
    return adj, codes.copy()


def output_connected(index: int) -> bool:
    """False when every path from cell input to output passes a 'none' edge (output is zero)."""
    adj, _ = adjacency(index)
    reached = {0}
    for node in range(1, N_NODES):
        if any(adj[src, node] and src in reached for src in range(node)):
            reached.add(node)
    return N_NODES - 1 in reached


@functools.lru_cache(maxsize=1)
def disconnected_indices() -> frozenset[int]:
    return frozenset(i for i in range(N_ARCHS) if not output_connected(i))
