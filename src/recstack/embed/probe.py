"""A cheap, fixed quality probe of an item embedding: next-item HR@K of content kNN from recent history.

For each row whose target was clicked, the query is the mean of the unit vectors of the user's last
`last` history items; every item is scored by cosine, items already in the history are excluded, and a hit
is the target among the top K. It needs no training, so embedding variants compare on equal terms.
"""

from __future__ import annotations

import numpy as np


def knn_hit_rate(
    emb: np.ndarray, hist: np.ndarray, target: np.ndarray, k: int = 10, last: int = 5, chunk: int = 1024
) -> float:
    """emb (I, D) row == item id (row 0 padding); hist (N, L) left-padded, most recent last; target (N,)."""
    e = emb.astype(np.float32, copy=True)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    e[0] = 0
    recent = hist[:, -last:]  # (N, last); padding 0 maps to the zero row
    hits = 0
    for s in range(0, len(hist), chunk):
        h, t, r = hist[s : s + chunk], target[s : s + chunk], recent[s : s + chunk]
        q = e[r].sum(1)  # (B, D)
        scores = q @ e.T  # (B, I)
        scores[:, 0] = -np.inf
        np.put_along_axis(scores, h, -np.inf, axis=1)  # already seen (and padding)
        own = scores[np.arange(len(t)), t]
        ahead = (scores >= own[:, None]).sum(1) - 1  # ties count against the target: no credit for them
        hits += int(((ahead < k) & np.isfinite(own) & (np.abs(q).sum(1) > 0)).sum())
    return hits / max(len(hist), 1)
