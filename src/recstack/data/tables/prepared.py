"""Readers of the canonical tables written by `prepare` (what every later stage and notebook loads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recstack.paths import Prepared


def read_samples(folder: str | Path, split: str, hist: bool = False) -> pd.DataFrame:
    """One split's rows; the history column is left out unless asked for (it is N x 64 ints)."""
    path = Path(folder) / Prepared.samples(split)
    names = pq.read_schema(path).names
    cols = names if hist else [c for c in names if c != "hist"]
    return pq.read_table(path, columns=cols).to_pandas()


def read_hist(folder: str | Path, split: str) -> np.ndarray:
    """(N, L) int32 item ids, left-padded with 0, most recent last."""
    col = pq.read_table(Path(folder) / Prepared.samples(split), columns=["hist"]).column("hist")
    col = col.combine_chunks()
    return col.values.to_numpy().reshape(len(col), col.type.list_size)


def read_items(folder: str | Path) -> pd.DataFrame:
    return pq.read_table(Path(folder) / Prepared.ITEMS).to_pandas()
