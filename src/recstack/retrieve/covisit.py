"""Co-visitation source: items engaged close together in one user's sequence predict each other.

Pairs (a, b) of events at most `window` events apart in one user's run each add
    action_weight[action of b] * 2 ** (-|ts_b - ts_a| / half_life)          (a before b: forward)
    backward * action_weight[action of a] * 2 ** (-|ts_b - ts_a| / half_life)  (b -> a, the reverse pair)
to w(a -> b): the target side's action says how much the engagement is worth (conversions weigh 2.5 as the
final-round metric weighs them), the time gap says how related the two events are. This is the
co-visitation matrix of the Kaggle OTTO 2022 solutions, with TencentGR's action types.

Streamed, never dense: the pairs of a block of events are summed into a sparse (scipy CSR, float64) matrix
added to the pass's running sum; only source items with a % parts == p are kept in pass p, so memory is one
pass's pairs, and each item keeps its `neighbours` strongest partners (CSR: indptr, nbr, weight).
A query scores b by sum over its last `history` events a_j (age j = 0 for the latest) of
recency ** j * action_weight[action of a_j] * w(a_j -> b), over the candidate pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recstack.artifacts import atomic_path
from recstack.config import CovisitConfig
from recstack.errors import DataError
from recstack.retrieve.base import Events, Queries, Ranking, action_weights, top_k_groups

log = logging.getLogger(__name__)

PAIR_BYTES = 40  # key, weight, sort order and masks per candidate pair while a block is reduced


@dataclass(frozen=True)
class CovisitMatrix:
    indptr: np.ndarray  # (n + 1,) int64
    nbr: np.ndarray  # (nnz,) int32, strongest first within a row
    weight: np.ndarray  # (nnz,) float32

    def row(self, a: int) -> tuple[np.ndarray, np.ndarray]:
        return self.nbr[self.indptr[a] : self.indptr[a + 1]], self.weight[self.indptr[a] : self.indptr[a + 1]]


def write_matrix(path: str | Path, m: CovisitMatrix) -> None:
    """The matrix as an uncompressed npz of its three CSR arrays (indptr, nbr, weight), written atomically:
    ~8 bytes per kept pair, read back whole by `read_matrix` without refitting."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, indptr=m.indptr, nbr=m.nbr, weight=m.weight)


def read_matrix(path: str | Path, n_rows: int) -> CovisitMatrix:
    """A matrix written by `write_matrix`, checked against the item table's `n_rows` rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the retrieve stage (it writes its co-visitation matrices)")
    with np.load(path) as z:
        missing = sorted({"indptr", "nbr", "weight"} - set(z.files))
        if missing:
            raise DataError(
                f"{path}: no array(s) {missing}; expected indptr, nbr, weight (covisit.write_matrix)"
            )
        m = CovisitMatrix(z["indptr"], z["nbr"], z["weight"])
    nnz = len(m.nbr)
    if m.indptr.shape != (n_rows + 1,) or m.indptr[0] != 0 or m.indptr[-1] != nnz or len(m.weight) != nnz:
        raise DataError(
            f"{path}: indptr {m.indptr.shape} ending at {m.indptr[-1] if len(m.indptr) else None}, "
            f"{nnz} neighbours, {len(m.weight)} weights; expected indptr ({n_rows + 1},) from 0 "
            f"to the number of neighbours (one row per item of the item table)"
        )
    if nnz and (m.nbr.min() < 0 or m.nbr.max() >= n_rows):
        raise DataError(f"{path}: neighbour ids outside 0..{n_rows - 1}")
    return m


def _reduce(key: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(key) == 0:
        return key, w
    order = np.argsort(key)  # sums do not depend on the order of equal keys: no stable sort needed
    key, w = key[order], w[order]
    first = np.r_[0, np.flatnonzero(key[1:] != key[:-1]) + 1]
    return key[first], np.add.reduceat(w, first)


def _pairs(ev: Events, pos: np.ndarray, st: CovisitConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source item, partner item (int32) and float64 weight of every pair whose source event is one of
    rows `pos`. The source side is gathered once per block, the partner side once per offset."""
    srcs, dsts, ws = [], [], []
    act_w = np.asarray(action_weights(st), np.float32)
    last = len(ev) - 1
    u, it = ev.user[pos], ev.item[pos]
    ts = ev.ts[pos] if st.half_life_hours > 0 else None
    for d in range(1, st.window + 1):
        for other, scale in ((pos + d, 1.0), (pos - d, st.backward)):  # later partner, earlier partner
            j = np.clip(other, 0, last)  # out of range: clipped onto the source's own run, masked below
            jt = ev.item[j]
            ok = (ev.user[j] == u) & (jt != it) & (other == j)
            j = j[ok]
            w = np.float32(scale) * act_w[ev.action[j]]
            if ts is not None:
                gap = np.abs(ev.ts[j] - ts[ok]).astype(np.float32)
                w = w * np.exp2(-gap / np.float32(st.half_life_hours * 3600))
            m = w > 0
            srcs.append(it[ok][m].astype(np.int32))
            dsts.append(jt[ok][m].astype(np.int32))
            ws.append(w[m].astype(np.float64))
    return np.concatenate(srcs), np.concatenate(dsts), np.concatenate(ws)


def _summed(src: np.ndarray, dst: np.ndarray, w: np.ndarray, n: int) -> sp.csr_matrix:
    """w summed per (src, dst) as an (n, n) CSR matrix, partners ascending within a row. scipy's COO -> CSR
    conversion is a counting sort by row and a sort within each (short) row: linear in the pairs where one
    global sort of int64 keys led the profile (the fit 4x faster at 100k users:
    bench/README.md "Co-visitation fit and fusion search"). float64 sums of float32 terms: exact for the
    undecayed weights, so the matrix does not depend on block or pass boundaries."""
    m = sp.csr_matrix((w, (src, dst)), shape=(n, n))
    m.sum_duplicates()
    return m


def _strongest(m: sp.csr_matrix, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows' `keep` strongest partners: (row, partner, float32 weight), by row, strongest first, ties by
    partner (one stable sort of row << 32 | descending weight bits over partner-ascending rows)."""
    row = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    w = m.data.astype(np.float32)
    bits = w.view(np.uint32).astype(np.int64)  # a positive float32's bits order as the float does
    order = np.argsort((row << 32) | (0xFFFFFFFF - bits), kind="stable")
    pos = np.arange(len(order)) - np.repeat(m.indptr[:-1], np.diff(m.indptr))  # place within its row
    top = order[pos < keep]
    return row[top], m.indices[top].astype(np.int32), w[top]


def fit_covisit(ev: Events, n: int, st: CovisitConfig, parts: int = 0) -> tuple[CovisitMatrix, dict]:
    """The co-visitation matrix of `ev` over item rows 0..n-1, each row cut to `neighbours` partners.
    `parts` passes (0: as many as `memory_mb` needs), pass p handling source items with item % parts == p."""
    budget = max(st.memory_mb, 16) * (1 << 20) // PAIR_BYTES  # pairs held at once
    if parts <= 0:
        parts = max(1, -(-2 * st.window * len(ev) // budget))  # 2 * window pairs per event at most
    block = max(1, budget // (4 * st.window))  # source events per block: its raw pairs use half the budget
    # each pass keeps (row-ascending source int32, partner int32, weight float32): 12 bytes per kept pair, up
    # to items x neighbours pairs (478M at TencentGR-1M size); the CSR arrays are filled pass by pass, each
    # pass's lists freed once placed, so the peak is the kept pairs plus the 8-byte-per-pair result
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    count = np.zeros(n, np.int64)
    part_of = ev.item % parts if parts > 1 else None
    for part in range(parts):
        rows = np.arange(len(ev)) if part_of is None else np.flatnonzero(part_of == part)
        acc = sp.csr_matrix((n, n), dtype=np.float64)
        for b0 in range(0, len(rows), block):
            acc = acc + _summed(*_pairs(ev, rows[b0 : b0 + block], st), n)  # sparse add: sums, sorted rows
        src, dst, w = _strongest(acc, st.neighbours)
        log.info("co-visitation pass %d/%d: %d item pairs, %d kept", part + 1, parts, acc.nnz, len(src))
        del acc
        count += np.bincount(src, minlength=n)
        kept.append((src.astype(np.int32), dst, w))
        del src, dst, w
    # passes hold disjoint rows, each already in row order: place every kept pair without another sort
    indptr = np.r_[0, np.cumsum(count)].astype(np.int64)
    nbr, weight = np.empty(int(indptr[-1]), np.int32), np.empty(int(indptr[-1]), np.float32)
    kept.reverse()  # popped from the end: pass order, each freed once placed
    while kept:
        s, d, w = kept.pop()
        at = indptr[s] + np.arange(len(s)) - np.searchsorted(s, s)
        nbr[at], weight[at] = d, w
        del s, d, w, at
    matrix = CovisitMatrix(indptr, nbr, weight)
    figures = {"passes": parts, "pairs_kept": len(nbr), "items_with_pairs": int((count > 0).sum())}
    return matrix, figures


def score_queries(
    m: CovisitMatrix,
    queries: Queries,
    st: CovisitConfig,
    pool_mask: np.ndarray,
    k: int,
    exclude_seen: bool,
    chunk: int = 4096,
) -> Ranking:
    """Top-k pool items per query by the recency-weighted co-visitation of its last `history` events."""
    n = len(m.indptr) - 1
    act_w = np.asarray(action_weights(st), np.float64)
    q_all, rows_all, age_all = queries.recent(st.history)
    parts = []
    for c0 in range(0, len(queries), chunk):
        c1 = min(len(queries), c0 + chunk)
        sel = (q_all >= c0) & (q_all < c1)
        q, rows, age = q_all[sel] - c0, rows_all[sel], age_all[sel]
        a = queries.item[rows].astype(np.int64)
        r = st.recency ** age.astype(np.float64) * act_w[queries.action[rows]]
        start, count = m.indptr[a], m.indptr[a + 1] - m.indptr[a]
        flat = np.repeat(start - np.r_[0, np.cumsum(count)[:-1]], count) + np.arange(count.sum())
        qq = np.repeat(q, count)
        b = m.nbr[flat].astype(np.int64)
        contrib = np.repeat(r, count) * m.weight[flat]
        keep = pool_mask[b]
        key = qq[keep] * n + b[keep]
        key, score = _reduce(key, contrib[keep])
        if exclude_seen:
            seen_q = np.repeat(np.arange(c1 - c0), np.diff(queries.offsets[c0 : c1 + 1]))
            seen_key = seen_q * n + queries.item[queries.offsets[c0] : queries.offsets[c1]].astype(np.int64)
            ok = ~np.isin(key, seen_key)
            key, score = key[ok], score[ok]
        parts.append(top_k_groups(key // n, key % n, score, c1 - c0, k))
    if not parts:
        return Ranking.empty(0, k)
    return Ranking(np.concatenate([p.items for p in parts]), np.concatenate([p.scores for p in parts]))


class Covisit:
    """The registry's co-visitation source (see the module docstring)."""

    name = "covisit"

    def __init__(self, st: CovisitConfig, n_rows: int, pool: np.ndarray):
        self.st, self.n = st, n_rows
        self.pool_mask = np.zeros(n_rows, bool)
        self.pool_mask[pool] = True
        self.figures: dict = {}

    def fit(self, events: Events) -> None:
        self.matrix, self.figures = fit_covisit(events, self.n, self.st)

    def use(self, matrix: CovisitMatrix | None, figures: dict) -> None:
        """Answer queries from a matrix fitted elsewhere (the retrieve stage fits each matrix once, for
        this source and for the stacker's features); None lets the held one go."""
        self.matrix, self.figures = matrix, figures

    def recommend(self, queries: Queries, k: int, exclude_seen: bool) -> Ranking:
        return score_queries(self.matrix, queries, self.st, self.pool_mask, k, exclude_seen)
