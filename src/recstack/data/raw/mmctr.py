"""The MMCTR raw layout (WWW 2025 EReL@MIR Multimodal CTR challenge, MicroLens-1M), both directions.

<root>/MicroLens_1M_x1/{train,valid,test}.parquet   user_id, item_seq (fixed width, left-padded with 0,
                                                     most recent last), likes_level, views_level,
                                                     item_id, label (train/valid) | ID (test)
<root>/MicroLens_1M_x1/item_info.parquet            row == item_id, row 0 padding: item_tags,
                                                     item_emb_d128 (optional here)
<root>/item_feature.parquet                          item_id, item_title, item_tags, likes_level,
                                                     views_level, txt_emb_BERT, img_emb_CLIPRN50 (optional)
<root>/item_images/<item_id>.jpg                     covers (optional)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from recstack.artifacts import write_table
from recstack.data.raw.arrow import (
    check_non_negative,
    float_matrix,
    int_column,
    list_matrix,
    number_column,
    read_parquet,
    require_columns,
    string_column,
)
from recstack.errors import DataError
from recstack.paths import MMCTR_SPLITS, RawMmctr

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["user_id", "item_seq", "likes_level", "views_level", "item_id"]
PROVIDED_EMB = ("item_emb_d128", "txt_emb_BERT", "img_emb_CLIPRN50")  # challenge-provided modalities
EMB_DIMS = {"item_emb_d128": 128}  # the others' widths are taken from the file (768 / 1024 in the real one)


@dataclass
class MmctrSplit:
    user_id: np.ndarray  # (N,) int64
    item_seq: np.ndarray  # (N, W) int64, left-padded with 0, most recent last
    likes_level: np.ndarray  # (N,) int64
    views_level: np.ndarray  # (N,) int64
    item_id: np.ndarray  # (N,) int64 target item
    label: np.ndarray | None = None  # (N,) float32 in {0, 1}: train, valid
    ids: np.ndarray | None = None  # (N,) int64 `ID`: test

    def __len__(self) -> int:
        return len(self.item_id)


@dataclass
class MmctrItems:
    """Item side, row == item_id, row 0 is padding."""

    tags: np.ndarray  # (I + 1, T) int64, left-padded with 0
    title: np.ndarray  # (I + 1,) object str, "" when unknown
    likes_level: np.ndarray  # (I + 1,) int64, -1 when unknown
    views_level: np.ndarray  # (I + 1,) int64, -1 when unknown
    emb: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (I + 1, D) float32
    emb_mask: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (I + 1,) bool

    def __len__(self) -> int:
        return len(self.tags)


@dataclass
class MmctrRaw:
    train: MmctrSplit
    valid: MmctrSplit
    test: MmctrSplit
    items: MmctrItems
    image_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # items with a cover

    def split(self, name: str) -> MmctrSplit:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


# ---- reader ------------------------------------------------------------------------------------------
def read_item_info(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    table = read_parquet(path, "item_info.parquet: one row per item id, row 0 = padding")
    require_columns(table, path, ["item_tags"])
    n = table.num_rows
    if n < 2:
        raise DataError(f"{path}: has {n} rows; expected padding row 0 plus at least one item")
    if "item_id" in table.column_names:
        ids = int_column(table, "item_id", path)
        bad = np.flatnonzero(ids != np.arange(n))
        if len(bad):
            raise DataError(
                f"{path}: column 'item_id' row {bad[0]} is {ids[bad[0]]}; expected row == item_id"
            )
    tags = list_matrix(table, "item_tags", path, ragged=True)
    check_non_negative(tags, path, "item_tags", "tag ids >= 0 (0 = padding)")
    emb = mask = None
    if "item_emb_d128" in table.column_names:
        emb, mask = float_matrix(table, "item_emb_d128", path, dim=128, key=np.arange(n))
    return tags, emb, mask


def read_item_feature(path: Path, n_items: int) -> dict[str, object]:
    """Titles, levels, tags and provided embeddings, aligned to item_id rows of item_info."""
    table = read_parquet(path, "item_feature.parquet keyed by item_id")
    require_columns(table, path, ["item_id"])
    ids = int_column(table, "item_id", path)
    out_of_range = np.flatnonzero((ids < 0) | (ids >= n_items))
    if len(out_of_range):
        r = out_of_range[0]
        raise DataError(f"{path}: column 'item_id' row {r} is {ids[r]}, outside item_info (0..{n_items - 1})")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: column 'item_id' repeats item {uniq[counts > 1][0]}")
    out: dict[str, object] = {"ids": ids}
    if "item_title" in table.column_names:
        out["title"] = string_column(table, "item_title", path)
    for name in ("likes_level", "views_level"):
        if name in table.column_names:
            out[name] = int_column(table, name, path)
            check_non_negative(out[name], path, name, "a level >= 0 (0-9 in MicroLens)")
    if "item_tags" in table.column_names and pa.types.is_list(table.column("item_tags").type):
        out["tags"] = list_matrix(table, "item_tags", path, ragged=True)
        check_non_negative(out["tags"], path, "item_tags", "tag ids >= 0 (0 = padding)")
    for name in ("txt_emb_BERT", "img_emb_CLIPRN50"):
        if name in table.column_names:
            out[name] = float_matrix(table, name, path, key=ids)
    return out


def read_split(path: Path, split: str, n_items: int, max_hist: int | None = None) -> MmctrSplit:
    table = read_parquet(path, f"the {split} split of the mmctr layout")
    extra = "ID" if split == "test" else "label"
    require_columns(table, path, SPLIT_COLUMNS + [extra])
    if table.num_rows == 0:
        raise DataError(f"{path}: the {split} split is empty")
    seq = list_matrix(table, "item_seq", path)
    target = int_column(table, "item_id", path)
    for name, arr, low in (("item_seq", seq, 0), ("item_id", target, 1)):
        bad = (arr < low) | (arr >= n_items)
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(len(arr), -1).any(1))[0])
            raise DataError(
                f"{path}: column '{name}' row {row} has id {int(arr[row].max() if arr.ndim > 1 else arr[row])}"
                f" outside item_info (expected {low}..{n_items - 1})"
            )
    if max_hist is not None and seq.shape[1] > max_hist:
        seq = np.ascontiguousarray(seq[:, -max_hist:])  # most recent last: keep the tail
    s = MmctrSplit(
        user_id=int_column(table, "user_id", path),
        item_seq=seq,
        likes_level=int_column(table, "likes_level", path),
        views_level=int_column(table, "views_level", path),
        item_id=target,
    )
    for name in ("likes_level", "views_level"):  # context features: embedding rows in the rankers
        check_non_negative(getattr(s, name), path, name, "a level >= 0 (0-9 in MicroLens)")
    if split == "test":
        s.ids = int_column(table, "ID", path)
        uniq, counts = np.unique(s.ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1][0]
            rows = np.flatnonzero(s.ids == dup)[:2].tolist()
            raise DataError(f"{path}: column 'ID' repeats {dup} (rows {rows}); test IDs must be unique")
    else:
        label = number_column(table, "label", path)
        bad = (label != 0) & (label != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column 'label' row {row} is {label[row]}; expected 0 or 1")
        s.label = label.astype(np.float32)
    return s


def read_mmctr_raw(root: str | Path, max_hist: int | None = None) -> MmctrRaw:
    raw = RawMmctr(Path(root))
    tags, emb_d128, mask_d128 = read_item_info(raw.item_info)
    n = len(tags)
    items = MmctrItems(
        tags=tags,
        title=np.full(n, "", dtype=object),
        likes_level=np.full(n, -1, np.int64),
        views_level=np.full(n, -1, np.int64),
    )
    if emb_d128 is not None:
        items.emb["item_emb_d128"], items.emb_mask["item_emb_d128"] = emb_d128, mask_d128
    if raw.item_feature.exists():
        feat = read_item_feature(raw.item_feature, n)
        ids = feat["ids"]
        for key in ("title", "likes_level", "views_level"):
            if key in feat:
                getattr(items, key)[ids] = feat[key]
        for name in ("txt_emb_BERT", "img_emb_CLIPRN50"):
            if name in feat:
                m, has = feat[name]
                items.emb[name] = np.zeros((n, m.shape[1]), np.float32)
                items.emb[name][ids] = m
                items.emb_mask[name] = np.zeros(n, bool)
                items.emb_mask[name][ids] = has
    else:
        log.info("%s not found: no titles or provided text/image embeddings", raw.item_feature)
    splits = {s: read_split(raw.split(s), s, n, max_hist) for s in MMCTR_SPLITS}
    image_ids = np.zeros(0, np.int64)
    if raw.item_images.is_dir():
        names = [e.name for e in os.scandir(raw.item_images) if e.name.endswith(".jpg")]
        stems = [s[:-4] for s in names if s[:-4].isdigit()]
        image_ids = np.sort(np.array([int(s) for s in stems], np.int64))
        image_ids = image_ids[(image_ids > 0) & (image_ids < n)]
    return MmctrRaw(**splits, items=items, image_ids=image_ids)


# ---- writer ------------------------------------------------------------------------------------------
def _int_list(m: np.ndarray) -> pa.Array:
    m = np.ascontiguousarray(m, dtype=np.int64)
    offsets = np.arange(0, m.size + 1, m.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(m.reshape(-1)))


def _float_list(m: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    m = np.ascontiguousarray(m, dtype=np.float32)
    offsets = np.arange(0, m.size + 1, m.shape[1], dtype=np.int32)
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(m.reshape(-1)))
    if mask is not None and not mask.all():
        arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(m.reshape(-1)), mask=pa.array(~mask))
    return arr


def split_table(s: MmctrSplit) -> pa.Table:
    """One split with the real challenge files' column names and dtypes (int64, list<int64>, float64)."""
    cols = {
        "user_id": pa.array(s.user_id.astype(np.int64)),
        "item_seq": _int_list(s.item_seq),
        "likes_level": pa.array(s.likes_level.astype(np.int64)),
        "views_level": pa.array(s.views_level.astype(np.int64)),
        "item_id": pa.array(s.item_id.astype(np.int64)),
    }
    if s.ids is not None:
        cols = {"ID": pa.array(s.ids.astype(np.int64)), **cols}
    else:
        cols["label"] = pa.array(s.label.astype(np.float64))
    return pa.table(cols)


def item_info_table(
    tags: np.ndarray, emb: np.ndarray | None = None, mask: np.ndarray | None = None
) -> pa.Table:
    """item_info.parquet as released (row == item_id, row 0 padding); `emb` (I + 1, 128) -> item_emb_d128.

    Also the MMCTR Task 1 deliverable: the same file with item_emb_d128 replaced by our embedding.
    """
    info = {"item_id": pa.array(np.arange(len(tags), dtype=np.int64)), "item_tags": _int_list(tags)}
    if emb is not None:
        if emb.shape != (len(tags), EMB_DIMS["item_emb_d128"]):
            raise ValueError(f"item_emb_d128 must be ({len(tags)}, 128), got {emb.shape}")
        info["item_emb_d128"] = _float_list(emb, mask)
    return pa.table(info)


def write_mmctr_raw(raw: MmctrRaw, root: str | Path) -> None:
    """Write the layout above; each file atomically. Covers are written by the caller into item_images/."""
    paths = RawMmctr(Path(root))
    items = raw.items
    n = len(items)
    for name in MMCTR_SPLITS:
        write_table(paths.split(name), split_table(raw.split(name)))
    emb = items.emb.get("item_emb_d128")
    write_table(paths.item_info, item_info_table(items.tags, emb, items.emb_mask.get("item_emb_d128")))
    ids = np.arange(1, n)  # item_feature has no padding row
    feat = {
        "item_id": pa.array(ids),
        "item_title": pa.array(items.title[1:].tolist(), pa.string()),
        "item_tags": _int_list(items.tags[1:]),
        "likes_level": pa.array(items.likes_level[1:]),
        "views_level": pa.array(items.views_level[1:]),
    }
    for name in ("txt_emb_BERT", "img_emb_CLIPRN50"):
        if name in items.emb:
            mask = items.emb_mask.get(name)
            feat[name] = _float_list(items.emb[name][1:], None if mask is None else mask[1:])
    write_table(paths.item_feature, pa.table(feat))
