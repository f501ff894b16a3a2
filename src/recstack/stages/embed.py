"""`embed`: one vector per item from every modality: our text / image encoders and the provided embeddings,
fused and reduced to `embed.dim`, then aligned to behaviour (train sequences only).

mmctr outputs (names in paths.Embedded):
    item_emb.npy        (n_items + 1, dim) float32, row == item_id, row 0 padding (zeros)
    item_info.parquet   MMCTR Task 1 export: the challenge's item_info layout with item_emb_d128 = ours
The manifest's figures hold the modalities (dims, sources, coverage), the PCA's explained variance, what
the encoders found odd (empty / non-UTF-8 / truncated texts, missing / corrupt images), the alignment's
held-out loss, and next-item HR@10 of content kNN on valid before and after alignment.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from recstack.artifacts import write_npy, write_table
from recstack.data.mmctr import item_info_table
from recstack.data.prepared import read_hist, read_items, read_samples
from recstack.embed.align import AlignSettings, align, consecutive_pairs
from recstack.embed.fuse import Modality, behaviour_weights, fuse, provided_modality
from recstack.embed.hf import resolve_device
from recstack.embed.image import ImageEncoder, encode_image_files
from recstack.embed.probe import knn_hit_rate
from recstack.embed.text import TextEncoder, encode_texts
from recstack.errors import DataError
from recstack.paths import Embedded, Prepared
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)

MMCTR_TASK1_DIM = 128


def run_mmctr(ctx: StageContext) -> dict[str, Any]:
    cfg, ec, prep = ctx.cfg, ctx.cfg.embed, ctx.input_dir("prepare")
    items = read_items(prep)
    n, rows = len(items), items["item_id"].to_numpy() > 0  # row 0 is padding: never fitted, stays zero
    figures: dict[str, Any] = {"items": n - 1}
    modalities: list[Modality] = []
    for name in ec.provided:
        path = prep / Prepared.embedding(name)
        if not path.is_file():
            log.info("provided embedding %s: not in this dataset, skipped", name)
            continue
        modalities.append(provided_modality(name, np.load(path), n, items[f"has_{name}"].to_numpy()))
    if ec.text.enabled:
        tc = ec.text
        enc = TextEncoder(tc.model, tc.pooling, tc.max_length, tc.batch_size, cfg.device)
        vectors, mask, stats = encode_texts(enc, items["title"].tolist(), ctx.paths.embed_cache_dir)
        modalities.append(Modality("text", vectors, mask & rows, source=str(enc.path)))
        figures["text"] = stats.as_dict()
    if ec.image.enabled:
        if not ec.image.model:
            raise DataError("embed.image.enabled=true needs embed.image.model: a local CLIP / ViT folder")
        enc_i = ImageEncoder(ec.image.model, ec.image.batch_size, cfg.device)
        paths = [p or None for p in items["image_path"].tolist()]
        vectors, mask, stats_i = encode_image_files(enc_i, paths, ctx.paths.embed_cache_dir)
        modalities.append(Modality("image", vectors, mask & rows, source=str(enc_i.path)))
        figures["image"] = stats_i.as_dict()
    names = [m.name for m in modalities]
    unknown = sorted(set(ec.weights) - set(names))
    if unknown:
        raise DataError(f"embed.weights names {unknown}; the modalities of this run are {names}")
    train, valid = read_samples(prep, "train"), read_samples(prep, "valid")
    pairs = consecutive_pairs(
        read_hist(prep, "train"), train["item_id"].to_numpy(), train["label"].to_numpy()
    )
    auto = behaviour_weights(modalities, pairs, rows, cfg.seed) if ec.auto_weights and len(pairs) else {}
    for m in modalities:
        m.weight = float(ec.weights.get(m.name, auto.get(m.name, 1.0)))

    fused = fuse(modalities, ec.dim, ec.whiten, rows, cfg.seed)
    figures.update(fused.figures)
    matrix = fused.matrix
    if ec.align.enabled and len(pairs):
        settings = AlignSettings(**{k: ec.align[k] for k in ec.align if k != "enabled"})
        matrix, figures["align"] = align(
            fused.features, fused.mean, fused.components, pairs, fused.rows, settings,
            cfg.seed, resolve_device(cfg.device),
        )  # fmt: skip
    elif ec.align.enabled:
        log.info("alignment: no consecutive pairs in the training sequences, skipped")
    if ec.probe:
        clicked = valid["label"].to_numpy() > 0
        hist, target = read_hist(prep, "valid")[clicked], valid["item_id"].to_numpy()[clicked]
        figures["valid_knn_hr10_content"] = round(knn_hit_rate(fused.matrix, hist, target), 4)
        if "align" in figures:
            figures["valid_knn_hr10"] = round(knn_hit_rate(matrix, hist, target), 4)

    write_npy(ctx.out / Embedded.ITEMS, matrix)
    if ec.dim == MMCTR_TASK1_DIM:
        tags = np.stack(items["tags"].to_numpy()).astype(np.int64)
        write_table(ctx.out / Embedded.MMCTR_ITEM_INFO, item_info_table(tags, matrix))
    else:
        log.info("embed.dim=%d: no Task 1 item_info.parquet (the challenge takes 128-d vectors)", ec.dim)
    log.info("item embeddings %s from %s; PCA keeps %.1f%% of the variance",
             matrix.shape, ", ".join(names), 100 * figures["explained_variance"])  # fmt: skip
    return figures
