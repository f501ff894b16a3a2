"""`embed` for mmctr: the shared body (stages/embed.embed_items) over the MMCTR items: titles and tags,
covers, the provided txt / img / item embeddings, training pairs from the click histories, and the Task 1
export (item_info.parquet: the challenge's layout with item_emb_d128 = ours)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from recstack.artifacts import write_table
from recstack.data.raw.mmctr import item_info_table
from recstack.data.tables.prepared import read_hist, read_items, read_samples
from recstack.embed.align import consecutive_pairs
from recstack.embed.fuse import provided_modality
from recstack.paths import Embedded, Prepared
from recstack.stages.context import StageContext
from recstack.stages.embed import ItemSide, embed_items
from recstack.tasks import MMCTR_TASK1_DIM

log = logging.getLogger(__name__)


# ---- track adapters -----------------------------------------------------------------------------------
def mmctr_side(ctx: StageContext) -> ItemSide:
    ec, prep = ctx.cfg.embed, ctx.input_dir("prepare")
    items = read_items(prep)
    n = len(items)
    provided = []
    for name in ec.provided:
        path = prep / Prepared.embedding(name)
        if not path.is_file():
            log.info("provided embedding %s: not in this dataset, skipped", name)
            continue
        provided.append(provided_modality(name, np.load(path), n, items[f"has_{name}"].to_numpy()))
    train = read_samples(prep, "train")
    pairs = consecutive_pairs(
        read_hist(prep, "train"), train["item_id"].to_numpy(), train["label"].to_numpy()
    )
    probe = None
    if ec.probe:
        valid = read_samples(prep, "valid")
        clicked = valid["label"].to_numpy() > 0
        probe = read_hist(prep, "valid")[clicked], valid["item_id"].to_numpy()[clicked]

    def task1_export(out: Path, matrix: np.ndarray) -> None:
        if ec.dim != MMCTR_TASK1_DIM:
            log.info("embed.dim=%d: no Task 1 item_info.parquet (the challenge takes 128-d vectors)", ec.dim)
            return
        tags = np.stack(items["tags"].to_numpy()).astype(np.int64)
        write_table(out / Embedded.MMCTR_ITEM_INFO, item_info_table(tags, matrix))

    return ItemSide(
        n,
        items["item_id"].to_numpy() > 0,
        provided,
        items["title"].tolist(),
        [p or None for p in items["image_path"].tolist()],
        pairs,
        probe,
        task1_export,
    )


def run(ctx: StageContext) -> dict[str, Any]:
    return embed_items(ctx, mmctr_side(ctx))
