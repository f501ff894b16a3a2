"""Shared item encoder: item id -> its id embedding, its feature columns' embeddings and its projected frozen
multimodal vectors, concatenated (the rankers) or projected to one vector (the sequence retriever).

One encoder serves every model (DESIGN.md, Models), so a better item representation reaches all of them:
DIN and QIN (models/din.py, qin.py; mmctr: tags, levels, one multimodal matrix) and the tencentgr sequence
retriever (models/seqrec.py: the item sparse features, one matrix per multimodal feature). The item side
(`ItemColumns`) lives in buffers on the model's device: a batch carries item ids only. An item unseen in
training has id index 0 (the zero row), so it is encoded from its features and vectors alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Combine = Literal["concat", "sum", "project"]
COMBINES = ("concat", "sum", "project")


def embedding(n: int, dim: int, padding_idx: int | None = None, std: float = 1.0) -> nn.Embedding:
    """nn.Embedding with N(0, std) weights (models/rankers.py: EMB_INIT_STD says which std per model)."""
    emb = nn.Embedding(n, dim, padding_idx=padding_idx)
    nn.init.normal_(emb.weight, std=std)
    if padding_idx is not None:
        with torch.no_grad():
            emb.weight[padding_idx].zero_()
    return emb


class FeatureSum(nn.Module):
    """Sum of per-column embeddings of compact-coded single-valued features (codes (..., F) -> (..., d)).

    Code 0 (missing) is the zero row of its column unless the column is in `learned_zero`: the mmctr levels
    give an unknown level a vector of its own, as the rankers always did. Shared by the item encoder's sparse
    columns and the sequence retriever's user profile (models/seqrec.UserTower)."""

    def __init__(self, cards: list[int], dim: int, std: float, learned_zero: list[bool] | None = None):
        super().__init__()
        learned = learned_zero or [False] * len(cards)
        self.tables = nn.ModuleList(  # one table per column, built in column order (the RNG draws)
            embedding(max(c, 2), dim, padding_idx=None if z else 0, std=std)
            for c, z in zip(cards, learned, strict=True)
        )
        self.dim = dim

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # codes (..., F) long -> (..., d)
        if not len(self.tables):
            return torch.zeros(*codes.shape[:-1], self.dim, device=codes.device)
        # a Python sum in column order: the float sums of the rankers' levels stay bit for bit what they were
        return sum(emb(codes[..., j]) for j, emb in enumerate(self.tables))  # type: ignore[return-value]


def masked_mean(emb: nn.Embedding, codes: torch.Tensor) -> torch.Tensor:
    """codes (..., T) long, 0 = none -> (..., d) the mean of the non-zero entries' vectors (0 when none)."""
    has = (codes != 0).unsqueeze(-1)  # (..., T, 1)
    return (emb(codes) * has).sum(-2) / has.sum(-2).clamp(min=1)


@dataclass
class ItemColumns:
    """The item side of a track, every tensor row-aligned with the item id (row 0 = padding)."""

    id_index: torch.Tensor  # (I,) long: 0 = padding / unseen in training (the zero row), 1.. trained rows
    sparse: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (I,) long codes, 0 = missing
    lists: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (I, T) long codes, 0-padded
    multimodal: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (I, M) float, frozen,
    # kept in its dtype (float16 at TencentGR scale: memory) and cast per gathered row at use
    learned_zero: tuple[str, ...] = ()  # sparse columns whose code 0 (unknown) gets a learned vector

    def __post_init__(self) -> None:
        n = len(self.id_index)
        for kind, cols in (("sparse", self.sparse), ("lists", self.lists), ("multimodal", self.multimodal)):
            for name, t in cols.items():
                if (
                    t.shape[0] != n
                    or (kind == "sparse" and t.dim() != 1)
                    or (kind != "sparse" and t.dim() != 2)
                ):
                    want = "(I,)" if kind == "sparse" else "(I, width)"
                    raise ValueError(
                        f"item column {kind}[{name!r}]: shape {tuple(t.shape)}, expected {want} "
                        f"with I = {n} rows (one per item id)"
                    )
        unknown = set(self.learned_zero) - set(self.sparse)
        if unknown:
            raise ValueError(
                f"learned_zero names {sorted(unknown)}, not sparse columns: {sorted(self.sparse)}"
            )


class ItemEncoder(nn.Module):
    """parts = [id emb | masked mean of each list column | sum of the sparse columns' embs | a Linear of each
    multimodal matrix] (each (..., dim); the sparse sum only when there are sparse columns), combined by
    `combine`: "concat" (D = parts x dim, the rankers), "sum" (D = dim) or "project" (a Linear of the
    concatenation to D = dim, the sequence retriever)."""

    def __init__(
        self,
        cols: ItemColumns,
        dim: int,
        combine: Combine = "concat",
        init_std: float = 1.0,
        id_dropout: float = 0.0,
    ):
        """id_dropout: in training, the share of items whose id embedding is zeroed at each call (one draw per
        item, so the table path drops an item on the input and output side alike): the features and
        multimodal vectors must then carry the item alone, as they do for a cold item (DropoutNet, Volkovs et
        al., NeurIPS 2017). 0 draws nothing (the rankers)."""
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"combine={combine!r}; expected one of {COMBINES}")
        # persistent=False: the item side is data, rebuilt from the prepared tables, not a weight
        self.register_buffer("id_index", cols.id_index.long(), persistent=False)
        for k, t in enumerate(cols.lists.values()):
            self.register_buffer(f"list{k}", t.long(), persistent=False)
        sparse = torch.stack([t.long() for t in cols.sparse.values()], 1) if cols.sparse else None
        self.register_buffer("sparse", sparse, persistent=False)  # (I, F)
        for k, m in enumerate(cols.multimodal.values()):
            self.register_buffer(f"mm{k}", m, persistent=False)
        # Modules in this order, each only if its forward uses it (DDP wants a gradient for every parameter):
        # the mmctr rankers' RNG draws (id, tags, levels, projection) stay those of their submissions.
        self.id_emb = embedding(max(int(cols.id_index.max()) + 1, 2), dim, padding_idx=0, std=init_std)
        self.list_emb = nn.ModuleList(
            embedding(max(int(t.max()) + 1, 2), dim, padding_idx=0, std=init_std) for t in cols.lists.values()
        )
        self.sparse_emb = (
            FeatureSum(
                [int(t.max()) + 1 for t in cols.sparse.values()],
                dim,
                init_std,
                [name in cols.learned_zero for name in cols.sparse],
            )
            if cols.sparse
            else None
        )
        self.mm_proj = nn.ModuleList(nn.Linear(m.shape[1], dim) for m in cols.multimodal.values())
        parts = 1 + len(cols.lists) + (1 if cols.sparse else 0) + len(cols.multimodal)
        self.out = nn.Linear(parts * dim, dim) if combine == "project" else None
        self.combine, self.n_items, self.id_dropout = combine, len(cols.id_index), id_dropout
        self.n_lists, self.n_mm = len(cols.lists), len(cols.multimodal)
        self.dim = parts * dim if combine == "concat" else dim  # output width D

    def parts(self, ids: torch.Tensor) -> list[torch.Tensor]:  # ids (...) long item ids -> each (..., d)
        e = self.id_emb(self.id_index[ids])  # (..., d); unseen items: the zero row
        if self.training and self.id_dropout > 0:
            keep = (
                torch.rand(self.n_items, device=ids.device) >= self.id_dropout
            )  # (I,) per item, not position
            e = e * keep[ids].unsqueeze(-1)
        parts = [e]
        for k, emb in enumerate(self.list_emb):
            parts.append(masked_mean(emb, getattr(self, f"list{k}")[ids]))  # (..., d)
        if self.sparse_emb is not None:
            parts.append(self.sparse_emb(self.sparse[ids]))  # (..., d)
        for k, proj in enumerate(self.mm_proj):
            parts.append(proj(getattr(self, f"mm{k}")[ids].to(proj.weight.dtype)))  # gathered rows cast
        return parts

    def features(self, ids: torch.Tensor) -> torch.Tensor:  # ids (...) long item ids -> (..., D)
        parts = self.parts(ids)
        if self.combine == "sum":
            return torch.stack(parts).sum(0)
        x = torch.cat(parts, -1)  # (..., parts x d)
        return x if self.out is None else self.out(x)

    def table(self) -> torch.Tensor:  # (I, D): every item once
        t = self.features(torch.arange(self.n_items, device=self.id_index.device))
        kind = t.device.type
        if torch.is_autocast_enabled(kind):  # gather half-width rows: the (B, L, D) tensors are the traffic
            t = t.to(torch.get_autocast_dtype(kind))
        return t

    def use_table(self, *ids: torch.Tensor) -> bool:
        """When a batch holds more ids than there are items (MicroLens-1M: 8192 x 65 ids vs 91,717 items;
        MovieLens seqrec: ~20k ids vs 1,683 items), encoding the whole item table once and gathering rows is
        cheaper than encoding per position; both give the same vectors (tests/test_item_encoder.py)."""
        return sum(i.numel() for i in ids) > self.n_items

    def forward(self, *ids: torch.Tensor) -> list[torch.Tensor]:
        """Encode several id tensors of one batch, each (...) -> (..., D)."""
        if self.use_table(*ids):
            table = self.table()
            return [F.embedding(i, table) for i in ids]
        return [self.features(i) for i in ids]
