"""Readers of the TencentGR canonical tables written by `prepare` (for later stages and notebooks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

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
