"""The prediction file every model writes and the stacker/ensemble read: keyed by (split, row_id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.errors import DataError
from recstack.paths import Predictions


def predictions_table(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """{split: (row_id, pred)} -> one table with columns split, row_id, pred."""
    split = np.concatenate([np.full(len(r), s, dtype=object) for s, (r, _) in parts.items()])
    return pa.table(
        {
            "split": pa.array(split.tolist(), pa.string()),
            "row_id": pa.array(np.concatenate([r for r, _ in parts.values()]).astype(np.int64)),
            "pred": pa.array(np.concatenate([p for _, p in parts.values()]).astype(np.float32)),
        }
    )


def read_predictions(stage_dir: str | Path, split: str, row_ids: np.ndarray) -> np.ndarray:
    """Predictions of one split aligned to `row_ids` (joined on keys, never on position)."""
    path = Path(stage_dir) / Predictions.FILE
    df = pq.read_table(path, filters=[("split", "=", split)]).to_pandas()
    if df["row_id"].duplicated().any():
        raise DataError(
            f"{path}: split {split} has duplicate row_id {df['row_id'][df['row_id'].duplicated()].iloc[0]}"
        )
    s = pd.Series(df["pred"].to_numpy(), index=df["row_id"].to_numpy())
    out = s.reindex(row_ids).to_numpy()
    if np.isnan(out).any():
        missing = row_ids[np.isnan(out)][0]
        raise DataError(f"{path}: split {split} has no prediction for row_id {missing}")
    return out


# ---- TencentGR: ranked candidates per user, keyed by (split, user_row, item) --------------------------
def ranking_table(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """{split: (items (U, K) item rows, scores (U, K))} -> split, user_row, rank, item, score.

    user_row is the row of the user in that split's table (valid_targets / predict_users)."""
    cols: dict[str, list[np.ndarray]] = {"split": [], "user_row": [], "rank": [], "item": [], "score": []}
    for split, (items, scores) in parts.items():
        u, k = items.shape
        cols["split"].append(np.full(u * k, split, dtype=object))
        cols["user_row"].append(np.repeat(np.arange(u), k))
        cols["rank"].append(np.tile(np.arange(k), u))
        cols["item"].append(items.reshape(-1))
        cols["score"].append(scores.reshape(-1))
    return pa.table(
        {
            "split": pa.array(np.concatenate(cols["split"]).tolist(), pa.string()),
            "user_row": pa.array(np.concatenate(cols["user_row"]).astype(np.int64)),
            "rank": pa.array(np.concatenate(cols["rank"]).astype(np.int32)),
            "item": pa.array(np.concatenate(cols["item"]).astype(np.int64)),
            "score": pa.array(np.concatenate(cols["score"]).astype(np.float32)),
        }
    )


def read_ranking(stage_dir: str | Path, split: str, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, K), scores (U, K)) of one split, rows in user_row order; every user must be present."""
    path = Path(stage_dir) / Predictions.FILE
    df = pq.read_table(path, filters=[("split", "=", split)]).to_pandas()
    df = df.sort_values(["user_row", "rank"], kind="stable")
    counts = df.groupby("user_row").size().reindex(range(n_users), fill_value=0).to_numpy()
    if n_users and (counts == 0).any():
        raise DataError(
            f"{path}: split {split} has no ranking for user_row {int(np.flatnonzero(counts == 0)[0])}"
        )
    if n_users and (counts != counts[0]).any():
        raise DataError(f"{path}: split {split} has rankings of different lengths")
    k = int(counts[0]) if n_users else 0
    return df["item"].to_numpy().reshape(n_users, k), df["score"].to_numpy().reshape(n_users, k)
