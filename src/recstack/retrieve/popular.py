"""Popularity source: the baseline's time-decayed click popularity (models/popularity.py) over the pool."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recstack.models.popularity import decayed_popularity, recommend
from recstack.retrieve.base import Events, Queries, Ranking


@dataclass(frozen=True)
class PopularSettings:
    half_life_days: float = 30.0
    conversion_weight: float = 2.5


class Popular:
    name = "popular"

    def __init__(self, st: PopularSettings, n_rows: int, pool: np.ndarray):
        self.st, self.n, self.pool = st, n_rows, pool
        self.figures: dict = {}

    def fit(self, events: Events) -> None:
        self.pop = decayed_popularity(events.item, events.action, events.ts, self.n, self.st.half_life_days,
                                      self.st.conversion_weight)  # fmt: skip

    def recommend(self, queries: Queries, k: int, exclude_seen: bool) -> Ranking:
        items, scores = recommend(self.pop, self.pool, queries.seen(), k, exclude_seen)
        out = Ranking.empty(len(queries), k)
        out.items[:, : items.shape[1]] = items
        out.scores[:, : items.shape[1]] = scores
        return out
