"""`prepare`: read and check the raw layout, write the canonical tables every later stage reads.

mmctr outputs (names in paths.Prepared):
    items.parquet          item_id (== row), id_index (0 padding, 1 out-of-vocabulary, 2.. seen in train),
                           title, tags, likes_level, views_level, image_path, has_<modality>
    emb_<name>.npy         provided embeddings, (n_items + 1, d) float32, row == item_id
    samples_<split>.parquet  row_id (row in the raw file; test: ID), user_id, user_index (0 = unseen in
                           train), hist (fixed-size list<int32>, left-padded, most recent last), hist_len,
                           item_id, likes_level, views_level, label (train/valid)
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.artifacts import write_npy, write_table
from recstack.data.raw.mmctr import MmctrRaw, MmctrSplit, read_mmctr_raw
from recstack.data.raw.progress import Steps
from recstack.data.raw.tencentgr_parquet import read_item_text, read_parquet_layout
from recstack.data.raw.tencentgr_platform import read_platform
from recstack.data.tables.tgr_prepared import last_clicks, pool_items, read_events
from recstack.errors import DataError
from recstack.paths import MMCTR_SPLITS, Prepared, PreparedTGR
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)

PAD, OOV = 0, 1


def samples_table(s: MmctrSplit, split: str, user_index: np.ndarray) -> pa.Table:
    n, width = s.item_seq.shape
    hist = s.item_seq.astype(np.int32)
    cols = {
        "row_id": pa.array(s.ids if s.ids is not None else np.arange(n, dtype=np.int64)),
        "user_id": pa.array(s.user_id),
        "user_index": pa.array(user_index.astype(np.int32)),
        "hist": pa.FixedSizeListArray.from_arrays(pa.array(hist.reshape(-1)), width),
        "hist_len": pa.array((hist != 0).sum(1).astype(np.int16)),
        "item_id": pa.array(s.item_id),
        "likes_level": pa.array(s.likes_level.astype(np.int16)),
        "views_level": pa.array(s.views_level.astype(np.int16)),
    }
    if s.label is not None:
        cols["label"] = pa.array(s.label.astype(np.float32))
    return pa.table(cols)


def id_index(raw: MmctrRaw) -> np.ndarray:
    """Items seen in train (as target or in a history) get their own index; the rest share OOV."""
    n = len(raw.items)
    seen = np.zeros(n, bool)
    seen[raw.train.item_id] = True
    seen[raw.train.item_seq.reshape(-1)] = True
    seen[0] = False
    index = np.full(n, OOV, np.int64)
    index[0] = PAD
    index[seen] = np.arange(2, 2 + seen.sum())
    return index


def run_mmctr(ctx: StageContext) -> dict[str, Any]:
    raw = read_mmctr_raw(ctx.paths.raw_dir, max_hist=ctx.cfg.data.max_hist)
    items, n = raw.items, len(raw.items)
    index = id_index(raw)

    users = np.unique(raw.train.user_id)  # user vocabulary: train users; 0 = unseen
    figures: dict[str, Any] = {
        "items": n - 1,
        "items_seen_in_train": int((index > 1).sum()),
        "users": len(users),
    }
    for split in MMCTR_SPLITS:
        s = raw.split(split)
        pos = np.searchsorted(users, s.user_id)
        known = (pos < len(users)) & (users[np.minimum(pos, len(users) - 1)] == s.user_id)
        user_index = np.where(known, pos + 1, 0)
        write_table(ctx.out / Prepared.samples(split), samples_table(s, split, user_index))
        figures[f"rows_{split}"] = len(s)
        if s.label is not None:
            figures[f"positive_rate_{split}"] = round(float(s.label.mean()), 4)
        if split != "train":
            # ids unseen in training are not errors: they map to the OOV index; count them
            oov_users = int((~known).sum())
            oov_items = int((index[s.item_id] == OOV).sum())
            figures[f"{split}_rows_unseen_user"], figures[f"{split}_rows_unseen_item"] = oov_users, oov_items
            if oov_users or oov_items:
                log.info("%s: %d rows of unseen users, %d rows of unseen target items (-> OOV index)",
                         split, oov_users, oov_items)  # fmt: skip

    image_path = np.full(n, "", dtype=object)
    image_path[raw.image_ids] = [str(ctx.paths.raw_mmctr.item_images / f"{i}.jpg") for i in raw.image_ids]
    tags = items.tags
    cols: dict[str, pa.Array] = {
        "item_id": pa.array(np.arange(n, dtype=np.int64)),
        "id_index": pa.array(index),
        "title": pa.array(items.title.tolist(), pa.string()),
        "tags": pa.FixedSizeListArray.from_arrays(pa.array(tags.reshape(-1)), tags.shape[1]),
        "likes_level": pa.array(items.likes_level),
        "views_level": pa.array(items.views_level),
        "image_path": pa.array(image_path.tolist(), pa.string()),
        "has_image": pa.array(image_path != ""),
    }
    for name, matrix in items.emb.items():
        write_npy(ctx.out / Prepared.embedding(name), matrix)
        cols[f"has_{name}"] = pa.array(items.emb_mask[name])
        figures[f"coverage_{name}"] = round(float(items.emb_mask[name][1:].mean()), 4)
    figures["coverage_image"] = round(float((image_path[1:] != "").mean()), 4)
    write_table(ctx.out / Prepared.ITEMS, pa.table(cols))
    return figures


# ---- tencentgr ----------------------------------------------------------------------------------------
def valid_targets(events: dict[str, np.ndarray], n_users: int, seed: int, predict_users: np.ndarray,
                  pool: np.ndarray) -> pa.Table:  # fmt: skip
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
        log.warning("data.valid_users=%d but only %d users have a click: validating on %d (%.0f%%), the other "
                    "%d train the level-2 models", wanted, n, cap, 100 * VALID_SHARE_MAX, n - cap)  # fmt: skip
    return min(wanted, cap)


def run_tencentgr(ctx: StageContext) -> dict[str, Any]:
    dc, raw = ctx.cfg.data, ctx.paths.raw_tencentgr
    layout = dc.layout
    if layout == "auto":
        layout = "parquet" if raw.is_parquet_layout or ctx.paths.eval_dir else "platform"
    args = (raw.root, ctx.out, dc.strict, tuple(dc.mm_feats), dict(dc.emb_dims), dc.max_unknown_item_share)
    steps = Steps(log, "prepare")  # one INFO line per step: a 1M-user run is visibly moving (issue #15)
    if layout == "platform":
        if ctx.paths.eval_dir:
            raise DataError(
                f"data.eval_dir={dc.eval_dir}: the platform layout is one folder (predict_seq.jsonl and "
                "predict_set.jsonl beside seq.jsonl); data.eval_dir is for the parquet release"
            )
        figures = read_platform(*args, steps=steps, mm_required=dc.mm_required)
    else:
        figures = read_parquet_layout(
            *args, eval_dir=ctx.paths.eval_dir, steps=steps, mm_required=dc.mm_required
        )
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
    for k, v in figures.items():
        if k.startswith(("skipped_", "events_unknown", "predict_users_unknown", "candidates_cold")) and v:
            log.info("%s: %s", k, v)
    return figures
