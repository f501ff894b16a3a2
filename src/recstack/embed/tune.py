"""The text encoder's last layers, trained inside behaviour alignment (`embed.align.text_layers`).

Alignment (align.py) trains a projection of frozen features. With `text_layers = N > 0` the text block of
those features is recomputed at every step from the encoder, whose last N transformer blocks train with the
projection (a small LR of their own), so the InfoNCE gradient reaches the text model as in two-tower
fine-tuning; every other weight stays frozen. The block goes through the same balancing as in fusion
(L2 norm, the fused block's centre and scale, its weight), so step 0 gives exactly the untuned features.

Each step runs the encoder over the batch's unique items: worth it on a GPU, slow on a CPU (MiniLM over
MovieLens-100K on a 2-core VM: minutes per alignment epoch), hence off by default.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recstack.embed.fuse import Modality, balance_stats
from recstack.embed.text import CHARS_PER_TOKEN_CAP, TextEncoder, TextStats, clean_texts
from recstack.errors import DataError

log = logging.getLogger(__name__)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: its longest ModuleList (BERT `encoder.layer`, GPT-2 `h`,
    LLaMA / Qwen `layers`)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise DataError(f"{type(model).__name__}: no stack of transformer blocks found to fine-tune")
    return max(lists, key=len)


class TextTower:
    """Recomputes the text block of the (centred) fused features for any items, with gradients."""

    def __init__(
        self,
        encoder: TextEncoder,
        texts: list,
        text: Modality,  # the fused text modality (its mask and weight)
        modalities: list[Modality],  # in fusion order: where the text block sits among the columns
        rows: np.ndarray,  # (N,) bool rows fusion fitted on
        pca_mean: np.ndarray,  # (F,) the fused features' mean (align works on features - mean)
        layers: int,
    ):
        self.encoder = encoder
        blocks = transformer_blocks(encoder.model)
        if not 0 < layers <= len(blocks):
            raise DataError(
                f"embed.align.text_layers={layers}; {encoder.name} has {len(blocks)} transformer blocks"
            )
        stats = balance_stats(text, rows)
        if stats is None:
            raise DataError("embed.align.text_layers: fewer than 2 items have a text")
        start = sum(m.dim for m in modalities[: modalities.index(text)])
        self.cols = slice(start, start + text.dim)
        clean, _ = clean_texts(texts, encoder.max_length * CHARS_PER_TOKEN_CAP, TextStats())
        self.has = text.mask & rows  # (N,) rows whose text block is recomputed; others keep theirs
        self.ids: dict[int, list[int]] = dict(
            zip(
                np.flatnonzero(self.has).tolist(),
                encoder.tokenize([clean[i] for i in np.flatnonzero(self.has)])[0],
                strict=True,
            )
        )
        device = encoder.device
        mu, scale = stats
        self.mu = torch.from_numpy(mu).to(device)
        self.gain = text.weight / scale
        self.offset = torch.from_numpy(pca_mean[self.cols].astype(np.float32)).to(device)
        for p in encoder.model.parameters():
            p.requires_grad_(False)
        self.params = [p for b in blocks[-layers:] for p in b.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        self.layers = layers
        log.info(
            "alignment tunes the last %d of %d blocks of %s (%d weights)",
            layers,
            len(blocks),
            encoder.name,
            sum(p.numel() for p in self.params),
        )

    def block(self, items: np.ndarray) -> torch.Tensor:
        """(n, W) centred features of the text block for `items` (all with a text), gradients on."""
        v = self.encoder.pooled([self.ids[i] for i in items.tolist()])  # (n, H)
        return (F.normalize(v, dim=-1) - self.mu) * self.gain - self.offset

    def features(self, x: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """x[items] (n, F) with the text block recomputed where the item has a text."""
        xi = x[items]
        sel = torch.from_numpy(self.has[items.cpu().numpy()]).to(x.device)
        if not bool(sel.any()):
            return xi
        xi = xi.clone()
        xi[sel, self.cols] = self.block(items[sel].cpu().numpy()).to(xi.dtype)
        return xi

    def state(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def load(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, state, strict=True):
                p.copy_(s)

    @torch.no_grad()
    def refresh(self, x: torch.Tensor, batch_size: int = 256) -> None:
        """Write every item's text block, from the tuned encoder, into x (N, F) in place."""
        rows = np.flatnonzero(self.has)
        for s in range(0, len(rows), batch_size):
            part = rows[s : s + batch_size]
            x[torch.from_numpy(part).to(x.device), self.cols] = self.block(part).to(x.dtype)
