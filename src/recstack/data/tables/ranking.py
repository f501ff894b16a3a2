"""Ranker inputs as arrays, checked at the edge: one split's rows and the item side.

Everything a ranker sees is validated here (ids inside the vocabulary, labels in {0, 1}, finite embedding
matrices), so the models and the trainer trust their inputs (STYLE.md section 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recstack.data.tables.prepared import read_hist, read_items, read_samples
from recstack.errors import DataError
from recstack.paths import Prepared

CONTEXT = ("likes_level", "views_level")  # mmctr row context: the target's levels, 0-9


@dataclass
class RankRows:
    """One split: (history, target, context) -> label, keyed by row_id."""

    row_id: np.ndarray  # (N,) int64
    user: np.ndarray  # (N,) int64, for grouped folds and gAUC
    hist: np.ndarray  # (N, L) int32 item ids, left-padded with 0, most recent last
    target: np.ndarray  # (N,) int64 item id
    context: np.ndarray  # (N, C) int64 categorical values >= 0
    label: np.ndarray | None  # (N,) float32 in {0, 1}; None for unlabelled test rows

    def __len__(self) -> int:
        return len(self.target)

    def take(self, idx: np.ndarray) -> RankRows:
        return RankRows(
            self.row_id[idx],
            self.user[idx],
            self.hist[idx],
            self.target[idx],
            self.context[idx],
            None if self.label is None else self.label[idx],
        )


@dataclass
class RankItems:
    """Item side, row == item_id, row 0 padding."""

    id_index: np.ndarray  # (I,) int64: 0 padding, 1 out-of-vocabulary, 2.. items seen in train
    tags: np.ndarray  # (I, T) int64, 0 = no tag
    levels: np.ndarray  # (I, V) int64, 0 = unknown, level + 1 otherwise

    def __len__(self) -> int:
        return len(self.id_index)


def check_ids(ids: np.ndarray, n: int, source: str, column: str, low: int = 0) -> None:
    """Ids must index a table of n rows: an id beyond the vocabulary would read another row's vector."""
    bad = (ids < low) | (ids >= n)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(ids), -1).any(1))[0])
        value = ids[row][bad[row]][0] if ids.ndim > 1 else ids[row]
        raise DataError(
            f"{source}: column '{column}' row {row} has id {int(value)} outside the vocabulary "
            f"(expected {low}..{n - 1})"
        )


def check_labels(label: np.ndarray, source: str, column: str = "label") -> None:
    bad = ~np.isin(label, (0.0, 1.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: column '{column}' row {row} is {float(label[row])}; expected 0 or 1")


def check_finite(matrix: np.ndarray, source: str, column: str = "embedding") -> None:
    """NaN/inf in a frozen matrix would turn every prediction touching that item into NaN."""
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(
            f"{source}: {column} row {row} (item_id {row}) dimension {col} is {float(matrix[row, col])}; "
            "expected finite values"
        )


def read_rank_rows(prep: str | Path, split: str, n_items: int) -> RankRows:
    source = str(Path(prep) / Prepared.samples(split))
    df = read_samples(prep, split)
    hist = read_hist(prep, split)
    target = df["item_id"].to_numpy(np.int64)
    check_ids(hist, n_items, source, "hist")
    check_ids(target, n_items, source, "item_id", low=1)
    context = np.stack([df[c].to_numpy(np.int64) for c in CONTEXT], 1)
    for j, c in enumerate(CONTEXT):
        check_ids(context[:, j], 1 << 31, source, c)  # categorical: any value >= 0
    label = None
    if "label" in df.columns:
        label = df["label"].to_numpy(np.float32)
        check_labels(label, source)
    return RankRows(
        df["row_id"].to_numpy(np.int64),
        df["user_id"].to_numpy(np.int64),
        hist.astype(np.int32),
        target,
        context,
        label,
    )


def read_rank_items(prep: str | Path) -> RankItems:
    items = read_items(prep)
    levels = np.stack([items[c].to_numpy(np.int64) for c in CONTEXT], 1)
    return RankItems(
        id_index=items["id_index"].to_numpy(np.int64),
        tags=np.stack(items["tags"].to_numpy()).astype(np.int64),
        levels=np.maximum(levels + 1, 0),  # -1 (unknown) -> 0
    )


def read_matrix(path: str | Path, n_items: int) -> np.ndarray:
    """A frozen (n_items, d) float32 item matrix (row == item_id), checked for shape and finiteness."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected an (items, dim) embedding matrix)")
    m = np.load(path)
    if m.ndim != 2 or m.shape[0] != n_items or not np.issubdtype(m.dtype, np.floating):
        raise DataError(
            f"{path}: shape {m.shape} dtype {m.dtype}; expected ({n_items}, dim) float, row == item_id"
        )
    check_finite(m, str(path))
    return m.astype(np.float32, copy=False)
