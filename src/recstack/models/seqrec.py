"""Generative sequence retriever for TencentGR: a causal pre-norm transformer over a user's event sequence.

Tokens: [user profile] e_1 ... e_L, each event token = item vector + action-type embedding + gap bucket
embedding (log2 of the seconds since the previous event) + a learned position counted from the sequence end.
The output at position t (optionally told the action type of the next event: next-action conditioning, as
strong TencentGR 2025 solutions do) is the query for the next item; items are scored by cosine (InfoNCE) or
dot product (the official baseline's BCE) against the same item tower that builds the input tokens.

Item tower: the shared models/item_encoder.ItemEncoder with combine="project": [id embedding | sum of the
item sparse features' embeddings | a Linear of each frozen multimodal matrix] -> Linear to dim, the same
item vectors on the input (event tokens) and output (scored items) side. An item never seen in training has
id index 0 (the zero row), so its vector comes from its features and multimodal vectors alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recstack.models.item_encoder import FeatureSum, ItemEncoder, embedding
from recstack.tasks import CLICK, N_ACTIONS

GAP_BUCKETS = 40  # 0 = no previous event; 1 + floor(log2(1 + seconds)) covers gaps up to 2^38 s


def gap_buckets(ts: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """ts (E,) long seconds, first (E,) bool (a user's first event) -> (E,) long bucket of the gap."""
    gap = (ts - torch.roll(ts, 1)).clamp(min=0).double()  # (E,)
    b = 1 + torch.floor(torch.log2(1.0 + gap)).long()
    return torch.where(first, 0, b.clamp(max=GAP_BUCKETS - 1))


class UserTower(nn.Module):
    def __init__(self, sparse: torch.Tensor, arrays: torch.Tensor, dim: int, std: float):
        """sparse (U, Fs) long compact codes; arrays (U, Fa, T) long compact codes, 0-padded."""
        super().__init__()
        self.register_buffer("sparse", sparse.long(), persistent=False)
        self.register_buffer("arrays", arrays.long(), persistent=False)
        self.sparse_emb = FeatureSum([int(sparse[:, j].max()) + 1 for j in range(sparse.shape[1])], dim, std)
        self.array_emb = FeatureSum([int(arrays[:, j].max()) + 1 for j in range(arrays.shape[1])], dim, std)

    def forward(self, users: torch.Tensor) -> torch.Tensor:  # users (B,) long profile rows -> (B, d)
        a = self.arrays[users].transpose(1, 2)  # (B, T, Fa)
        n = (a != 0).any(-1).sum(-1, keepdim=True).clamp(min=1)  # (B, 1) entries per user
        return self.sparse_emb(self.sparse[users]) + self.array_emb(a).sum(1) / n  # (B, d)


class Block(nn.Module):
    """Pre-norm transformer block (GPT-2 / nanoGPT layout)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x (B, T, d), mask (B, 1, T, T)
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, T, d/H)
        x = x + F.dropout(self.proj(y.transpose(1, 2).reshape(b, t, d)), p, self.training)
        return x + self.mlp(self.ln2(x))


class SeqRec(nn.Module):
    def __init__(
        self,
        items: ItemEncoder,
        users: UserTower,
        dim: int,
        layers: int,
        heads: int,
        max_len: int,
        dropout: float,
        next_action: bool,
        std: float,
    ):
        super().__init__()
        self.items, self.users, self.max_len, self.next_action = items, users, max_len, next_action
        self.action_emb = embedding(N_ACTIONS, dim, std=std)
        self.gap_emb = embedding(GAP_BUCKETS, dim, std=std)
        self.pos_emb = embedding(max_len + 1, dim, std=std)  # from the end: 0 = the last token
        if next_action:
            self.next_emb = embedding(N_ACTIONS, dim, std=std)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        action: torch.Tensor,
        gap: torch.Tensor,
        valid: torch.Tensor,
        next_action: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """user (B,) profile rows; item / action / gap (B, L) long, left-padded; valid (B, L) bool;
        next_action (B, L) long (None: click everywhere); table (I, d): every item's vector, computed once
        (see item_vectors) -> the query after each event, (B, L, d)."""
        b, n = item.shape
        it = self.items.features(item) if table is None else F.embedding(item, table)  # (B, L, d)
        ev = it + self.action_emb(action) + self.gap_emb(gap)  # (B, L, d)
        x = torch.cat([self.users(user).unsqueeze(1), ev], 1)  # (B, T = L + 1, d), user token first
        x = self.drop(x + self.pos_emb(torch.arange(n, -1, -1, device=x.device)))  # positions from the end
        keys = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)  # (B, T) the user token is always real
        causal = torch.ones(n + 1, n + 1, dtype=torch.bool, device=x.device).tril()  # (T, T)
        # every query sees the user token, so no row is fully masked (which would give NaN)
        mask = causal & keys[:, None, :]  # (B, T, T)
        for block in self.blocks:
            x = block(x, mask.unsqueeze(1))
        h = self.ln_f(x[:, 1:])  # (B, L, d): the query after each event
        if self.next_action:
            nxt = torch.full_like(item, CLICK) if next_action is None else next_action
            h = h + self.next_emb(nxt)
        return h

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:  # ids (...) -> (..., d), the output side
        return self.items.features(ids)

    def item_table(self) -> torch.Tensor:
        """(I, d) every item once (ItemEncoder.table: cheaper than encoding per position when a batch holds
        more ids than there are items; both give the same vectors)."""
        return self.items.table()
