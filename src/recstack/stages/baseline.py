"""`baseline`: a real, simple model per track, so the pipeline ends in a submission from day one.

mmctr: smoothed CTR priors + history co-click affinity + logistic regression; predictions.parquet keyed by
(split, row_id): OOF-encoded train, valid and test rows.
tencentgr: recent popularity over the candidate pool, seen items left out; predictions.parquet holds the
top `baseline.topk` items per user keyed by (split, user_row, item), for valid targets and predict users.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recstack.artifacts import write_table
from recstack.data.tables.predictions import predictions_table, ranking_table
from recstack.data.tables.prepared import read_hist, read_items, read_samples
from recstack.data.tables.tgr_prepared import (
    HeldOut,
    fit_events,
    histories,
    pool_items,
    query_inputs,
    read_events,
    read_table,
    seen_policy,
)
from recstack.metrics import TGR_ACTION_WEIGHTS, auc, gauc, logloss, tencentgr_score
from recstack.models.popularity import decayed_popularity, recommend
from recstack.models.priors import PriorsBaseline
from recstack.paths import Predictions, PreparedTGR
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def run_mmctr(ctx: StageContext) -> dict[str, Any]:
    bc, prep = ctx.cfg.baseline, ctx.input_dir("prepare")
    train, valid, test = (read_samples(prep, s) for s in ("train", "valid", "test"))
    h_train, h_valid, h_test = (read_hist(prep, s) for s in ("train", "valid", "test"))
    items = read_items(prep)
    tags = np.stack(items["tags"].to_numpy())
    model = PriorsBaseline(
        len(items), tags, bc.prior_strength, bc.folds, bc.window, bc.max_iter, ctx.cfg.seed
    )
    p_train = model.fit(train, h_train)
    p_valid = model.predict(train, h_train, valid, h_valid)
    # test counts also use valid labels: the most recent labelled behaviour before test
    both = pd.concat([train, valid], ignore_index=True)
    p_test = model.predict(both, np.concatenate([h_train, h_valid]), test, h_test)
    y = valid["label"].to_numpy()
    figures = {
        "valid_auc": round(auc(y, p_valid), 5),
        "valid_logloss": round(logloss(y, p_valid), 5),
        "valid_gauc": round(gauc(valid["user_id"].to_numpy(), y, p_valid), 5),
        "train_oof_auc": round(auc(train["label"].to_numpy(), p_train), 5),
    }
    parts = {
        "train": (train["row_id"].to_numpy(), p_train, train["item_id"].to_numpy()),
        "valid": (valid["row_id"].to_numpy(), p_valid, valid["item_id"].to_numpy()),
        "test": (test["row_id"].to_numpy(), p_test, test["item_id"].to_numpy()),
    }
    write_table(ctx.out / Predictions.FILE, predictions_table(parts))
    log.info("baseline valid AUC %.4f (logloss %.4f, gAUC %.4f)",
             figures["valid_auc"], figures["valid_logloss"], figures["valid_gauc"])  # fmt: skip
    return figures


# ---- tencentgr ----------------------------------------------------------------------------------------
def run_tencentgr(ctx: StageContext) -> dict[str, Any]:
    bc, prep = ctx.cfg.baseline, ctx.input_dir("prepare")
    ev = read_events(prep)
    n_rows = pq.read_metadata(prep / PreparedTGR.ITEMS).num_rows
    pool = pool_items(prep)
    valid = read_table(prep, PreparedTGR.VALID)
    # seen items left out or kept: baseline.exclude_seen, auto decided from the stacker's training queries
    # (tgr_prepared.seen_policy: the same queries and decision as the retrieve and seqrec stages)
    cfg = ctx.cfg
    held = HeldOut.of(ev, valid, int(cfg.data.stack_users), int(cfg.seed), int(cfg.data.stack_cuts))
    policy = seen_policy(bc.exclude_seen, ev, held.stack)
    exclude = policy.exclude
    pe = read_events(prep, predict=True, columns=list(ev))
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    # each fold's popularity from what it may learn from (tgr_prepared.fit_events: valid users held out
    # whole), each query's seen items from its own history (query_inputs: valid and predict users alike)
    tops = {}
    for fold, users in (("valid", valid["user"].to_numpy()), ("test", pu["user"].to_numpy())):
        fit = fit_events(ev, pe, held, fold, bool(bc.fit_histories))
        pop = decayed_popularity(fit["item"], fit["action"], fit["ts"], n_rows, bc.half_life_days,
                                 bc.conversion_weight)  # fmt: skip
        inputs = query_inputs(ev, pe, held, fold)
        tops[fold] = recommend(pop, pool, histories(inputs["user"], inputs["item"], users), bc.topk, exclude)
    (top_v, score_v), (top_t, score_t) = tops["valid"], tops["test"]
    m = tencentgr_score(top_v, valid["item"].to_numpy(), k=10, action=valid["action"].to_numpy(),
                        action_weights=TGR_ACTION_WEIGHTS)  # fmt: skip
    figures = {f"valid_{k}": round(float(v), 5) for k, v in m.items()}
    write_table(
        ctx.out / Predictions.FILE, ranking_table({"valid": (top_v, score_v), "test": (top_t, score_t)})
    )
    figures |= {
        "pool": len(pool),
        "valid_users": len(valid),
        "predict_users": len(pu),
        "exclude_seen": exclude,
        "seen_repeat_share": policy.figures.get("repeat_share"),
    }
    log.info("popularity baseline: valid score %.4f (HR@10 %.4f, NDCG@10 %.4f)",
             figures["valid_score"], figures["valid_hr@10"], figures["valid_ndcg@10"])  # fmt: skip
    return figures
