"""DIN: Deep Interest Network (Zhou et al., KDD 2018), the MMCTR challenge baseline ranker.

Target attention weights each history item by an MLP over [q, k, q - k, q * k] (masked, no softmax, as in
the paper), the weighted sum is the user's interest in this target, and an MLP scores
[target, interest, target * interest, context]. `head="dcn"` scores it with the parallel DCNv2 head
instead (models/dcn.py): the MMCTR challenge's 3rd place ran DIN with DCN cross layers.
"""

from __future__ import annotations

import torch
from torch import nn

from recstack.models.dcn import DCNHead, mlp
from recstack.models.din_packed import interest
from recstack.models.item_encoder import ItemEncoder, embedding


class TargetAttention(nn.Module):
    """DIN activation unit: w(q, k) = MLP([q, k, q - k, q * k]) per history item k of the target q. The first
    layer W [q; k; q-k; q*k] is split by term, (Wq + Wd) q + (Wk - Wd) k + Wp (q*k), so the q term is
    computed once per row instead of once per history position, and each position costs one 2D x H product
    instead of one 4D x H (tests/test_rank_models.py asserts it equals the concatenation). The same function
    over the non-padding positions only, with a hand-written backward, is models/din_packed.py (CPU)."""

    def __init__(self, dim: int, units: list[int]):
        super().__init__()
        self.w_q = nn.Linear(dim, units[0])  # on the target (carries the bias)
        self.w_k = nn.Linear(dim, units[0], bias=False)  # on each history item
        self.w_p = nn.Linear(dim, units[0], bias=False)  # on target * item
        self.hidden = nn.Sequential(nn.ReLU(), mlp(units), nn.Linear(units[-1], 1))

    def forward(self, hist, target, mask, hist_k=None):  # hist (B, L, D), target (B, D), mask (B, L) bool
        if hist_k is None:
            hist_k = self.w_k(hist)  # (B, L, H0); on CUDA DIN gathers it from W_k applied once per item
        w_pq = self.w_p.weight * target.unsqueeze(1)  # (B, H0, D): W_p (q * k) = (W_p diag(q)) k
        a = self.w_q(target).unsqueeze(1) + hist_k + torch.bmm(hist, w_pq.transpose(1, 2))  # (B, L, H0)
        w = self.hidden(a).squeeze(-1)  # (B, L)
        w = w.masked_fill(~mask, 0.0)  # DIN keeps raw weights (no softmax); padding weighs 0
        return torch.bmm(w.unsqueeze(1), hist).squeeze(1)  # (B, D) weighted sum; all-padding rows -> 0


class DIN(nn.Module):
    def __init__(
        self,
        items: ItemEncoder,
        context_cards: list[int],  # cardinality of each context feature (mmctr: likes, views level)
        emb_dim: int = 64,
        attention_units: tuple[int, ...] = (512, 256),
        dnn_units: tuple[int, ...] = (1024, 512, 256),
        dropout: float = 0.0,
        head: str = "mlp",  # mlp | dcn: the parallel DCNv2 head over the same input
        cross_layers: int = 3,
        cross_rank: int = 0,  # 0: full-rank cross layers; r > 0: the low-rank mixture (DCN-Mix)
        cross_experts: int = 4,
    ):
        super().__init__()
        self.items = items
        d = items.dim
        self.context = nn.ModuleList(embedding(c, emb_dim, std=0.01) for c in context_cards)
        self.attention = TargetAttention(d, list(attention_units))
        width = 3 * d + len(context_cards) * emb_dim
        if head == "dcn":  # [cross(x) ; dnn(x)] -> logit
            self.dcn = DCNHead(width, cross_layers, list(dnn_units), None, dropout, cross_rank, cross_experts)
        else:
            self.dnn = mlp([width, *dnn_units], dropout)
            self.head = nn.Linear(dnn_units[-1] if dnn_units else width, 1)
        self.head_kind = head

    def forward(self, hist, target, context):  # hist (B, L) ids, target (B,) ids, context (B, C) -> (B,)
        t, u = interest(self.attention, self.items, hist, target)  # (B, D) target, (B, D) its interest
        ctx = [emb(context[:, j]) for j, emb in enumerate(self.context)]  # C x (B, E)
        x = torch.cat([t, u, t * u, *ctx], -1)  # (B, 3D + C*E)
        if self.head_kind == "dcn":
            return self.dcn(x)  # (B,) logits
        return self.head(self.dnn(x)).squeeze(-1)  # (B,) logits
