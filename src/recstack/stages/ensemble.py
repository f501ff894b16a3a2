"""`ensemble`: blend the configured models' predictions and write the validated submission.

Blending is a weighted mean of logits (ensemble.sources / ensemble.weights), keyed by (split, row_id);
with a single source it passes that model through.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from recstack.artifacts import write_table
from recstack.data.predictions import predictions_table, read_predictions
from recstack.data.prepared import read_samples
from recstack.ensemble.submission import write_mmctr
from recstack.metrics import auc, logloss
from recstack.paths import Predictions
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def blend(preds: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Weighted mean in logit space: keeps a calibrated model calibrated, unlike rank averaging."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    eps = 1e-6
    logits = [np.log(np.clip(p, eps, 1 - eps) / (1 - np.clip(p, eps, 1 - eps))) for p in preds]
    z = sum(wi * li for wi, li in zip(w, logits, strict=True))
    return 1.0 / (1.0 + np.exp(-z))


def run_mmctr(ctx: StageContext) -> dict[str, Any]:
    ec, prep = ctx.cfg.ensemble, ctx.input_dir("prepare")
    valid, test = read_samples(prep, "valid"), read_samples(prep, "test")
    figures: dict[str, Any] = {}
    parts = {}
    for split, rows in (("valid", valid), ("test", test)):
        ids = rows["row_id"].to_numpy()
        preds = [read_predictions(ctx.input_dir(s), split, ids) for s in ec.sources]
        if split == "valid":
            y = rows["label"].to_numpy()
            for s, p in zip(ec.sources, preds, strict=True):
                figures[f"valid_auc_{s}"] = round(auc(y, p), 5)
        parts[split] = (ids, blend(preds, list(ec.weights)))
    y = valid["label"].to_numpy()
    figures["valid_auc"] = round(auc(y, parts["valid"][1]), 5)
    figures["valid_logloss"] = round(logloss(y, parts["valid"][1]), 5)
    write_table(ctx.out / Predictions.FILE, predictions_table(parts))
    test_ids = test["row_id"].to_numpy()
    path = write_mmctr(ctx.out, *parts["test"], test_ids, ec.column, ec.zip)
    figures["submission"] = path.name
    figures["test_rows"] = len(test_ids)
    log.info("submission written and validated: %s (%d rows)", ctx.paths.stage_dir("ensemble") / path.name,
             len(test_ids))  # fmt: skip
    return figures
