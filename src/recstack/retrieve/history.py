"""History ("re-visit") source: the user's own past items that are in the candidate pool.

Users come back to items. In the Kaggle OTTO 2022 recommender competition the strong pipelines start their
candidates from the session's own past items before any co-visitation: Chris Deotte's public "Candidate
ReRank Model" notebook, and write-ups such as github.com/nicolaivicol/otto-recommender ("Re-visit: add all
previous items from the session to the pool of candidates", then co-visit, then Word2Vec neighbours). On the
synthetic TencentGR data 66% of the held-out next clicks repeat a history item (tgr_prepared.repeat_shares).
A query's item b scores

    sum over its last `history` events j with item b of
        action_weight[action_j] * recency ** age_j * 2 ** (-(t_query - t_j) / half_life)

with age_j = 0 for the latest event and t_query the latest event's time: an item seen often (count),
lately (position and time decay) and clicked or converted rather than only exposed ranks first.

Used only when the seen-item policy keeps seen items (tracks/tencentgr/retrieve.py leaves it out otherwise): every
item it proposes is a seen item, so with exclude_seen it has nothing to propose; a fusion weight of 0
could not make it useful there either, and it would quadruple the fusion weight search (merge.WEIGHT_GRID).
"""

from __future__ import annotations

import numpy as np

from recstack.config import HistorySourceConfig
from recstack.retrieve.base import Events, Queries, Ranking, action_weights, top_k_groups

HOUR = 3600.0


class History:
    name = "history"

    def __init__(self, st: HistorySourceConfig, n_rows: int, pool: np.ndarray):
        self.st = st
        self.pool_mask = np.zeros(n_rows, bool)
        self.pool_mask[pool] = True

    def fit(self, events: Events) -> None:
        """Nothing to learn: a query's own history is its whole input."""

    def recommend(self, queries: Queries, k: int, exclude_seen: bool) -> Ranking:
        if exclude_seen:  # every candidate of this source is a seen item
            return Ranking.empty(len(queries), k)
        return history_scores(queries, self.st, self.pool_mask, k)


def history_scores(queries: Queries, st: HistorySourceConfig, pool_mask: np.ndarray, k: int) -> Ranking:
    """(Q, k) the pool items of each query's last `st.history` events, by the score in the module doc."""
    q, row, age = queries.recent(st.history)
    item = queries.item[row].astype(np.int64)
    act = np.clip(queries.action[row].astype(np.int64), 0, 2)
    w = np.asarray(action_weights(st), np.float64)[act] * np.power(st.recency, age.astype(np.float64))
    if st.half_life_hours > 0 and len(q):
        t_last = queries.ts[queries.offsets[1:] - 1]  # the latest event of each query (only rows of
        gap = (t_last[q] - queries.ts[row]).astype(np.float64)  # queries with events are gathered)
        w = w * np.exp2(-np.maximum(gap, 0.0) / (st.half_life_hours * HOUR))
    ok = (item >= 0) & (item < len(pool_mask))
    ok[ok] = pool_mask[item[ok]]
    q, item, w = q[ok], item[ok], w[ok]
    n = int(item.max(initial=0)) + 1
    keys, inv = np.unique(q * n + item, return_inverse=True)
    score = np.bincount(inv, weights=w, minlength=len(keys))
    return top_k_groups(keys // n, keys % n, score, len(queries), k)
