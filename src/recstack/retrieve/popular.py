"""Popularity source: the baseline's time-decayed click popularity (models/popularity.py) over the pool."""

from __future__ import annotations

import numpy as np

from recstack.config import PopularSourceConfig
from recstack.models.popularity import decayed_popularity, recommend
from recstack.retrieve.base import Events, Queries, Ranking


class Popular:
    name = "popular"

    def __init__(self, st: PopularSourceConfig, n_rows: int, pool: np.ndarray):
        self.st, self.n, self.pool = st, n_rows, pool
        self.figures: dict = {}

    def fit(self, events: Events) -> None:
        self.pop = decayed_popularity(
            events.item, events.action, events.ts, self.n, self.st.half_life_days, self.st.conversion_weight
        )

    def recommend(self, queries: Queries, k: int, exclude_seen: bool) -> Ranking:
        items, scores = recommend(self.pop, self.pool, queries.seen(), k, exclude_seen)
        out = Ranking.empty(len(queries), k)
        out.items[:, : items.shape[1]] = items
        out.scores[:, : items.shape[1]] = scores
        return out
