"""What every candidate source shares: the query histories it answers for and the ranking it returns.

A source is fitted on training events (`Events`) and answers `Queries` (one history per query) with a
`Ranking`: (Q, K) item rows, best first, padded with item -1 / score NaN where it has fewer than K
candidates. Every source returns exactly this, so the merge, the report and the stacker never ask which
source they are reading (STYLE.md section 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from recstack.data.tables.tgr_prepared import group_bounds

MISSING = -1  # item id of an empty slot in a ranking


@dataclass(frozen=True)
class Events:
    """Training events grouped by user, time-ordered within a user (the prepared events table's order)."""

    user: np.ndarray  # (E,) int
    item: np.ndarray  # (E,) int item rows
    action: np.ndarray  # (E,) int 0 exposure, 1 click, 2 conversion
    ts: np.ndarray  # (E,) int64 seconds (mmctr: the position in the history)

    def __len__(self) -> int:
        return len(self.item)

    def take(self, mask: np.ndarray) -> Events:
        return Events(self.user[mask], self.item[mask], self.action[mask], self.ts[mask])


@dataclass(frozen=True)
class Queries:
    """Q histories in CSR form: query q's events are rows offsets[q]:offsets[q+1], oldest first."""

    split: str  # "train" | "valid" | "test": the seqrec slot reads that split of its ranking
    user: np.ndarray  # (Q,) int64
    offsets: np.ndarray  # (Q + 1,) int64
    item: np.ndarray  # (H,) int
    action: np.ndarray  # (H,)
    ts: np.ndarray  # (H,)

    def __len__(self) -> int:
        return len(self.user)

    def history(self, q: int) -> np.ndarray:
        return self.item[self.offsets[q] : self.offsets[q + 1]]

    def seen(self) -> list[np.ndarray]:
        return [self.history(q) for q in range(len(self))]

    def recent(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last `n` history rows of every query: (query, row in the flat arrays, age) with age 0 = the
        most recent event; oldest first within a query."""
        length = np.diff(self.offsets)
        take = np.minimum(length, n)
        q = np.repeat(np.arange(len(self)), take)
        first = np.repeat(self.offsets[1:] - take, take)
        within = np.arange(len(q)) - np.repeat(np.cumsum(take) - take, take)
        age = np.repeat(take, take) - 1 - within
        return q, first + within, age


@dataclass(frozen=True)
class Ranking:
    items: np.ndarray  # (Q, K) int64, MISSING where empty
    scores: np.ndarray  # (Q, K) float32, NaN where empty

    @staticmethod
    def empty(n_queries: int, k: int, dtype: type = np.float32) -> Ranking:
        return Ranking(np.full((n_queries, k), MISSING, np.int64), np.full((n_queries, k), np.nan, dtype))


class Source(Protocol):
    name: str

    def fit(self, events: Events) -> None: ...

    def recommend(self, queries: Queries, k: int, exclude_seen: bool) -> Ranking: ...


def action_weights(c: Any) -> tuple[float, float, float]:
    """(exposure, click, conversion) vote weights of a source's config block (`*_weight` keys)."""
    return (c.exposure_weight, c.click_weight, c.conversion_weight)


def query_histories(events: Events, users: np.ndarray, split: str, cut: np.ndarray | None = None) -> Queries:
    """Queries over `events`: user u's whole run (none when u has no events), or with `cut` its events
    before row cut[i] of the event arrays (the held-out target)."""
    users = np.asarray(users, np.int64)
    g_user, g_start, g_end = group_bounds(events.user)
    start, end = np.zeros(len(users), np.int64), np.zeros(len(users), np.int64)
    if len(g_user):
        order = np.argsort(g_user, kind="stable")
        g = order[np.minimum(np.searchsorted(g_user[order], users), len(order) - 1)]
        found = g_user[g] == users
        start, end = np.where(found, g_start[g], 0), np.where(found, g_end[g], 0)
    if cut is not None:
        end = np.asarray(cut, np.int64)
    length = end - start
    offsets = np.r_[0, np.cumsum(length)].astype(np.int64)
    rows = np.repeat(start - offsets[:-1], length) + np.arange(offsets[-1])
    return Queries(split, users, offsets, events.item[rows], events.action[rows], events.ts[rows])


def compact(
    group: np.ndarray, item: np.ndarray, score: np.ndarray, n_groups: int, k: int, dtype: type = np.float32
) -> Ranking:
    """Rows already sorted by group, best first within a group -> the first k of each, (n_groups, k) padded.
    Scores are kept as `dtype` (float64 where float32 rounding would tie distinct model scores)."""
    first = np.searchsorted(group, np.arange(n_groups))
    rank = np.arange(len(group)) - first[group] if len(group) else np.zeros(0, np.int64)
    keep = rank < k
    out = Ranking.empty(n_groups, k, dtype)
    out.items[group[keep], rank[keep]] = item[keep]
    out.scores[group[keep], rank[keep]] = score[keep]
    return out


def top_k_groups(
    group: np.ndarray, item: np.ndarray, score: np.ndarray, n_groups: int, k: int, dtype: type = np.float32
) -> Ranking:
    """Per group the k items of highest score (ties: lower item first) -> (n_groups, k) padded."""
    order = np.lexsort((item, -score, group))
    return compact(group[order], item[order], score[order], n_groups, k, dtype)


def backfill(
    items: np.ndarray,
    k: int,
    fallback: np.ndarray | None = None,
    shared: np.ndarray | None = None,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) items: each row's own `items` (MISSING dropped, order kept), then the items of its `fallback`
    row (Q, F), then of the `shared` list (P,) of distinct items (e.g. the pool by popularity), each taken only if not listed
    already; MISSING where all run out. Also (Q, k) bool: the slot came from a fallback. The one top-k with
    backfill of the retrieve stage, the stacker and (for its short rows) the seqrec stage.
    Vectorised over rows in chunks: a row's first occurrence of an item is found by a stable sort of the row,
    so memory is chunk x (K + F + 2k) whatever the pool's size (2k shared items always suffice: at most k
    of them are listed already)."""
    items = np.asarray(items, np.int64)
    n_q = len(items)
    own_w = items.shape[1] if items.ndim == 2 else 0
    parts = [items.reshape(n_q, own_w)]
    if fallback is not None:
        parts.append(np.asarray(fallback, np.int64).reshape(n_q, -1))
    if shared is not None:
        head = np.asarray(shared, np.int64)[: 2 * k]
        parts.append(np.broadcast_to(head, (n_q, len(head))))
    width = sum(p.shape[1] for p in parts)
    out = np.full((n_q, k), MISSING, np.int64)
    filled = np.zeros((n_q, k), bool)
    if width == 0 or k == 0:
        return out, filled
    for a in range(0, n_q, chunk):
        m = np.concatenate([p[a : a + chunk] for p in parts], axis=1)  # (B, W)
        order = np.argsort(m, axis=1, kind="stable")  # equal items: the earliest column first
        srt = np.take_along_axis(m, order, 1)
        dup_sorted = np.zeros_like(srt, bool)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, 1)
        ok = (m != MISSING) & ~dup
        pos = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # the kept columns, in column order
        take = np.take_along_axis(ok, pos, 1)
        width_k = pos.shape[1]
        out[a : a + chunk, :width_k] = np.where(take, np.take_along_axis(m, pos, 1), MISSING)
        filled[a : a + chunk, :width_k] = take & (pos >= own_w)
    return out, filled


def drop_seen(ranking: Ranking, queries: Queries, k: int, seen: bool = True) -> Ranking:
    """`ranking` with empty slots (and, with `seen`, each query's history items) removed, order kept,
    compacted to the first k left."""
    n_q, width = ranking.items.shape
    q = np.repeat(np.arange(n_q), width)
    item, score = ranking.items.reshape(-1), ranking.scores.reshape(-1)
    seen_q = np.repeat(np.arange(n_q), np.diff(queries.offsets))
    n = int(max(item.max(initial=0), queries.item.max(initial=0))) + 1
    keep = item != MISSING
    if seen:
        keep &= ~np.isin(q * n + item, seen_q * n + queries.item.astype(np.int64))
    return compact(q[keep], item[keep], score[keep], n_q, k)
