"""Readers of the TencentGR canonical tables written by `prepare` (for later stages and notebooks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recstack.errors import DataError
from recstack.paths import PreparedTGR


def read_events(
    folder: str | Path, predict: bool = False, columns: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Event columns as numpy arrays, grouped by user and time-ordered within a user."""
    name = PreparedTGR.PREDICT_EVENTS if predict else PreparedTGR.EVENTS
    table = pq.read_table(Path(folder) / name, columns=columns)
    return {c: table.column(c).to_numpy() for c in table.column_names}


def group_bounds(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, start, end) of each contiguous run of one user in the event arrays."""
    if len(user) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    end = np.r_[start[1:], len(user)]
    return user[start].astype(np.int64), start, end


def histories(user: np.ndarray, item: np.ndarray, wanted: np.ndarray) -> list[np.ndarray]:
    """The item sequence of each user in `wanted` (empty for users without events)."""
    users, start, end = group_bounds(user)
    where = {int(u): (s, e) for u, s, e in zip(users, start, end, strict=True)}
    empty = np.zeros(0, item.dtype)
    return [item[slice(*where[u])] if u in where else empty for u in wanted.tolist()]


def read_table(folder: str | Path, name: str) -> pd.DataFrame:
    return pq.read_table(Path(folder) / name).to_pandas()


def pool_items(folder: str | Path) -> np.ndarray:
    """Item rows of the candidate pool (unique, in retrieval order)."""
    cand = pq.read_table(Path(folder) / PreparedTGR.CANDIDATES, columns=["item"]).column("item").to_numpy()
    _, first = np.unique(cand, return_index=True)
    return cand[np.sort(first)].astype(np.int64)


def read_mm(folder: str | Path, feat: str, n_rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A provided multimodal matrix (n_rows, dim) float16, memory-mapped, row == item re-id, and its (n_rows,)
    coverage mask; shapes checked against the item table and the feature's width (MM_DIMS / data.emb_dims)."""
    path, mask_path = Path(folder) / PreparedTGR.mm_emb(feat), Path(folder) / PreparedTGR.mm_mask(feat)
    for p in (path, mask_path):
        if not p.is_file():
            raise DataError(f"{p}: not found; prepare writes it for each of data.mm_feats (here '{feat}')")
    matrix = np.load(path, mmap_mode="r")
    if matrix.ndim != 2 or matrix.shape != (n_rows, dim) or not np.issubdtype(matrix.dtype, np.floating):
        raise DataError(f"{path}: emb_{feat} has shape {matrix.shape} dtype {matrix.dtype}; expected "
                        f"({n_rows}, {dim}) float: one row per item re-id, {dim} = the width of emb_{feat}")  # fmt: skip
    mask = np.load(mask_path)
    if mask.shape != (n_rows,) or mask.dtype != np.bool_:
        raise DataError(f"{mask_path}: shape {mask.shape} dtype {mask.dtype}; expected ({n_rows},) bool")
    return matrix, mask


def read_item_text(folder: str | Path, n_rows: int) -> list[str] | None:
    """Item texts by re-id ("" = none), or None when the data has no item text (the real TencentGR has none)."""
    path = Path(folder) / PreparedTGR.ITEM_TEXT
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["item", "text"])
    item = table.column("item").to_numpy().astype(np.int64)
    bad = np.flatnonzero((item < 0) | (item >= n_rows))
    if len(bad):
        r = int(bad[0])
        raise DataError(f"{path}: column 'item' row {r} is {int(item[r])}; expected 0..{n_rows - 1}")
    texts: list[str] = [""] * n_rows
    for i, t in zip(item.tolist(), table.column("text").to_pylist(), strict=True):
        texts[i] = t or ""
    return texts
