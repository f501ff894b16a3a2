"""Retrieval figures: recall@K of a ranking (is the held-out target among its first K?) and its own top-10
score (0.31 HR@10 + 0.69 NDCG@10, plain and weighted by the target's action as the final round weighs it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from recstack.metrics import tencentgr_score
from recstack.retrieve.base import Ranking
from recstack.tasks import ACTION_WEIGHTS, TGR_K


def recall(ranking: Ranking, target: np.ndarray, ks: list[int]) -> dict[str, float | None]:
    """recall@K for each K (None where the ranking is shorter than K)."""
    hit = ranking.items == np.asarray(target)[:, None]  # (Q, width)
    first = np.where(hit.any(1), hit.argmax(1), np.iinfo(np.int64).max)
    return {f"recall@{k}": (round(float((first < k).mean()), 5) if k <= hit.shape[1] else None) for k in ks}


def top10(ranking: Ranking, target: np.ndarray, action: np.ndarray) -> dict[str, Any]:
    m = tencentgr_score(
        ranking.items[:, :TGR_K], target, k=TGR_K, action=action, action_weights=ACTION_WEIGHTS
    )
    return {
        "score": round(m["score"], 5),
        "hr@10": round(m["hr@10"], 5),
        "ndcg@10": round(m["ndcg@10"], 5),
        "weighted_score": round(m["weighted_score"], 5),
    }
