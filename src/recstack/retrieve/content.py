"""Content ANN source: the embed stage's item vectors of the candidate pool in a `VectorIndex`, queried with
the recency-weighted mean of the user's last `history` item vectors (each L2-normalised first, so a long
text does not outweigh a short one). Cosine scores; users without history get no candidates."""

from __future__ import annotations

import numpy as np

from recstack.config import ContentSourceConfig
from recstack.retrieve.base import MISSING, Events, Queries, Ranking
from recstack.retrieve.index import IndexSettings, VectorIndex, search_excluding


def user_vectors(item_vecs: np.ndarray, queries: Queries, history: int, recency: float) -> np.ndarray:
    """(Q, d) sum over the last `history` events of recency ** age * unit(item vector); zero rows: no history."""
    q, rows, age = queries.recent(history)
    v = item_vecs[queries.item[rows]].astype(np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    out = np.zeros((len(queries), item_vecs.shape[1]), np.float32)
    np.add.at(out, q, v * (recency ** age.astype(np.float32))[:, None])
    return out


class Content:
    name = "content"

    def __init__(
        self,
        st: ContentSourceConfig,
        item_vecs: np.ndarray,
        pool: np.ndarray,
        index: IndexSettings,
        cache_dir=None,
        seed: int = 2025,
    ):
        pool = pool[np.linalg.norm(item_vecs[pool], axis=1) > 0]  # items without any content: not indexable
        self.st, self.vecs = st, item_vecs
        self.index = VectorIndex(
            item_vecs[pool],
            index,
            ids=pool,
            cache_dir=cache_dir,
            what="item vectors of the candidate pool",
            seed=seed,
        )
        self.figures = {"indexed": int(len(pool)), "backend": self.index.backend, "factory": index.factory}

    def fit(self, events: Events) -> None:  # the vectors are fitted by the embed stage
        pass

    def recommend(self, queries: Queries, k: int, exclude_seen: bool) -> Ranking:
        k_eff = min(k, self.index.n)
        u = user_vectors(self.vecs, queries, self.st.history, self.st.recency)
        exclude = queries.seen() if exclude_seen else None
        scores, ids = search_excluding(self.index, u, k_eff, exclude)
        out = Ranking.empty(len(queries), k)
        has = np.diff(queries.offsets) > 0
        ok = (ids != MISSING) & has[:, None]
        out.items[:, :k_eff] = np.where(ok, ids, MISSING)
        out.scores[:, :k_eff] = np.where(ok, scores, np.nan)
        return out
