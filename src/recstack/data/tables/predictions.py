"""Scored rows: the one prediction format of every model on both tracks, read and written only here.

    split  str     train (out-of-fold / the stacker's queries) | valid | test
    query  int64   mmctr: the row id (one item per query); tencentgr: the user's row in that split's query
                   table (train_queries / valid_targets / predict_users), several items per query
    item   int64   the scored item: mmctr the row's target item id (-1 where the writer left it out);
                   tencentgr the item re-id
    score  float32 mmctr: P(click); tencentgr: the model's score (higher first)
    rank   int32   position within the query, 0 = best (mmctr: 0)

Stages join on (split, query[, item]), never on position, so ensembling, stacking and evaluation read every
model the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.errors import DataError
from recstack.paths import Predictions

COLUMNS = ("split", "query", "item", "score", "rank")


def scored_table(
    split: np.ndarray, query: np.ndarray, item: np.ndarray, score: np.ndarray, rank: np.ndarray
) -> pa.Table:
    return pa.table(
        {
            "split": pa.array(np.asarray(split, dtype=object).tolist(), pa.string()),
            "query": pa.array(np.asarray(query, np.int64)),
            "item": pa.array(np.asarray(item, np.int64)),
            "score": pa.array(np.asarray(score, np.float32)),
            "rank": pa.array(np.asarray(rank, np.int32)),
        }
    )


def read_scored(stage_dir: str | Path, split: str) -> pd.DataFrame:
    """One split's scored rows of a stage (columns COLUMNS); a file of another shape is an error."""
    path = Path(stage_dir) / Predictions.FILE
    if not path.is_file():
        raise DataError(f"{path}: not found (the stage writes its scored rows there)")
    names = pq.read_schema(path).names
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {', '.join(COLUMNS)} (scored rows)")
    return pq.read_table(path, columns=list(COLUMNS), filters=[("split", "=", split)]).to_pandas()


# ---- one item per query (mmctr) -----------------------------------------------------------------------
def predictions_table(parts: dict[str, tuple[np.ndarray, ...]]) -> pa.Table:
    """{split: (row_id, pred[, item])} -> scored rows, one per row id (query = row id, rank 0)."""
    cols: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    for split, part in parts.items():
        row_id, pred = part[0], part[1]
        item = part[2] if len(part) > 2 else np.full(len(row_id), -1)
        cols["split"].append(np.full(len(row_id), split, dtype=object))
        cols["query"].append(np.asarray(row_id))
        cols["item"].append(np.asarray(item))
        cols["score"].append(np.asarray(pred))
        cols["rank"].append(np.zeros(len(row_id), np.int32))
    return scored_table(*(np.concatenate(cols[c]) if cols[c] else np.zeros(0) for c in COLUMNS))


def read_predictions(stage_dir: str | Path, split: str, row_ids: np.ndarray) -> np.ndarray:
    """Scores of one split aligned to `row_ids` (joined on keys, never on position)."""
    path = Path(stage_dir) / Predictions.FILE
    df = read_scored(stage_dir, split)
    dup = df["query"].duplicated()
    if dup.any():
        raise DataError(f"{path}: split {split} has duplicate query (row id) {df['query'][dup].iloc[0]}")
    s = pd.Series(df["score"].to_numpy(), index=df["query"].to_numpy())
    out = s.reindex(row_ids).to_numpy()
    if np.isnan(out).any():
        missing = row_ids[np.isnan(out)][0]
        raise DataError(f"{path}: split {split} has no prediction for row id {missing}")
    return out


# ---- ranked items per query (tencentgr) ---------------------------------------------------------------
def ranking_table(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """{split: (items (U, K) item re-ids, scores (U, K))} -> scored rows; query = the user's row in that
    split's query table, rank = the column."""
    cols: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    for split, (items, scores) in parts.items():
        u, k = items.shape
        cols["split"].append(np.full(u * k, split, dtype=object))
        cols["query"].append(np.repeat(np.arange(u), k))
        cols["rank"].append(np.tile(np.arange(k), u))
        cols["item"].append(items.reshape(-1))
        cols["score"].append(scores.reshape(-1))
    return scored_table(*(np.concatenate(cols[c]) if cols[c] else np.zeros(0) for c in COLUMNS))


def read_ranking(stage_dir: str | Path, split: str, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, K), scores (U, K)) of one split, rows in query order; every query must be present."""
    path = Path(stage_dir) / Predictions.FILE
    df = read_scored(stage_dir, split).sort_values(["query", "rank"], kind="stable")
    counts = df.groupby("query").size().reindex(range(n_users), fill_value=0).to_numpy()
    if n_users and (counts == 0).any():
        raise DataError(
            f"{path}: split {split} has no ranking for query {int(np.flatnonzero(counts == 0)[0])}"
        )
    if n_users and (counts != counts[0]).any():
        raise DataError(f"{path}: split {split} has rankings of different lengths")
    if len(df) != counts.sum():
        raise DataError(f"{path}: split {split} has queries outside 0..{n_users - 1}")
    k = int(counts[0]) if n_users else 0
    return df["item"].to_numpy().reshape(n_users, k), df["score"].to_numpy().reshape(n_users, k)
