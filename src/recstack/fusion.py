"""Reciprocal-rank fusion and its weight search, once for every stage that fuses rankings (retrieve's merged
candidates, the tencentgr ensemble's blend).

RRF (Cormack, Clarke and Buettcher, SIGIR 2009) scores an item sum_s w_s / (RRF_K + rank_s + 1) over the
sources s that ranked it (0-based rank_s): it needs no common score scale, and the constant 60 keeps one
source's first places from drowning the others' agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from recstack.tasks import RRF_K


def rrf_terms(rank: np.ndarray, rrf_k: float = RRF_K) -> np.ndarray:
    """1 / (rrf_k + rank + 1) for each 0-based rank, 0 where rank < 0 (the source did not rank the item)."""
    rank = np.asarray(rank)
    return np.where(rank >= 0, 1.0 / (rrf_k + rank + 1.0), 0.0)


def best_weights(
    grid: Iterable[Sequence[float]], score: Callable[[np.ndarray], float]
) -> tuple[np.ndarray | None, float]:
    """The first weight vector of `grid` with the highest `score(w)` (a later one must beat it by more than
    float noise, 1e-12, so the grid's order breaks ties), and that score; (None, -inf) for an empty grid.
    Vectors of zeros only are skipped: they fuse nothing."""
    best, best_w = -np.inf, None
    for w in grid:
        w = np.asarray(w, np.float64)
        if not w.any():
            continue
        s = score(w)
        if s > best + 1e-12:
            best, best_w = s, w
    return best_w, best
