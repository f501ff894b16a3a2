"""`ensemble`: blend the configured sources, pick the best validated ranking, write the validated submission.

mmctr: `ensemble.method` fixed (typed weights, mean of logits), fit (non-negative weights summing to 1 on the
sources' logits) or rank (the same on within-split rank percentiles). Fitted weights are cross-validated on
valid with folds grouped by user: the blend's valid AUC is out-of-fold, test uses weights fitted on all of
valid (ensemble/blend.py).
tencentgr: weighted reciprocal-rank fusion of the sources' ranked lists (fixed weights, or fitted by the
same CV with a simplex-grid search for the best top-10 score).

Submission (`ensemble.submit=best`): the best validated candidate among the sources (single models: their
valid score; the stack: its out-of-fold CV score) and the blend (its CV score or, for fixed weights, its valid
score); ties go to the earlier candidate, the blend last. `submit=blend` always submits the blend.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recstack.artifacts import write_table
from recstack.data.tables.predictions import predictions_table, ranking_table, read_predictions, read_ranking
from recstack.data.tables.prepared import read_samples
from recstack.data.tables.tgr_prepared import read_table
from recstack.ensemble.blend import (
    blend_apply,
    blend_fixed,
    cv_blend,
    cv_rrf,
    fit_rrf_weights,
    fit_weights,
    logit,
    percentile,
    rrf_fuse,
    rrf_table,
)
from recstack.ensemble.submission import TGR_K, write_mmctr, write_tgr
from recstack.metrics import auc, logloss, tencentgr_score
from recstack.paths import Predictions, PreparedTGR
from recstack.stages.context import StageContext
from recstack.train.oof import user_folds

log = logging.getLogger(__name__)

BLEND = "blend"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _choose(scores: dict[str, float], submit: str) -> str:
    """The submitted candidate: the blend, or the highest validated score (first on ties)."""
    if submit == BLEND:
        return BLEND
    return max(scores, key=lambda k: (scores[k], -list(scores).index(k)))


def run_mmctr(ctx: StageContext) -> dict[str, Any]:
    cfg, ec, prep = ctx.cfg, ctx.cfg.ensemble, ctx.input_dir("prepare")
    valid, test = read_samples(prep, "valid"), read_samples(prep, "test")
    ids = {"valid": valid["row_id"].to_numpy(), "test": test["row_id"].to_numpy()}
    preds = {
        split: [read_predictions(ctx.input_dir(s), split, ids[split]) for s in ec.sources] for split in ids
    }
    y = valid["label"].to_numpy()
    scores = {s: auc(y, p) for s, p in zip(ec.sources, preds["valid"], strict=True)}
    figures: dict[str, Any] = {"model": f"{ec.method}({'+'.join(ec.sources)})", "method": ec.method}
    figures |= {f"valid_auc_{s}": round(v, 5) for s, v in scores.items()}

    out = {
        s: {"valid": pv, "test": pt}
        for s, pv, pt in zip(ec.sources, preds["valid"], preds["test"], strict=True)
    }
    if ec.method == "fixed":
        out[BLEND] = {split: blend_fixed(preds[split], list(ec.weights)) for split in ids}
        figures["weights"] = [round(float(w) / sum(ec.weights), 4) for w in ec.weights]
    else:
        to_z = logit if ec.method == "fit" else percentile
        z = {split: np.stack([to_z(p) for p in preds[split]], 1) for split in ids}  # (N, S)
        fold_of = user_folds(valid["user_id"].to_numpy(), ec.folds, cfg.seed)
        oof, fold_w = cv_blend(z["valid"], y, fold_of)
        w = fit_weights(z["valid"], y)
        link = _sigmoid if ec.method == "fit" else (lambda v: v)  # percentiles blend into [0, 1] already
        out[BLEND] = {"valid": link(oof), "test": link(blend_apply(z["test"], w))}
        figures["weights"] = [round(float(v), 4) for v in w]  # fitted on all of valid: used for test
        figures["weights_folds"] = [[round(float(v), 4) for v in fw] for fw in fold_w]
    scores[BLEND] = auc(y, out[BLEND]["valid"])
    figures[f"valid_auc_{BLEND}"] = round(scores[BLEND], 5)
    chosen = _choose(scores, ec.submit)
    figures["submitted"] = chosen
    figures["valid_auc"] = round(scores[chosen], 5)
    if ec.method != "rank" or chosen != BLEND:
        figures["valid_logloss"] = round(logloss(y, out[chosen]["valid"]), 5)
    items = {"valid": valid["item_id"].to_numpy(), "test": test["item_id"].to_numpy()}
    write_table(
        ctx.out / Predictions.FILE, predictions_table({s: (ids[s], out[chosen][s], items[s]) for s in ids})
    )
    path = write_mmctr(ctx.out, ids["test"], out[chosen]["test"], ids["test"], ec.column, ec.zip)
    figures["submission"] = path.name
    figures["test_rows"] = len(ids["test"])
    log.info("valid AUC per candidate (%s weights %s): %s", ec.method, figures["weights"],
             ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))  # fmt: skip
    log.info("submitted %s (valid AUC %.4f): %s (%d rows, validated)", chosen, scores[chosen],
             ctx.paths.stage_dir("ensemble") / path.name, len(ids["test"]))  # fmt: skip
    return figures


# ---- tencentgr ----------------------------------------------------------------------------------------
def run_tencentgr(ctx: StageContext) -> dict[str, Any]:
    cfg, ec, prep = ctx.cfg, ctx.cfg.ensemble, ctx.input_dir("prepare")
    valid = read_table(prep, PreparedTGR.VALID)
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    n = {"valid": len(valid), "test": len(pu)}
    ranks = {split: [read_ranking(ctx.input_dir(s), split, n[split])[0] for s in ec.sources] for split in n}
    target = valid["item"].to_numpy()
    scores = {
        s: tencentgr_score(r[:, :TGR_K], target, k=TGR_K)["score"]
        for s, r in zip(ec.sources, ranks["valid"], strict=True)
    }
    figures: dict[str, Any] = {"model": f"rrf_{ec.method}({'+'.join(ec.sources)})", "method": ec.method}
    figures |= {f"valid_score_{s}": round(v, 5) for s, v in scores.items()}

    out = {
        s: {split: (ranks[split][i], np.zeros(ranks[split][i].shape)) for split in n}
        for i, s in enumerate(ec.sources)
    }
    table = {split: rrf_table(ranks[split]) for split in n}
    if ec.method == "fixed":
        w = np.asarray(ec.weights, np.float64) / np.sum(ec.weights)
        out[BLEND] = {split: rrf_fuse(*table[split], w, TGR_K) for split in n}
    else:  # fit / rank: RRF is rank-based already; weights fitted by user-grouped CV on valid
        fold_of = user_folds(valid["user"].to_numpy(), ec.folds, cfg.seed)
        top, fold_w = cv_rrf(*table["valid"], target, fold_of, TGR_K)
        w = fit_rrf_weights(*table["valid"], target, TGR_K)
        out[BLEND] = {"valid": (top, np.zeros(top.shape)), "test": rrf_fuse(*table["test"], w, TGR_K)}
        figures["weights_folds"] = [[round(float(v), 4) for v in fw] for fw in fold_w]
    figures["weights"] = [round(float(v), 4) for v in w]
    scores[BLEND] = tencentgr_score(out[BLEND]["valid"][0][:, :TGR_K], target, k=TGR_K)["score"]
    figures[f"valid_score_{BLEND}"] = round(scores[BLEND], 5)
    chosen = _choose(scores, ec.submit)
    figures["submitted"] = chosen
    parts = {split: (out[chosen][split][0][:, :TGR_K], out[chosen][split][1][:, :TGR_K]) for split in n}
    m = tencentgr_score(parts["valid"][0], target, k=TGR_K)
    figures |= {f"valid_{k}": round(float(v), 5) for k, v in m.items()}
    write_table(ctx.out / Predictions.FILE, ranking_table(parts))
    creative = (
        pq.read_table(prep / PreparedTGR.ITEMS, columns=["creative_id"]).column("creative_id").to_numpy()
    )
    pool = (
        pq.read_table(prep / PreparedTGR.CANDIDATES, columns=["creative_id"]).column("creative_id").to_numpy()
    )
    # the answered users follow the ranking's queries (rows of predict_users); checked against prepare's list
    answered = pu["raw_user_id"].to_numpy()[np.arange(len(parts["test"][0]))].tolist()
    expected = read_table(prep, PreparedTGR.PREDICT_USERS)["raw_user_id"].tolist()
    path = write_tgr(ctx.out, creative[parts["test"][0]], answered, pool, expected)
    figures |= {"submission": path.name, "test_users": len(pu)}
    log.info("valid score per candidate (%s weights %s): %s", ec.method, figures["weights"],
             ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))  # fmt: skip
    log.info("submitted %s (valid score %.4f): %s (%d users, validated)", chosen, scores[chosen],
             ctx.paths.stage_dir("ensemble") / path.name, len(pu))  # fmt: skip
    return figures
