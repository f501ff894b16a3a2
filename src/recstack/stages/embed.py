"""`embed`: one vector per item from every modality: our text / image encoders and the provided embeddings,
fused and reduced to `embed.dim`, then aligned to behaviour (train sequences only).

The stage is one body (`embed_items`) over what a track provides (`ItemSide`); each track's differences live
in its adapter (tracks/mmctr/embed.py, tracks/tencentgr/embed.py): where items, texts, covers, provided
embeddings, training pairs and the probe's valid rows come from, and any track-only export.

mmctr outputs (names in paths.Embedded):
    item_emb.npy        (n_items + 1, dim) float32, row == item_id, row 0 padding (zeros)
    item_info.parquet   MMCTR Task 1 export: the challenge's item_info layout with item_emb_d128 = ours
tencentgr outputs:
    item_emb.npy        (n_items + 1, dim) float32, row == item re-id (candidate-only items included: they
                        get a vector from whatever content they have), row 0 = no item (zeros)
    modalities: item texts where the data has them (MovieLens titles; the real data has none) and the
    provided emb_<id> matrices of data.mm_feats, their partial coverage taken from prepare's masks.
The manifest's figures hold the modalities (dims, sources, weights, coverage), the PCA's explained variance,
what the encoders found odd (empty / non-UTF-8 / truncated texts, missing / corrupt images), the
alignment's held-out loss, and next-item HR@10 of content kNN on valid before and after alignment."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recstack.artifacts import write_npy
from recstack.embed.align import align
from recstack.embed.fuse import Modality, behaviour_weights, fuse
from recstack.embed.hf import resolve_device
from recstack.embed.image import ImageEncoder, encode_image_files
from recstack.embed.probe import knn_hit_rate
from recstack.embed.text import TextEncoder, encode_texts
from recstack.embed.tune import TextTower
from recstack.errors import DataError
from recstack.paths import Embedded
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


PROBE_ROWS = 10_000  # valid rows the kNN probe scores (sampled beyond): each scores every item


PROBE_CELLS = 1 << 27  # rows x items of one probe chunk (512 MB of float32 scores)


@dataclass
class ItemSide:
    """What the stage needs from a track, every array row-aligned with the item ids (row 0 = padding)."""

    n: int  # rows: n_items + 1
    rows: np.ndarray  # (n,) bool: items that may get a vector (row 0 never)
    provided: list[Modality]  # the track's own embeddings, masks = coverage
    texts: list[Any] | None  # per row; None: this dataset has no item text
    image_paths: list[str | None] | None  # per row (None = no cover); None: this dataset has no covers
    pairs: np.ndarray  # (P, 2) items engaged one after the other in training data only
    probe: tuple[np.ndarray, np.ndarray] | None  # valid (hist (N, L) left-padded, target (N,)) for kNN HR@10
    export: Callable[[Path, np.ndarray], None] | None = None  # a track-only extra output of the matrix


# ---- the stage body (track-agnostic) ------------------------------------------------------------------
def embed_items(ctx: StageContext, side: ItemSide) -> dict[str, Any]:
    cfg, ec, rows = ctx.cfg, ctx.cfg.embed, side.rows
    figures: dict[str, Any] = {"items": side.n - 1}
    modalities = list(side.provided)
    if ec.text.enabled and side.texts is None:
        log.info("text encoder: this dataset has no item texts, skipped")
    elif ec.text.enabled:
        tc = ec.text
        enc = TextEncoder(tc.model, tc.pooling, tc.max_length, tc.batch_size, cfg.device)
        vectors, mask, stats = encode_texts(enc, side.texts, ctx.paths.embed_cache_dir)
        modalities.append(Modality("text", vectors, mask & rows, source=str(enc.path)))
        figures["text"] = stats.as_dict()
    if ec.image.enabled and side.image_paths is None:
        log.info("image encoder: this dataset has no item covers, skipped")
    elif ec.image.enabled:
        if not ec.image.model:
            raise DataError("embed.image.enabled=true needs embed.image.model: a local CLIP / ViT folder")
        enc_i = ImageEncoder(ec.image.model, ec.image.batch_size, cfg.device)
        vectors, mask, stats_i = encode_image_files(enc_i, side.image_paths, ctx.paths.embed_cache_dir)
        modalities.append(Modality("image", vectors, mask & rows, source=str(enc_i.path)))
        figures["image"] = stats_i.as_dict()
    names = [m.name for m in modalities]
    unknown = sorted(set(ec.weights) - set(names))
    if unknown:
        raise DataError(f"embed.weights names {unknown}; the modalities of this run are {names}")
    pairs = side.pairs
    auto = behaviour_weights(modalities, pairs, rows, cfg.seed) if ec.auto_weights and len(pairs) else {}
    for m in modalities:
        m.weight = float(ec.weights.get(m.name, auto.get(m.name, 1.0)))

    if modalities and side.export is None and not any(m.mask.any() for m in modalities):
        # e.g. a TencentGR release without mm_emb/ (data.mm_required=false) and without item texts: no item
        # has a content vector. The stage finishes without item_emb.npy and says so; seqrec, retrieve's
        # content source and the reranker's similarity features go without (they check for the file)
        log.warning("embed: no item has a vector in any of %s: no item embeddings written", names)
        return figures | {"vectors": 0, "modalities": names}
    fused = fuse(modalities, ec.dim, ec.whiten, rows, cfg.seed)
    figures.update(fused.figures)
    matrix = fused.matrix
    if ec.align.enabled and len(pairs):
        settings = ec.align
        tower = None
        if settings.text_layers > 0:
            text = next((m for m in modalities if m.name == "text"), None)
            if text is None:
                raise DataError("embed.align.text_layers > 0 needs the text encoder (embed.text.enabled)")
            tower = TextTower(enc, side.texts, text, modalities, fused.rows, fused.mean, settings.text_layers)
        matrix, figures["align"] = align(
            fused.features,
            fused.mean,
            fused.components,
            pairs,
            fused.rows,
            settings,
            cfg.seed,
            resolve_device(cfg.device),
            tower,
        )
    elif ec.align.enabled:
        log.info("alignment: no consecutive pairs in the training sequences, skipped")
    if ec.probe and side.probe is not None and len(side.probe[1]):
        hist, target = side.probe
        if len(target) > PROBE_ROWS:
            keep = np.sort(np.random.default_rng(cfg.seed).choice(len(target), PROBE_ROWS, replace=False))
            hist, target = hist[keep], target[keep]
        chunk = max(1, min(1024, PROBE_CELLS // side.n))
        figures["valid_knn_hr10_content"] = round(knn_hit_rate(fused.matrix, hist, target, chunk=chunk), 4)
        if "align" in figures:
            figures["valid_knn_hr10"] = round(knn_hit_rate(matrix, hist, target, chunk=chunk), 4)
        figures["valid_probe_rows"] = len(target)

    write_npy(ctx.out / Embedded.ITEMS, matrix)
    if side.export is not None:
        side.export(ctx.out, matrix)
    log.info(
        "item embeddings %s from %s; PCA keeps %.1f%% of the variance",
        matrix.shape,
        ", ".join(names),
        100 * figures["explained_variance"],
    )
    return figures
