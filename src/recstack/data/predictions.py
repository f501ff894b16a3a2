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
