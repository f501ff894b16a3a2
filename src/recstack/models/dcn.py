"""DCNv2: the cross network of Wang et al., "DCN V2: Improved Deep & Cross Network" (WWW 2021, arXiv 2008.13535).

A cross layer multiplies the input x0 element-wise with an affine map of the current state and adds the
state back (eq. 1):  x_{l+1} = x0 * (W x_l + b) + x_l.  L layers hold every feature interaction up to order
L + 1, with one (W, W) matrix per layer. The low-rank mixture (DCN-Mix, section 3.2 of the paper) replaces W
by K experts U_i g(C_i g(V_i^T x)) of rank r, each gated by the state (softmax over the experts):
x_{l+1} = sum_i G_i(x_l) * (x0 * (U_i g(C_i g(V_i^T x_l)) + b)) + x_l, with g = tanh; it costs
O(K r W) instead of O(W^2) per layer, which is what makes crossing a 4,000-wide input affordable.

`DCNHead` is the parallel form the MMCTR winners used (1st place's Transformer-DCN, arXiv 2505.03543;
3rd place's DIN + DCN): the cross network and an MLP read the same input, their outputs are concatenated and
a small MLP maps them to one logit. Any ranker can use it as its interaction head.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossLayer(nn.Module):
    """Full rank: x_{l+1} = x0 * (W x_l + b) + x_l."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0, x):  # x0, x (B, W) -> (B, W)
        return x0 * self.linear(x) + x


class LowRankMixtureCross(nn.Module):
    """K rank-r experts gated by the state: x_{l+1} = sum_i G_i(x_l) x0 * (U_i tanh(C_i tanh(V_i^T x_l)) + b)
    + x_l. The bias b is shared by the experts (the paper's b_l), so sum_i G_i = 1 adds it once."""

    def __init__(self, dim: int, rank: int, experts: int):
        super().__init__()
        self.v = nn.Parameter(torch.empty(experts, dim, rank))  # (K, W, r) down-projection
        self.c = nn.Parameter(torch.empty(experts, rank, rank))  # (K, r, r) in the low-rank space
        self.u = nn.Parameter(torch.empty(experts, rank, dim))  # (K, r, W) up-projection
        self.bias = nn.Parameter(torch.zeros(dim))
        self.gate = nn.Linear(dim, experts, bias=False)
        for p in (self.v, self.c, self.u):
            nn.init.xavier_normal_(p)

    def forward(self, x0, x):  # x0, x (B, W) -> (B, W)
        z = torch.tanh(torch.einsum("bw,kwr->bkr", x, self.v))  # (B, K, r)
        z = torch.tanh(torch.einsum("bkr,krs->bks", z, self.c))  # (B, K, r)
        e = x0.unsqueeze(1) * (
            torch.einsum("bkr,krw->bkw", z, self.u) + self.bias
        )  # (B, K, W) expert outputs
        g = torch.softmax(self.gate(x), -1)  # (B, K)
        return torch.einsum("bk,bkw->bw", g, e) + x  # (B, W)


class CrossNet(nn.Module):
    """`layers` cross layers over x0; rank 0 = full rank, else the low-rank mixture of `experts`."""

    def __init__(self, dim: int, layers: int, rank: int = 0, experts: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            CrossLayer(dim) if rank == 0 else LowRankMixtureCross(dim, rank, experts) for _ in range(layers)
        )

    def forward(self, x0):  # x0 (B, W) -> (B, W)
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU (-> Dropout) for each consecutive pair of widths."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class DCNHead(nn.Module):
    """Parallel DCNv2: [CrossNet(x) ; MLP(x)] -> MLP(`out_units`) -> one logit per row."""

    def __init__(
        self,
        dim: int,
        cross_layers: int,
        dnn_units: list[int],
        out_units: list[int] | None = None,
        dropout: float = 0.0,
        rank: int = 0,
        experts: int = 4,
    ):
        super().__init__()
        self.cross = CrossNet(dim, cross_layers, rank, experts)
        self.dnn = mlp([dim, *dnn_units], dropout)
        width = dim + (dnn_units[-1] if dnn_units else dim)
        out_units = list(out_units or [])
        self.out = nn.Sequential(
            mlp([width, *out_units], dropout), nn.Linear(out_units[-1] if out_units else width, 1)
        )

    def forward(self, x):  # x (B, W) -> (B,) logits
        deep = self.dnn(x) if len(self.dnn) else x  # (B, H) or (B, W) with no hidden layer
        return self.out(torch.cat([self.cross(x), deep], -1)).squeeze(-1)
