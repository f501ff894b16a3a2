"""Merge the sources' rankings of one split into the candidates table, and fuse them into one ranking.

The table (contract in paths.Retrieved.CANDIDATES): one row per (query, item) proposed by any source, with
each source's score and rank (NaN / -1 where it did not propose the item) and how many sources did.
The fusion ("merged") is weighted reciprocal-rank fusion, sum_s w_s / (rrf_k + rank_s + 1) (Cormack et al.
2009): it needs no common score scale, and its weights are tuned on the stacker's training queries, never
on the validation users whose score is reported.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from recstack.fusion import best_weights, rrf_terms
from recstack.retrieve.base import MISSING, Ranking, top_k_groups
from recstack.tasks import TGR_K, rank_gains

MERGED = "merged"
WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0)  # per source; the first best combination in grid order wins
# train queries the weights are tuned on, at most: the search is linear in the candidate rows (2,000 queries
# x 4 sources x top 500: 54 s on the loaded 2-core VM, bench_retrieve.py --part fusion); 2,000 bounds it at
# TencentGR-1M size (10,000 stacker queries) and keeps every query of the default MovieLens run (1,062)
# and of the 10% synthetic run (1,000)
TUNE_QUERIES = 2000


def merge(rankings: dict[str, Ranking], users: np.ndarray) -> pd.DataFrame:
    """Long table: user_row, user, item, n_sources, <s>_score, <s>_rank for every source s."""
    q_parts, item_parts = [], []
    for r in rankings.values():
        q = np.repeat(np.arange(r.items.shape[0]), r.items.shape[1])
        ok = r.items.reshape(-1) != MISSING
        q_parts.append(q[ok])
        item_parts.append(r.items.reshape(-1)[ok])
    q, item = np.concatenate(q_parts), np.concatenate(item_parts)
    n = int(item.max(initial=0)) + 1
    keys = np.unique(q * n + item)
    out = pd.DataFrame({"user_row": (keys // n).astype(np.int64)})
    out["user"] = np.asarray(users, np.int64)[out["user_row"].to_numpy()]
    out["item"] = (keys % n).astype(np.int64)
    count = np.zeros(len(keys), np.int8)
    for name, r in rankings.items():
        q = np.repeat(np.arange(r.items.shape[0]), r.items.shape[1])
        flat = r.items.reshape(-1)
        ok = flat != MISSING
        at = np.searchsorted(keys, q[ok] * n + flat[ok])
        score = np.full(len(keys), np.nan, np.float32)
        rank = np.full(len(keys), -1, np.int32)
        score[at] = r.scores.reshape(-1)[ok]
        rank[at] = np.tile(np.arange(r.items.shape[1]), r.items.shape[0])[ok]
        out[f"{name}_score"], out[f"{name}_rank"] = score, rank
        count += (rank >= 0).astype(np.int8)
    out.insert(3, "n_sources", count)
    return out


def rrf_matrix(table: pd.DataFrame, sources: list[str], rrf_k: float) -> np.ndarray:
    """(rows, S): each source's RRF term (fusion.rrf_terms), 0 where the source did not propose the item."""
    cols = [rrf_terms(table[f"{s}_rank"].to_numpy(), rrf_k) for s in sources]
    return np.stack(cols, axis=1) if cols else np.zeros((len(table), 0))


def fuse(
    table: pd.DataFrame, sources: list[str], weights: list[float], rrf_k: float, n_queries: int, k: int
) -> Ranking:
    score = rrf_matrix(table, sources, rrf_k) @ np.asarray(weights, np.float64)
    q = table["user_row"].to_numpy()
    keep = score > 0
    return top_k_groups(q[keep], table["item"].to_numpy()[keep], score[keep], n_queries, k)


def target_ranks(table: pd.DataFrame, score: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each query's target under `score` (ties: lower item first), -1 when not proposed
    (or proposed with score 0, i.e. by no source with weight)."""
    return _target_ranks(table["user_row"].to_numpy(), table["item"].to_numpy(), score, target)


def _target_ranks(q: np.ndarray, item: np.ndarray, score: np.ndarray, target: np.ndarray) -> np.ndarray:
    n_q = len(target)
    is_t = item == target[q]
    t_score = np.full(n_q, -np.inf)
    t_score[q[is_t]] = score[is_t]
    ahead = (score > t_score[q]) | ((score == t_score[q]) & (item < target[q]))
    rank = np.bincount(q, weights=ahead, minlength=n_q).astype(np.int64)
    return np.where(np.isfinite(t_score) & (t_score > 0), rank, -1)


def metric_from_ranks(rank: np.ndarray, weight: np.ndarray, k: int = TGR_K) -> float:
    """0.31 HR@k + 0.69 NDCG@k averaged with per-query weights (the final-round metric weighs actions)."""
    gain = rank_gains(rank, k)
    return float(np.average(gain, weights=weight)) if weight.sum() > 0 else 0.0


def tune_weights(
    table: pd.DataFrame,
    sources: list[str],
    rrf_k: float,
    target: np.ndarray,
    weight: np.ndarray,
    max_queries: int = 0,
    seed: int = 0,
) -> tuple[list[float], float]:
    """The grid point of WEIGHT_GRID per source with the best weighted top-10 score on these queries (on a
    seeded random `max_queries` of them when there are more: 0 = all).

    Only rows that can change a target's rank are scored at each grid point: the target rows, and rows of
    queries whose target was proposed, except those no weighting can put ahead of the target (every
    source's RRF term <= the target's and a higher item id: with weights >= 0 their fused score is <= the
    target's, a tie going to the target): exact, the same ranks as scoring every row, ~2x faster. The cost
    is rows x 257 grid points, so the stage caps the queries (TUNE_QUERIES) at TencentGR-1M size."""
    q, item = table["user_row"].to_numpy(), table["item"].to_numpy()
    if 0 < max_queries < len(target):
        pick = np.sort(np.random.default_rng(seed).choice(len(target), max_queries, replace=False))
        new_id = np.full(len(target), -1, np.int64)
        new_id[pick] = np.arange(max_queries)
        rows = new_id[q] >= 0
        table, q, item = table[rows], new_id[q[rows]], item[rows]
        target, weight = target[pick], weight[pick]
    rrf = rrf_matrix(table, sources, rrf_k)
    is_t = item == target[q]
    found = np.zeros(len(target), bool)  # queries whose target was proposed: the others rank -1 anyway
    found[q[is_t]] = True
    rrf_t = np.zeros((len(target), len(sources)))
    rrf_t[q[is_t]] = rrf[is_t]
    never_ahead = (rrf <= rrf_t[q]).all(axis=1) & (item > target[q])
    live = found[q] & ~never_ahead
    rrf, q, item = np.ascontiguousarray(rrf[live]), q[live], item[live]
    grid = [(1.0,) * len(sources), *itertools.product(WEIGHT_GRID, repeat=len(sources))]
    best_w, best = best_weights(
        grid, lambda w: metric_from_ranks(_target_ranks(q, item, rrf @ w, target), weight)
    )
    return [float(x) for x in best_w], best


def add_ranking(table: pd.DataFrame, name: str, ranking: Ranking) -> pd.DataFrame:
    """`name`_score / `name`_rank columns for a ranking whose items are all rows of `table` already."""
    n = int(max(table["item"].to_numpy().max(initial=0), ranking.items.max(initial=0))) + 1
    keys = table["user_row"].to_numpy() * n + table["item"].to_numpy()
    order = np.argsort(keys)
    q = np.repeat(np.arange(ranking.items.shape[0]), ranking.items.shape[1])
    flat = ranking.items.reshape(-1)
    ok = flat != MISSING
    at = order[np.searchsorted(keys[order], q[ok] * n + flat[ok])]
    score = np.full(len(table), np.nan, np.float32)
    rank = np.full(len(table), -1, np.int32)
    score[at] = ranking.scores.reshape(-1)[ok]
    rank[at] = np.tile(np.arange(ranking.items.shape[1]), ranking.items.shape[0])[ok]
    return table.assign(**{f"{name}_score": score, f"{name}_rank": rank})
