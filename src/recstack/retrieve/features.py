"""mmctr: retrieval-derived features of a (history, target) row for the stacker.

- sim_max / sim_mean / sim_last: cosine of the target's vector with the last `window` history items' vectors
  (the embed stage's space; 0 without history);
- covisit: sum over the last `window` history items a_j (j = 0 the latest) of recency ** j * w(a_j -> target)
  in the co-visitation matrix of the train rows; covisit_max: the largest single w(a_j -> target);
- ann_rank: the target's 0-based rank among the `cap` nearest items of the user's recency-weighted history
  vector (cap when it is not among them).
"""

from __future__ import annotations

import numpy as np

from recstack.retrieve.base import Events, Queries
from recstack.retrieve.content import user_vectors
from recstack.retrieve.covisit import CovisitMatrix
from recstack.retrieve.index import VectorIndex

FEATURES = ("sim_max", "sim_mean", "sim_last", "covisit", "covisit_max", "ann_rank")


def hist_queries(hist: np.ndarray, split: str) -> Queries:
    """(N, L) left-padded histories (0 = padding, most recent last) as Queries (every event a click)."""
    mask = hist != 0
    length = mask.sum(1)
    offsets = np.r_[0, np.cumsum(length)].astype(np.int64)
    item = hist[mask].astype(np.int64)
    pos = np.nonzero(mask)[1].astype(np.int64)
    return Queries(
        split, np.arange(len(hist), dtype=np.int64), offsets, item, np.ones(len(item), np.int8), pos
    )


def train_sequences(user: np.ndarray, hist: np.ndarray, target: np.ndarray, label: np.ndarray) -> Events:
    """One sequence per train user: the longest history among its rows, then that row's target if clicked."""
    length = (hist != 0).sum(1)
    order = np.lexsort((-length, user))
    first = order[np.r_[True, user[order][1:] != user[order][:-1]]]  # the longest row of each user
    rows_u, rows_i = [], []
    for r in first.tolist():
        seq = hist[r][hist[r] != 0]
        if label[r] > 0:
            seq = np.r_[seq, target[r]]
        rows_u.append(np.full(len(seq), user[r], np.int64))
        rows_i.append(seq.astype(np.int64))
    u = np.concatenate(rows_u) if rows_u else np.zeros(0, np.int64)
    i = np.concatenate(rows_i) if rows_i else np.zeros(0, np.int64)
    ts = np.arange(len(i), dtype=np.int64)  # positions: no timestamps in the MMCTR layout
    return Events(u, i, np.ones(len(i), np.int8), ts)


def covisit_lookup(m: CovisitMatrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """w(a -> b) for each pair (0 where b is not among a's kept partners). Only the rows of the distinct `a`
    are keyed and sorted: keying the whole matrix took ~5 int64 copies of its ~350M entries (~10 GB and a
    sort of them) at TencentGR-1M size, on every call."""
    n = len(m.indptr) - 1
    rows, local = np.unique(a, return_inverse=True)
    start = m.indptr[rows].astype(np.int64)
    length = m.indptr[rows + 1].astype(np.int64) - start
    # entry positions of those rows in the matrix, row after row
    pos = np.repeat(start - (np.cumsum(length) - length), length) + np.arange(
        int(length.sum()), dtype=np.int64
    )
    keys = np.repeat(np.arange(len(rows), dtype=np.int64), length) * n + m.nbr[pos]
    order = np.argsort(keys)
    keys = keys[order]
    want = local.astype(np.int64) * n + b
    at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
    hit = (keys[at] == want) if len(keys) else np.zeros(len(want), bool)
    return np.where(hit, m.weight[pos[order]][at] if len(keys) else 0.0, 0.0)


def row_features(
    hist: np.ndarray,
    target: np.ndarray,
    item_vecs: np.ndarray,
    covisit: CovisitMatrix,
    index: VectorIndex,
    window: int,
    recency: float,
    cap: int,
) -> dict[str, np.ndarray]:
    q = hist_queries(hist, "rows")
    qq, rows, age = q.recent(window)
    a = q.item[rows]
    t = target[qq]
    unit = item_vecs / np.maximum(np.linalg.norm(item_vecs, axis=1, keepdims=True), 1e-12)
    sim = np.einsum("nd,nd->n", unit[a], unit[t])
    n = len(hist)
    count = np.bincount(qq, minlength=n)
    sim_max = np.full(n, -np.inf)
    np.maximum.at(sim_max, qq, sim)
    out = {
        "sim_max": np.where(count > 0, sim_max, 0.0),
        "sim_mean": np.bincount(qq, weights=sim, minlength=n) / np.maximum(count, 1),
        "sim_last": np.zeros(n),
    }
    last = age == 0
    out["sim_last"][qq[last]] = sim[last]
    w = covisit_lookup(covisit, a, t)
    out["covisit"] = np.bincount(qq, weights=recency ** age.astype(np.float64) * w, minlength=n)
    cmax = np.zeros(n)
    np.maximum.at(cmax, qq, w)
    out["covisit_max"] = cmax
    u = user_vectors(item_vecs, q, window, recency)
    k = min(cap, index.n)
    _, ids = index.search(u, k)
    hit = ids == target[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), cap)
    out["ann_rank"] = np.where(count > 0, rank, cap)
    return {f: out[f].astype(np.float32) for f in FEATURES}
