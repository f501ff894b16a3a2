"""`prepare` for mmctr: read and check the MMCTR parquet layout, write the canonical tables every later stage
reads (names in paths.Prepared):
    items.parquet          item_id (== row), id_index (0 padding, 1 out-of-vocabulary, 2.. seen in train),
                           title, tags, likes_level, views_level, image_path, has_<modality>
    emb_<name>.npy         provided embeddings, (n_items + 1, d) float32, row == item_id
    samples_<split>.parquet  row_id (row in the raw file; test: ID), user_id, user_index (0 = unseen in
                           train), hist (fixed-size list<int32>, left-padded, most recent last), hist_len,
                           item_id, likes_level, views_level, label (train/valid)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from recstack.artifacts import write_npy, write_table
from recstack.data.raw.mmctr import MmctrRaw, MmctrSplit, read_mmctr_raw
from recstack.paths import MMCTR_SPLITS, Prepared
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


PAD, OOV = 0, 1  # id_index: padding, every id unseen in train


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


def run(ctx: StageContext) -> dict[str, Any]:
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
                log.info(
                    "%s: %d rows of unseen users, %d rows of unseen target items (-> OOV index)",
                    split,
                    oov_users,
                    oov_items,
                )

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
