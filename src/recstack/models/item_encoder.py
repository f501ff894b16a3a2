"""Shared item encoder: item_id -> [id emb | mean tag emb | level emb | projected multimodal vector].

One encoder serves every ranker (DESIGN.md, Models), so a better item representation reaches all of them.
The item side (id index, tags, levels, the frozen multimodal matrix) lives in buffers on the model's device:
a batch carries item ids only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def embedding(n: int, dim: int, padding_idx: int | None = None, std: float = 1.0) -> nn.Embedding:
    """nn.Embedding with N(0, std) weights (models/rankers.py: EMB_INIT_STD says which std per model)."""
    emb = nn.Embedding(n, dim, padding_idx=padding_idx)
    nn.init.normal_(emb.weight, std=std)
    if padding_idx is not None:
        with torch.no_grad():
            emb.weight[padding_idx].zero_()
    return emb


class ItemEncoder(nn.Module):
    def __init__(
        self,
        id_index: torch.Tensor,  # (I,) long: 0 padding, 1 out-of-vocabulary, 2.. items seen in train
        tags: torch.Tensor,  # (I, T) long, 0 = no tag
        levels: torch.Tensor,  # (I, V) long, 0 = unknown
        multimodal: torch.Tensor | None,  # (I, M) float, frozen; row == item_id
        dim: int,
        side: bool = True,  # tags and levels; False = id (+ multimodal) only, as a peer DIN sees items
        init_std: float = 1.0,  # of the embedding tables
    ):
        super().__init__()
        # persistent=False: the item side is data, rebuilt from the prepared tables, not a weight
        self.register_buffer("id_index", id_index.long(), persistent=False)
        self.register_buffer("tags", tags.long(), persistent=False)
        self.register_buffer("levels", levels.long(), persistent=False)
        self.id_emb = embedding(max(int(id_index.max()) + 1, 2), dim, padding_idx=0, std=init_std)
        if side:  # only modules the forward uses: DDP requires every parameter to get a gradient
            self.tag_emb = embedding(max(int(tags.max()) + 1, 2), dim, padding_idx=0, std=init_std)
            self.level_emb = nn.ModuleList(
                embedding(max(int(levels[:, j].max()) + 1, 2), dim, std=init_std)
                for j in range(levels.shape[1])
            )
        parts = 3 if side else 1
        if multimodal is not None:
            self.register_buffer("multimodal", multimodal.float(), persistent=False)
            self.mm_proj = nn.Linear(multimodal.shape[1], dim)  # trainable projection of a frozen matrix
            parts += 1
        self.has_multimodal, self.side = multimodal is not None, side
        self.n_items = len(id_index)
        self.dim = parts * dim  # output width D

    def features(self, ids: torch.Tensor) -> torch.Tensor:  # ids (...) long item ids -> (..., D)
        parts = [self.id_emb(self.id_index[ids])]  # (..., d)
        if self.side:
            t = self.tags[ids]  # (..., T)
            has = (t != 0).unsqueeze(-1)  # (..., T, 1)
            parts.append((self.tag_emb(t) * has).sum(-2) / has.sum(-2).clamp(min=1))  # masked mean tags
            lv = self.levels[ids]  # (..., V)
            parts.append(sum(emb(lv[..., j]) for j, emb in enumerate(self.level_emb)))  # (..., d)
        if self.has_multimodal:
            parts.append(self.mm_proj(self.multimodal[ids]))
        return torch.cat(parts, -1)

    def table(self) -> torch.Tensor:  # (I, D): every item once
        t = self.features(torch.arange(self.n_items, device=self.id_index.device))
        kind = t.device.type
        if torch.is_autocast_enabled(kind):  # gather half-width rows: the (B, L, D) tensors are the traffic
            t = t.to(torch.get_autocast_dtype(kind))
        return t

    def use_table(self, *ids: torch.Tensor) -> bool:
        """When a batch holds more ids than there are items (MicroLens-1M: 8192 x 65 ids vs 91,717 items),
        encoding the whole item table once and gathering rows is cheaper than encoding per position;
        both give the same vectors (tests/test_rank_models.py)."""
        return sum(i.numel() for i in ids) > self.n_items

    def forward(self, *ids: torch.Tensor) -> list[torch.Tensor]:
        """Encode several id tensors of one batch, each (...) -> (..., D)."""
        if self.use_table(*ids):
            table = self.table()
            return [F.embedding(i, table) for i in ids]
        return [self.features(i) for i in ids]
