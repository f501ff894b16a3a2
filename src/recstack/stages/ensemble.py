"""`ensemble`: blend the configured models' predictions and write the validated submission.

mmctr: weighted mean of logits (ensemble.sources / ensemble.weights), keyed by (split, row_id).
tencentgr: weighted reciprocal-rank fusion of the sources' ranked lists, top 10 per user.
With a single source the model passes through.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recstack.artifacts import write_table
from recstack.data.predictions import predictions_table, ranking_table, read_predictions, read_ranking
from recstack.data.prepared import read_samples
from recstack.data.tgr_prepared import read_table
from recstack.ensemble.submission import TGR_K, write_mmctr, write_tgr
from recstack.metrics import auc, logloss, tencentgr_score
from recstack.paths import Predictions, PreparedTGR
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


# ---- tencentgr ----------------------------------------------------------------------------------------
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009): robust to sources' score scales


def fuse_rankings(rankings: list[np.ndarray], weights: list[float], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted reciprocal-rank fusion of per-user ranked item lists -> top-k items and fused scores."""
    n_users = rankings[0].shape[0]
    items = np.zeros((n_users, k), np.int64)
    scores = np.zeros((n_users, k))
    for u in range(n_users):
        fused: dict[int, float] = {}
        for w, ranked in zip(weights, rankings, strict=True):
            for r, item in enumerate(ranked[u].tolist()):
                fused[item] = fused.get(item, 0.0) + w / (RRF_K + r + 1)
        best = sorted(fused.items(), key=lambda kv: -kv[1])[:k]
        items[u], scores[u] = [i for i, _ in best], [s for _, s in best]
    return items, scores


def run_tencentgr(ctx: StageContext) -> dict[str, Any]:
    ec, prep = ctx.cfg.ensemble, ctx.input_dir("prepare")
    valid = read_table(prep, PreparedTGR.VALID)
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    figures: dict[str, Any] = {}
    parts = {}
    for split, n in (("valid", len(valid)), ("test", len(pu))):
        ranks = [read_ranking(ctx.input_dir(s), split, n)[0] for s in ec.sources]
        if len(ranks) == 1:
            top, score = ranks[0][:, :TGR_K], np.zeros((n, TGR_K))
        else:
            top, score = fuse_rankings(ranks, list(ec.weights), TGR_K)
        parts[split] = (top, score)
        if split == "valid":
            for s, r in zip(ec.sources, ranks, strict=True):
                figures[f"valid_score_{s}"] = round(tencentgr_score(r, valid["item"].to_numpy())["score"], 5)
            m = tencentgr_score(top, valid["item"].to_numpy())
            figures |= {f"valid_{k}": round(float(v), 5) for k, v in m.items()}
    write_table(ctx.out / Predictions.FILE, ranking_table(parts))
    creative = (
        pq.read_table(prep / PreparedTGR.ITEMS, columns=["creative_id"]).column("creative_id").to_numpy()
    )
    pool = (
        pq.read_table(prep / PreparedTGR.CANDIDATES, columns=["creative_id"]).column("creative_id").to_numpy()
    )
    path = write_tgr(ctx.out, creative[parts["test"][0]], pu["raw_user_id"].tolist(), pool)
    figures |= {"submission": path.name, "test_users": len(pu)}
    log.info(
        "submission written and validated: %s (%d users)",
        ctx.paths.stage_dir("ensemble") / path.name,
        len(pu),
    )
    return figures
