"""Physical cost features of an architecture: what a device spends its time on.

A latency table, on any device, is close to a positive combination of a few costs of the
network: convolution MACs (pointwise and depthwise separately), activation traffic, weights,
and the number of kernels launched. These are computed analytically from the macro plan of
``spaces.cost`` (no latency is involved) and returned as ``log1p`` of their totals: a handful
of columns that rank GPUs at batch 1 (kernel count dominated), GPUs at large batch, CPUs and
phones (MAC dominated) almost as well as the 198-column Vec one-hot does with 4,000 samples,
so they can be fitted on 10 samples.

NB201 cells have edges whose output never reaches the cell output; the "live" variants count
only the ops on an input-to-output path (some HW-NAS-Bench devices prune the dead ones). Other
runtimes drop only what the output does not need and still run an op whose input never sees
the cell input (on a tensor of zeros): the "out" variants count every op that reaches the
output (on pixel3 a ridge fit of the whole table ranks at 0.965 with them, 0.940 without; no
other N0 train device moves by more than 0.001). phys_bayes with 10 / 20 samples, each N0 train
device held out in turn (5 trials): 0.963 / 0.965 -> 0.964 / 0.967, pixel3 0.919 / 0.917 ->
0.930 / 0.940. The first 7 NB201 columns are the ones the D-optimal design spreads over
(``DESIGN_COLUMNS``).
"""
from __future__ import annotations

import functools

import numpy as np

from spaces import cost, fbnet, nb201

FBNET_COLUMNS = ("pw_macs", "dw_macs", "activations", "weights", "kernels", "blocks")
NB201_COLUMNS = ("macs", "live_macs", "convs", "live_convs", "live_pools", "live_skips", "pools",
                 "out_macs", "out_convs", "out_pools", "out_skips")
# Leading columns of each space the design reads. Spreading the picks over the "out" counts too
# sent them to those corners: leave-one-train-device-out on N0 (5 trials) at k = 5 0.926 with
# the design on 7 columns, 0.918 on all 11 (pixel3 0.759 against 0.664).
DESIGN_COLUMNS = {"nb201": 7, "fbnet": len(FBNET_COLUMNS)}


def phys_features(space: str, keys) -> np.ndarray:
    """(n, columns) log1p physical costs of ``keys`` (see the module docstring)."""
    if space == "fbnet":
        codes = fbnet.op_codes(list(keys)).astype(np.int64).reshape(-1, fbnet.N_LAYERS)
        table = _fbnet_layer_costs()
        return np.log1p(table[np.arange(fbnet.N_LAYERS)[None, :], codes].sum(axis=1))
    if space == "nb201":
        idx = np.asarray([nb201.resolve(k) for k in keys], dtype=np.int64)
        return _nb201_all()[idx]
    raise ValueError(f"no physical features for space {space!r}; valid spaces: fbnet, nb201")


@functools.lru_cache(maxsize=1)
def _fbnet_layer_costs() -> np.ndarray:
    """(22 layers, 9 ops, 6 costs) for the CIFAR plan the HELP tables were measured with."""
    ds = cost.dataset_of("fbnet")
    layers = cost.fbnet_plan(ds.name).layers(ds.resolution)
    table = np.zeros((fbnet.N_LAYERS, len(fbnet.OPS), len(FBNET_COLUMNS)))
    for layer, (c_in, c_out, stride, side) in enumerate(layers):
        side_out = (side - 1) // stride + 1
        for code, op in enumerate(fbnet.OPS):
            spec = cost.FBNET_OP_SPECS[op]
            if spec is None:
                if stride == 1 and c_in == c_out:
                    continue  # identity: free
                table[layer, code] = (c_in * c_out * side_out ** 2, 0, c_in * side ** 2 + c_out * side_out ** 2,
                                      c_in * c_out, 1, 0)
                continue
            kernel, expansion, groups = spec
            mid = c_in * expansion
            pw = (c_in * mid * side ** 2 + mid * c_out * side_out ** 2) / groups
            dw = mid * kernel ** 2 * side_out ** 2
            act = c_in * side ** 2 + mid * side ** 2 + 2 * mid * side_out ** 2 + c_out * side_out ** 2
            weights = (c_in * mid + mid * c_out) / groups + mid * kernel ** 2
            kernels = 3 + (groups > 1)  # expand, depthwise, project (+ channel shuffle)
            table[layer, code] = (pw, dw, act, weights, kernels, 1)
    return table


@functools.lru_cache(maxsize=1)
def _nb201_all() -> np.ndarray:
    """(15625, 11) log1p features of every NB201 index."""
    codes = nb201.op_codes().astype(np.int64)
    out = np.array([_edges_to_output(row) for row in codes])
    live = out & np.array([_edges_from_input(row) for row in codes])  # on an input-to-output path
    ops = {name: i for i, name in enumerate(nb201.OPS)}
    conv_macs = np.zeros(len(nb201.OPS))
    conv_macs[ops["nor_conv_1x1"]], conv_macs[ops["nor_conv_3x3"]] = 1.0, 9.0
    is_conv = np.isin(codes, [ops["nor_conv_1x1"], ops["nor_conv_3x3"]])
    is_pool = codes == ops["avg_pool_3x3"]
    is_skip = codes == ops["skip_connect"]
    cols = np.column_stack([
        conv_macs[codes].sum(1), (conv_macs[codes] * live).sum(1), is_conv.sum(1), (is_conv & live).sum(1),
        (is_pool & live).sum(1), (is_skip & live).sum(1), is_pool.sum(1),
        (conv_macs[codes] * out).sum(1), (is_conv & out).sum(1), (is_pool & out).sum(1), (is_skip & out).sum(1)])
    return np.log1p(cols.astype(np.float64))


def _edges_to_output(codes) -> np.ndarray:
    """Which of the 6 edges (an op, not ``none``) feed a node that reaches the output (node 3)."""
    none = nb201.OPS.index("none")
    edges = [(src, to) for to, src in nb201.EDGES]
    on = [c != none for c in codes]
    bwd = {nb201.N_NODES - 1}
    for node in range(nb201.N_NODES - 2, -1, -1):
        if any(on[e] and to in bwd for e, (src, to) in enumerate(edges) if src == node):
            bwd.add(node)
    return np.array([on[e] and to in bwd for e, (src, to) in enumerate(edges)])


def _edges_from_input(codes) -> np.ndarray:
    """Which of the 6 edges (an op, not ``none``) leave a node the cell input (node 0) reaches."""
    none = nb201.OPS.index("none")
    edges = [(src, to) for to, src in nb201.EDGES]
    on = [c != none for c in codes]
    fwd = {0}
    for node in range(1, nb201.N_NODES):
        if any(on[e] and src in fwd for e, (src, to) in enumerate(edges) if to == node):
            fwd.add(node)
    return np.array([on[e] and src in fwd for e, (src, to) in enumerate(edges)])


__all__ = ["DESIGN_COLUMNS", "FBNET_COLUMNS", "NB201_COLUMNS", "phys_features"]
