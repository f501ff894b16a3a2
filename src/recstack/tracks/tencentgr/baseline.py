"""`baseline` for tencentgr: recent popularity over the candidate pool, seen items per
baseline.exclude_seen; predictions.parquet holds the top `baseline.topk` items per user keyed by (split,
user_row, item), for the valid users and the predict users."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.parquet as pq

from recstack.artifacts import write_table
from recstack.data.tables.predictions import ranking_table
from recstack.data.tables.tgr_prepared import (
    fit_events,
    histories,
    pool_items,
    query_inputs,
    read_events,
    read_held_out,
    read_seen_policy,
    read_table,
)
from recstack.metrics import tencentgr_score
from recstack.models.popularity import decayed_popularity, recommend
from recstack.paths import Predictions, PreparedTGR
from recstack.stages.context import StageContext
from recstack.tasks import ACTION_WEIGHTS, TGR_K

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    bc, prep = ctx.cfg.baseline, ctx.input_dir("prepare")
    ev = read_events(prep)
    n_rows = pq.read_metadata(prep / PreparedTGR.ITEMS).num_rows
    pool = pool_items(prep)
    # seen items left out or kept: baseline.exclude_seen, auto decided from the stacker's training queries
    # (tgr_prepared.seen_policy: the same queries and decision as the retrieve and seqrec stages)
    held = read_held_out(prep)
    valid = held.valid
    policy = read_seen_policy(prep, bc.exclude_seen)
    exclude = policy.exclude
    pe = read_events(prep, predict=True, columns=list(ev))
    pu = read_table(prep, PreparedTGR.PREDICT_USERS)
    # each fold's popularity from what it may learn from (tgr_prepared.fit_events: valid users held out
    # whole), each query's seen items from its own history (query_inputs: valid and predict users alike)
    tops = {}
    for fold, users in (("valid", valid["user"].to_numpy()), ("test", pu["user"].to_numpy())):
        fit = fit_events(ev, pe, held, fold, bool(bc.fit_histories))
        pop = decayed_popularity(
            fit["item"], fit["action"], fit["ts"], n_rows, bc.half_life_days, bc.conversion_weight
        )
        inputs = query_inputs(ev, pe, held, fold)
        tops[fold] = recommend(pop, pool, histories(inputs["user"], inputs["item"], users), bc.topk, exclude)
    (top_v, score_v), (top_t, score_t) = tops["valid"], tops["test"]
    m = tencentgr_score(
        top_v,
        valid["item"].to_numpy(),
        k=TGR_K,
        action=valid["action"].to_numpy(),
        action_weights=ACTION_WEIGHTS,
    )
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
    log.info(
        "popularity baseline: valid score %.4f (HR@10 %.4f, NDCG@10 %.4f)",
        figures["valid_score"],
        figures["valid_hr@10"],
        figures["valid_ndcg@10"],
    )
    return figures
