"""Blends whose weights are fitted, not typed: non-negative, summing to 1, and fitted on rows other than the
ones whose score is reported (user-grouped CV over valid; test uses the weights fitted on all of valid).

mmctr: a blend is sum_i w_i z_i over each source's logit (method fit) or within-split rank percentile
(method rank). The weights are those of a logistic regression on the z with non-negative coefficients
(projected gradient), normalised to sum to 1: the normalisation changes no ranking, so no AUC.
tencentgr: weighted reciprocal-rank fusion (Cormack et al. 2009) of the sources' ranked lists; weights are
searched on a simplex grid for the best top-10 score.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from recstack.fusion import best_weights, rrf_terms
from recstack.metrics import auc, tencentgr_score
from recstack.tasks import TGR_K

EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def percentile(p: np.ndarray) -> np.ndarray:
    """Average rank / n in (0, 1]: rank averaging ignores each model's score scale."""
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    # ties share their mean rank
    _, inv, counts = np.unique(p, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv] / len(p)


def blend_fixed(preds: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Typed weights (normalised), mean in logit space: keeps a calibrated model calibrated."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    z = sum(wi * logit(p) for wi, p in zip(w, preds, strict=True))
    return 1.0 / (1.0 + np.exp(-z))


def fit_weights(z: np.ndarray, y: np.ndarray, iters: int = 3000) -> np.ndarray:
    """(K,) non-negative weights summing to 1 for the columns of z (N, K): logistic regression of y on
    z with coefficients >= 0 (FISTA with projection onto the non-negative orthant), then normalised."""
    z = np.asarray(z, np.float64)
    n, k = z.shape
    if k == 1:
        return np.ones(1)
    y = np.asarray(y, np.float64)
    scale = z.std(0) + 1e-12  # fit in standardised units (better conditioned), map back at the end
    zs = (z - z.mean(0)) / scale
    x = np.c_[zs, np.ones(n)]
    lipschitz = 0.25 * np.linalg.norm(x, 2) ** 2 / n
    step = 1.0 / lipschitz
    beta = np.r_[np.full(k, 1.0 / k), 0.0]
    prev, mom, t = beta.copy(), beta.copy(), 1.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ mom)))
        grad = x.T @ (p - y) / n
        beta = mom - step * grad
        beta[:k] = np.maximum(beta[:k], 0.0)  # projection: the intercept is free
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        mom = beta + (t - 1) / t_next * (beta - prev)
        prev, t = beta, t_next
    w = beta[:k] / scale
    return w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)


def blend_apply(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_i w_i z_i; for logits that is a probability after the sigmoid."""
    return np.asarray(z, np.float64) @ w


def cv_blend(z: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold blended scores (each fold blended with weights fitted on the other folds) and the
    per-fold weights."""
    out = np.full(len(y), np.nan)
    weights = []
    for k in np.unique(fold_of):
        held = fold_of == k
        w = fit_weights(z[~held], y[~held])
        out[held] = blend_apply(z[held], w)
        weights.append(w)
    return out, weights


def cv_auc(z: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> float:
    return auc(y, cv_blend(z, y, fold_of)[0])


# ---- tencentgr: reciprocal-rank fusion --------------------------------------------------------------


def rrf_table(rankings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Union of each user's ranked items over the sources -> items (U, M) (padded with -1) and each source's
    reciprocal-rank term (fusion.rrf_terms) per item, rr (U, M, S) (0 where the source lacks it)."""
    n_users, n_src = rankings[0].shape[0], len(rankings)
    width = sum(r.shape[1] for r in rankings)
    items = np.full((n_users, width), -1, np.int64)
    best_rank = np.full((n_users, width, n_src), -1, np.int64)  # -1: not ranked by that source
    for u in range(n_users):
        pos: dict[int, int] = {}
        for s, ranked in enumerate(rankings):
            for r, it in enumerate(ranked[u].tolist()):
                j = pos.setdefault(it, len(pos))
                if best_rank[u, j, s] < 0:  # a repeated item keeps its best rank
                    best_rank[u, j, s] = r
                items[u, j] = it
    m = max(1, int((items >= 0).sum(1).max()))
    return items[:, :m], rrf_terms(best_rank[:, :m])


def rrf_fuse(items: np.ndarray, rr: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items by sum_s w_s rr_s; ties keep first-seen order (the first source's order)."""
    fused = np.where(items >= 0, rr @ np.asarray(w, np.float64), -np.inf)  # (U, M)
    order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(items, order, 1), np.take_along_axis(fused, order, 1)


def simplex_grid(n: int, steps: int) -> np.ndarray:
    """Every weight vector of n non-negative multiples of 1/steps summing to 1 (stars and bars)."""
    pts = []
    for bars in combinations(range(steps + n - 1), n - 1):
        edges = np.r_[-1, bars, steps + n - 1]
        pts.append(np.diff(edges) - 1)
    return np.asarray(pts, np.float64) / steps


def fit_rrf_weights(
    items: np.ndarray, rr: np.ndarray, target: np.ndarray, k: int = TGR_K, steps: int = 10
) -> np.ndarray:
    """The simplex-grid point whose fusion has the best top-k score against `target` (U,); ties go to the
    most even weights."""
    grid = simplex_grid(rr.shape[2], steps)
    grid = grid[np.argsort(np.abs(grid - 1 / rr.shape[2]).sum(1), kind="stable")]
    return best_weights(grid, lambda w: tencentgr_score(rrf_fuse(items, rr, w, k)[0], target, k=k)["score"])[
        0
    ]


def cv_rrf(
    items: np.ndarray,
    rr: np.ndarray,
    target: np.ndarray,
    fold_of: np.ndarray,
    k: int = TGR_K,
    steps: int = 10,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold fused top-k (each fold fused with weights fitted on the other folds), per-fold weights."""
    top = np.zeros((len(items), k), np.int64)
    weights = []
    for f in np.unique(fold_of):
        held = fold_of == f
        w = fit_rrf_weights(items[~held], rr[~held], target[~held], k, steps)
        top[held] = rrf_fuse(items[held], rr[held], w, k)[0]
        weights.append(w)
    return top, weights
