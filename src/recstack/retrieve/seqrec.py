"""Sequence-model slot: the `seqrec` stage's ranking (predictions.parquet, read_ranking) as a source.

The seqrec stage trains on the same events this stage fits on (before both held-out sets' targets) and
writes splits "train" (rows = the stacker's queries in stack_queries order), "valid" (valid_targets rows)
and "test" (predict_users rows); this source only reads the split its queries belong to."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recstack.data.tables.predictions import read_ranking
from recstack.errors import DataError
from recstack.retrieve.base import MISSING, Events, Queries, Ranking, drop_seen


class Seqrec:
    name = "seqrec"

    def __init__(self, stage_dir: Path, pool: np.ndarray):
        self.dir, self.pool = stage_dir, pool
        self.figures = {"stage_dir": str(stage_dir)}

    def fit(self, events: Events) -> None:  # fitted by its own stage
        pass

    def recommend(self, queries: Queries, k: int, exclude_seen: bool) -> Ranking:
        items, scores = read_ranking(self.dir, queries.split, len(queries))
        if items.shape[1] == 0 and len(queries):
            raise DataError(f"{self.dir}: split {queries.split} has empty rankings")
        items = np.where(np.isin(items, self.pool), items, MISSING)  # only pool items can be answered
        ranking = Ranking(items.astype(np.int64), scores.astype(np.float32))
        return drop_seen(ranking, queries, k, seen=exclude_seen)
