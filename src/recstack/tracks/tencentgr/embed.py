"""`embed` for tencentgr: the shared body (stages/embed.embed_items) over the TencentGR items: item texts
where the data has them, the provided emb_<id> matrices of data.mm_feats with their partial coverage, and
training pairs from the fit events (tgr_prepared.fit_events: the valid users held out whole)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recstack.data.tables.tgr_prepared import (
    fit_events,
    histories,
    query_inputs,
    read_events,
    read_held_out,
    read_item_text,
    read_mm,
)
from recstack.embed.align import sequence_pairs
from recstack.embed.fuse import provided_modality
from recstack.errors import DataError
from recstack.paths import PreparedTGR
from recstack.stages.context import StageContext
from recstack.stages.embed import ItemSide, embed_items
from recstack.tasks import mm_widths

log = logging.getLogger(__name__)


def tencentgr_side(ctx: StageContext) -> ItemSide:
    cfg, prep = ctx.cfg, ctx.input_dir("prepare")
    item = pq.read_table(prep / PreparedTGR.ITEMS, columns=["item"]).column("item").to_numpy()
    n = len(item)
    if not np.array_equal(item, np.arange(n)):
        raise DataError(f"{prep / PreparedTGR.ITEMS}: column 'item' is not 0..{n - 1} in row order")
    dims = mm_widths(cfg.data.emb_dims)
    provided = []
    for feat in cfg.data.mm_feats:
        if feat not in dims:
            raise DataError(
                f"data.mm_feats names '{feat}'; known ids: {', '.join(dims)} (or set data.emb_dims)"
            )
        matrix, mask = read_mm(prep, feat, n, int(dims[feat]))
        provided.append(provided_modality(f"emb_{feat}", matrix, n, mask))

    # alignment pairs from what a model may learn from (tgr_prepared.fit_events, fold "valid": the valid users
    # held out whole, the stacker's queries' users up to their first cut; embed.fit_histories adds the released
    # query histories). One item matrix serves every split, so it is fitted once, on that fold
    ev = read_events(prep, columns=["user", "item", "action", "ts"])
    pe = read_events(prep, predict=True, columns=list(ev))
    held = read_held_out(prep)
    valid = held.valid
    fit = fit_events(ev, pe, held, "valid", bool(cfg.embed.fit_histories))
    # every event counts (exposures too). Valid kNN HR@10 after alignment, all events vs clicks only:
    # synthetic 0.060 vs 0.054 (112k vs 7k pairs), MovieLens 0.119 vs 0.158 (its "exposures" are low ratings)
    pairs = sequence_pairs(fit["user"], fit["item"])

    probe = None
    if cfg.embed.probe and len(valid):
        inputs = query_inputs(ev, pe, held, "valid")  # the valid users' histories, as a predict user's
        hs = histories(inputs["user"], inputs["item"], valid["user"].to_numpy())
        width = max((len(h) for h in hs), default=0) or 1  # the whole history before the target
        hist = np.zeros((len(hs), width), np.int64)  # (V, width), left-padded, most recent last
        for r, h in enumerate(hs):
            hist[r, width - len(h) :] = h
        probe = hist, valid["item"].to_numpy()
    return ItemSide(n, item > 0, provided, read_item_text(prep, n), None, pairs, probe)


def run(ctx: StageContext) -> dict[str, Any]:
    return embed_items(ctx, tencentgr_side(ctx))
