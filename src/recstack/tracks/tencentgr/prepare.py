"""`prepare` for tencentgr: stream either published layout (platform jsonl + pickles, or the parquet
release) into the canonical events, users, items, embeddings and candidates (names in paths.PreparedTGR),
and hold out the local validation: `data.valid_users` training users held out whole (their last click the
target, answered from their histories as the predict users are)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.artifacts import write_json, write_table
from recstack.data.raw.progress import Steps
from recstack.data.raw.tencentgr_parquet import read_item_text, read_parquet_layout
from recstack.data.raw.tencentgr_platform import read_platform
from recstack.data.tables.tgr_prepared import (
    last_clicks,
    pool_items,
    read_events,
    repeat_shares,
    stack_queries,
)
from recstack.errors import DataError
from recstack.paths import PreparedTGR
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def valid_targets(
    events: dict[str, np.ndarray], n_users: int, seed: int, predict_users: np.ndarray, pool: np.ndarray
) -> pa.Table:
    """The last click (or conversion) of up to `n_users` sampled training users, with its history length.

    Held out as whole users, like the predict users (tgr_prepared.fit_events): no model trains on them, their
    events before the target are inference inputs: a local validation that mirrors the task for data whose
    test answers are hidden. A predict user who is also a training user is never drawn (its history would be
    two inputs at once). The target is the user's last click of a candidate (`pool`, item rows), as a predict
    user's hidden click is one, after at least one event.
    """
    return pa.Table.from_pandas(
        last_clicks(events, n_users, seed, predict_users, pool), preserve_index=False
    ).replace_schema_metadata()


VALID_SHARE_MAX = 0.75  # of the users with a click: the rest train the level-2 models (data.stack_users)


def valid_cap(events: dict[str, np.ndarray], wanted: int) -> int:
    """data.valid_users, capped so that a quarter of the users with a click stay outside the local validation:
    the retrieve fusion and the reranker train on those users' held-out clicks (tgr_prepared.stack_queries),
    and a data set smaller than the config expects (valid_users 10,000 on a few thousand users) would
    otherwise leave them none and stop the pipeline at the stack stage."""
    n = len(np.unique(events["user"][events["action"] >= 1]))
    cap = int(n * VALID_SHARE_MAX)
    if wanted > cap:
        log.warning(
            "data.valid_users=%d but only %d users have a click: validating on %d (%.0f%%), the other "
            "%d train the level-2 models",
            wanted,
            n,
            cap,
            100 * VALID_SHARE_MAX,
            n - cap,
        )
    return min(wanted, cap)


def run(ctx: StageContext) -> dict[str, Any]:
    dc, raw = ctx.cfg.data, ctx.paths.raw_tencentgr
    layout = dc.layout
    if layout == "auto":
        layout = "parquet" if raw.is_parquet_layout or ctx.paths.eval_dir else "platform"
    steps = Steps(log, "prepare")  # one INFO line per step: a 1M-user run is visibly moving (issue #15)
    options = {
        "mm_feats": tuple(dc.mm_feats),
        "emb_dims": dict(dc.emb_dims),
        "steps": steps,
        "max_unknown_item_share": dc.max_unknown_item_share,
        "mm_required": dc.mm_required,
    }
    if layout == "platform":
        if ctx.paths.eval_dir:
            raise DataError(
                f"data.eval_dir={dc.eval_dir}: the platform layout is one folder (predict_seq.jsonl and "
                "predict_set.jsonl beside seq.jsonl); data.eval_dir is for the parquet release"
            )
        figures = read_platform(raw.root, ctx.out, dc.strict, **options)
    else:
        figures = read_parquet_layout(raw.root, ctx.out, dc.strict, eval_dir=ctx.paths.eval_dir, **options)
    figures["layout"] = layout
    if raw.item_text.is_file():
        items = pq.read_table(ctx.out / PreparedTGR.ITEMS, columns=["creative_id"])
        counts: Counter = Counter()
        text = read_item_text(raw.item_text, items.column("creative_id").to_numpy(), counts)
        table = pa.table({"item": np.arange(len(text), dtype=np.int32), "text": pa.array(text, pa.string())})
        write_table(ctx.out / PreparedTGR.ITEM_TEXT, table)
        figures["items_with_text"] = int((text != "").sum())
        figures |= {k: v for k, v in counts.items() if v}
        steps.done("read the item text", items_with_text=figures["items_with_text"])
    events = read_events(ctx.out, columns=["user", "item", "action"])
    n_valid = valid_cap(events, dc.valid_users)
    predict_users = (
        pq.read_table(ctx.out / PreparedTGR.PREDICT_USERS, columns=["user"]).column("user").to_numpy()
    )
    pool = pool_items(ctx.out)
    valid = valid_targets(events, n_valid, ctx.cfg.seed, predict_users, pool[pool > 0])
    write_table(ctx.out / PreparedTGR.VALID, valid)
    figures["valid_users"] = valid.num_rows
    steps.done("wrote the local validation targets", valid_users=valid.num_rows)
    # the stacker's training queries and their repeat shares: prepare-level facts every later stage reads
    # (the held-out events each model may learn from, tgr_prepared.fit_events; the seen-item decision)
    stack = stack_queries(events, valid.to_pandas(), dc.stack_users, ctx.cfg.seed, dc.stack_cuts)
    write_table(ctx.out / PreparedTGR.STACK_QUERIES, pa.Table.from_pandas(stack, preserve_index=False))
    write_json(ctx.out / PreparedTGR.SEEN, repeat_shares(events, stack))
    figures["stack_queries"] = len(stack)
    steps.done("wrote the stacker's queries", stack_queries=len(stack))
    for k, v in figures.items():
        if k.startswith(("skipped_", "events_unknown", "predict_users_unknown", "candidates_cold")) and v:
            log.info("%s: %s", k, v)
    return figures
