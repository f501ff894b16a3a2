"""TencentGR baseline: recent popularity over the candidate pool, the user's seen items left out.

An item's score is the sum of its clicks (1) and conversions (`conversion_weight`, the final-round metric
weight) with exponential time decay: recent demand predicts the next click better than all-time counts.
"""

from __future__ import annotations

import numpy as np

from recstack.tasks import ACTION_WEIGHTS, CLICK, CONVERSION

DAY = 86_400


def decayed_popularity(
    item: np.ndarray,
    action: np.ndarray,
    ts: np.ndarray,
    n_rows: int,
    half_life_days: float,
    conversion_weight: float = ACTION_WEIGHTS[CONVERSION],
) -> np.ndarray:
    """(n_rows,) score per item row; exposures (action 0) count nothing."""
    weight = np.where(action == CONVERSION, conversion_weight, (action == CLICK).astype(np.float64))
    now = ts.max() if len(ts) else 0
    decay = np.exp2(-(now - ts) / (half_life_days * DAY))
    return np.bincount(item, weights=weight * decay, minlength=n_rows)


def recommend(
    score: np.ndarray, pool: np.ndarray, seen: list[np.ndarray], k: int, exclude_seen: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k pool items per user by `score`; returns (U, k) item rows and their scores.

    Ties are broken by pool order (stable sort), so the output is deterministic.
    """
    k = min(k, len(pool))
    ranked = pool[np.argsort(-score[pool], kind="stable")]
    out = np.zeros((len(seen), k), np.int64)
    for u, items in enumerate(seen):
        if not exclude_seen or len(items) == 0:
            out[u] = ranked[:k]
            continue
        head = ranked[: k + len(items)]  # at most len(items) of these can be seen
        rest = head[~np.isin(head, items)]
        if len(rest) < k:  # the user has seen almost the whole pool: fill with the best seen items
            rest = np.concatenate([rest, ranked[np.isin(ranked, items)]])
        out[u] = rest[:k]
    return out, score[out]
