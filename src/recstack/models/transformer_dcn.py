"""Transformer-DCN: the WWW 2025 MMCTR challenge winner (1st place, test AUC 0.9839; arXiv 2505.03543).

The target item is concatenated to every history position, [h_l ; t] (B, L, 2D), so self-attention compares
each past item with the candidate from the first layer on (where DIN compares them in one attention MLP).
A small post-norm transformer (published: 2 layers, 1 head, FFN 256) runs over the most recent `max_len`
positions; the sequence summary is the outputs at the last `summary_last` positions (16 published),
flattened, beside a projected max-pool over all positions. [context ; target ; summary] then goes to the
parallel DCNv2 head (models/dcn.py: 3 cross layers and an MLP [1024, 512, 256] published).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import ConfigError
from recstack.models.dcn import DCNHead
from recstack.models.item_encoder import ItemEncoder, embedding


class Block(nn.Module):
    """Post-norm transformer layer (the winner used torch's TransformerEncoderLayer defaults: LayerNorm after
    each residual, ReLU FFN): x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, keep):  # x (B, L, W), keep (B, L) bool: True = a real position
        b, n, w = x.shape
        q, k, v = (
            self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        )  # (B, H, L, W/H)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, W/H); padding keys get no weight
        x = self.norm1(x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, w))))  # (B, L, W)
        return self.norm2(x + self.drop(self.ffn(x)))  # (B, L, W)


class TransformerDCN(nn.Module):
    def __init__(
        self,
        items: ItemEncoder,
        context_cards: list[int],
        emb_dim: int = 64,
        layers: int = 2,
        heads: int = 1,
        ffn: int = 256,
        dropout: float = 0.0,
        max_len: int = 64,
        summary_last: int = 16,
        cross_layers: int = 3,
        cross_rank: int = 0,
        cross_experts: int = 4,
        dnn_units: tuple[int, ...] = (1024, 512, 256),
        out_units: tuple[int, ...] = (),
        net_dropout: float = 0.0,
    ):
        super().__init__()
        self.items, self.max_len, self.summary_last = items, max_len, min(summary_last, max_len)
        d = items.dim
        w = 2 * d  # [history item ; target]
        if w % heads:
            raise ConfigError(
                f"rank.transformer_dcn.heads is {heads}; it must divide the transformer width "
                f"2 x item width = {w}"
            )
        self.context = nn.ModuleList(embedding(c, emb_dim, std=0.01) for c in context_cards)
        self.blocks = nn.ModuleList(Block(w, heads, ffn, dropout) for _ in range(layers))
        self.pool = nn.Linear(w, w)
        width = d + (self.summary_last + 1) * w + len(context_cards) * emb_dim
        self.head = DCNHead(
            width, cross_layers, list(dnn_units), list(out_units), net_dropout, cross_rank, cross_experts
        )

    def forward(self, hist, target, context):  # hist (B, L) ids, target (B,) ids, context (B, C) -> (B,)
        hist = hist[:, -self.max_len :]  # (B, L') most recent last (left-padded with 0)
        keep = hist != 0  # (B, L')
        keep[:, -1] = True  # an empty history still attends to its last slot (no all-masked row, no NaN)
        h, t = self.items(hist, target)  # (B, L', D), (B, D)
        x = torch.cat([h, t.unsqueeze(1).expand_as(h)], -1)  # (B, L', 2D): the target beside every item
        for block in self.blocks:
            x = block(x, keep)
        x = x.masked_fill(~keep.unsqueeze(-1), 0.0)  # (B, L', 2D) padding outputs zeroed
        last = x[:, -self.summary_last :].flatten(1)  # (B, k * 2D) the most recent k positions, in order
        pooled = self.pool(x.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1))  # (B, 2D)
        ctx = [emb(context[:, j]) for j, emb in enumerate(self.context)]  # C x (B, E)
        if last.shape[1] < self.summary_last * x.shape[-1]:  # histories shorter than k: zero-pad on the left
            last = F.pad(last, (self.summary_last * x.shape[-1] - last.shape[1], 0))
        return self.head(torch.cat([t, last, pooled, *ctx], -1))  # (B,) logits
