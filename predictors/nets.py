"""The torch modules of the learned predictors (built by the estimators from ``random_state``).

- :class:`MLP`: ``n_layers`` linear layers of width ``hidden`` with ReLU, one output.
- :class:`DeviceConditionedNet`: ``f(x, h)`` for several devices, ``h`` one of the paper's three
  device representations (Multi-Predict, Sec. 3.1):

  * ``"embedding"``: a learnable table, one row of ``emb_dim`` per device (ET); a new device
    gets a new row (:meth:`DeviceConditionedNet.add_device`, Eq. 1 copies a train row);
  * ``"index"``: the device's index written in binary (fixed, not learned);
  * ``"sample"``: the device's latencies on fixed reference architectures (HELP's hardware
    embedding), passed in by the caller, mapped to ``emb_dim`` by a linear layer.

- :class:`CellGraphEncoder`: a small graph network over an NB201 cell (4 nodes, ops on edges),
  an alternative to the Vec one-hot for NB201.
"""
from __future__ import annotations

import math

import torch
from torch import nn

DEVICE_REPRESENTATIONS = ("embedding", "index", "sample")
INDEX_BITS = 8  # up to 255 devices (train + new) in the binary index representation


def mlp_layers(in_dim: int, hidden: int, n_layers: int, out_dim: int = 1) -> nn.Sequential:
    """``n_layers`` Linear layers (the last one to ``out_dim``), ReLU between them."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be at least 1, got {n_layers}")
    dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < n_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Plain regressor ``x -> score``; :meth:`features` gives the last hidden layer."""

    def __init__(self, in_dim: int, hidden: int = 128, n_layers: int = 4):
        super().__init__()
        self.body = mlp_layers(in_dim, hidden, n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body[:-1](x)


def binary_codes(index: torch.Tensor, bits: int = INDEX_BITS) -> torch.Tensor:
    """(n, bits) float 0/1 binary form of integer device indices."""
    powers = 2 ** torch.arange(bits, device=index.device)
    return ((index.unsqueeze(-1) // powers) % 2).float()


class DeviceConditionedNet(nn.Module):
    """``f(x, h)``: the architecture encoding concatenated with a device representation.

    Parameters
    ----------
    in_dim : int
        Width of the architecture encoding.
    n_devices : int
        Train devices (rows of the embedding table; ignored by ``index`` / ``sample``).
    representation : {"embedding", "index", "sample"}
    emb_dim : int
        Device embedding width (paper: 8); ``index`` uses ``INDEX_BITS`` instead.
    sample_dim : int
        Number of reference latencies of the ``sample`` representation.
    hidden, n_layers : int
        The MLP after the concatenation (paper: 128, 4).
    """

    def __init__(self, in_dim: int, n_devices: int, representation: str = "embedding", *, emb_dim: int = 8,
                 sample_dim: int = 10, hidden: int = 128, n_layers: int = 4):
        super().__init__()
        if representation not in DEVICE_REPRESENTATIONS:
            raise ValueError(f"unknown device representation {representation!r}; "
                             f"valid: {', '.join(DEVICE_REPRESENTATIONS)}")
        if representation == "index" and n_devices >= 2 ** INDEX_BITS:
            raise ValueError(f"the index representation holds at most {2 ** INDEX_BITS - 1} devices")
        self.representation = representation
        self.n_devices = n_devices
        if representation == "embedding":
            self.embedding = nn.Embedding(n_devices, emb_dim)
            dev_dim = emb_dim
        elif representation == "index":
            dev_dim = INDEX_BITS
        else:
            self.sample_proj = nn.Linear(sample_dim, emb_dim)
            dev_dim = emb_dim
        self.body = mlp_layers(in_dim + dev_dim, hidden, n_layers)

    def device_vector(self, device: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        if self.representation == "embedding":
            return self.embedding(device)
        if self.representation == "index":
            return binary_codes(device)
        if sample is None:
            raise ValueError("the sample representation needs the reference latencies (sample=...)")
        return self.sample_proj(sample)

    def forward(self, x: torch.Tensor, device: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(torch.cat([x, self.device_vector(device, sample)], dim=-1)).squeeze(-1)

    def features(self, x: torch.Tensor, device: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        return self.body[:-1](torch.cat([x, self.device_vector(device, sample)], dim=-1))

    @torch.no_grad()
    def add_device(self, init_from: int | None = None) -> int:
        """A new device; for ``embedding`` a new table row copied from row ``init_from`` (Eq. 1).

        Returns the new device's index (``index``: the next free one, as in the paper; ``sample``
        ignores it). Without ``init_from`` a new embedding row is the mean row.
        """
        self.n_devices += 1
        if self.representation != "embedding":
            if self.representation == "index" and self.n_devices > 2 ** INDEX_BITS:
                raise ValueError(f"the index representation holds at most {2 ** INDEX_BITS} devices")
            return self.n_devices - 1
        old = self.embedding.weight
        row = old.mean(0) if init_from is None else old[int(init_from)]
        table = nn.Embedding(old.shape[0] + 1, old.shape[1])
        table.weight.copy_(torch.cat([old, row.unsqueeze(0)], dim=0))
        self.embedding = table
        return old.shape[0]


class CellGraphEncoder(nn.Module):
    """Graph encoder of an NB201 cell: op embeddings on edges, message passing over 4 nodes.

    Input: (n, 6) long op codes in arch-string edge order (``spaces.nb201.op_codes``); output
    (n, out_dim). Node 0 is the cell input; node j sums ``W[op] h_i`` over its incoming edges
    i -> j (a ``none`` edge carries nothing, as in the real cell).
    """

    EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

    def __init__(self, n_ops: int = 5, dim: int = 32, out_dim: int = 64, none_op: int = 0):
        super().__init__()
        self.none_op = none_op
        self.dim = dim
        self.start = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.op_maps = nn.Parameter(torch.randn(n_ops, dim, dim) / math.sqrt(dim))
        self.op_bias = nn.Parameter(torch.zeros(n_ops, dim))
        self.readout = nn.Linear(4 * dim, out_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        n = codes.shape[0]
        nodes = [self.start.expand(n, self.dim)]
        for node in range(1, 4):
            total = torch.zeros(n, self.dim, device=codes.device)
            for e, (to, src) in enumerate(self.EDGES):
                if to != node:
                    continue
                op = codes[:, e]
                msg = torch.einsum("nd,nde->ne", nodes[src], self.op_maps[op]) + self.op_bias[op]
                total = total + torch.relu(msg) * (op != self.none_op).unsqueeze(-1).float()
            nodes.append(total)
        return self.readout(torch.cat(nodes, dim=-1))


__all__ = ["CellGraphEncoder", "DEVICE_REPRESENTATIONS", "DeviceConditionedNet", "MLP", "binary_codes",
           "mlp_layers"]
