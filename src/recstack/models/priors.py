"""Baseline ranker: smoothed CTR priors + history affinity, combined by a logistic regression.

Two feature families, both counted from labelled rows only:
- priors: per group (item, user, likes level, views level, level pair) the Bayesian-smoothed CTR
  (clicks + m * p) / (shows + m), p the global CTR, m pseudo-shows, so rare groups shrink to p;
- history affinity (item-CF): how often the target was clicked right after the row's recent history
  items elsewhere in train (co-click counts), and how many recent history items share a tag with it.
  With negatives sampled by popularity (as in MovieLens-in-MMCTR), priors alone are near chance; whether
  the target fits the history is the signal.
Train features are out-of-fold (priors) or leave-one-out (co-clicks): in-fold counts would contain each
row's own label and the regression would learn to trust them too much.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

GROUPS: tuple[tuple[str, ...], ...] = (
    ("item_id",),
    ("user_id",),
    ("likes_level",),
    ("views_level",),
    ("likes_level", "views_level"),
)


# ---- smoothed CTR priors ----------------------------------------------------------------------------
def _keys(df: pd.DataFrame, cols: tuple[str, ...]) -> np.ndarray:
    key = df[cols[0]].to_numpy(np.int64)
    for c in cols[1:]:  # only levels (< 1000) follow the first column: a mixed-radix key is collision free
        key = key * 1000 + df[c].to_numpy(np.int64)
    return key


def _encode(fit_keys, fit_y, apply_keys, strength: float, prior: float) -> tuple[np.ndarray, np.ndarray]:
    uniq, inv = np.unique(fit_keys, return_inverse=True)
    clicks = np.bincount(inv, weights=fit_y, minlength=len(uniq))
    shows = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    pos = np.minimum(np.searchsorted(uniq, apply_keys), len(uniq) - 1)
    hit = uniq[pos] == apply_keys
    c, n = np.where(hit, clicks[pos], 0.0), np.where(hit, shows[pos], 0.0)
    ctr = (c + strength * prior) / (n + strength)
    return np.log(ctr / (1 - ctr)), np.log1p(n)


def prior_features(fit: pd.DataFrame, apply: pd.DataFrame, strength: float) -> np.ndarray:
    """(len(apply), 2 * len(GROUPS)): logit smoothed CTR and log shows per group."""
    y = fit["label"].to_numpy(np.float64)
    prior = float(y.mean())
    cols = []
    for g in GROUPS:
        cols += _encode(_keys(fit, g), y, _keys(apply, g), strength, prior)
    return np.stack(cols, 1)


def oof_prior_features(train: pd.DataFrame, folds: int, strength: float, seed: int) -> np.ndarray:
    fold = np.random.default_rng(seed).integers(0, folds, len(train))
    out = np.zeros((len(train), 2 * len(GROUPS)))
    for k in range(folds):
        held = fold == k
        out[held] = prior_features(train[~held], train[held], strength)
    return out


# ---- history affinity -------------------------------------------------------------------------------
class HistoryAffinity:
    """Co-click counts C[h, t]: rows where t was clicked with h among the last `window` history items."""

    def __init__(self, n_items: int, tags: np.ndarray, window: int = 16):
        self.n, self.tags, self.window = n_items, tags, window  # tags (n_items, T), 0 = none

    def fit(self, hist: np.ndarray, target: np.ndarray, label: np.ndarray) -> HistoryAffinity:
        h = hist[label == 1, -self.window :]  # (P, W)
        t = np.repeat(target[label == 1], h.shape[1])
        keep = h.reshape(-1) != 0
        data = np.ones(int(keep.sum()), np.float32)
        self.cooc = sp.csr_matrix((data, (h.reshape(-1)[keep], t[keep])), shape=(self.n, self.n))
        self.cooc.sum_duplicates()
        self.clicks = np.bincount(target[label == 1], minlength=self.n).astype(np.float64)
        return self

    def features(
        self, hist: np.ndarray, target: np.ndarray, own_label: np.ndarray | None = None
    ) -> np.ndarray:
        """(N, 5): log co-clicks sum, sum per target click, max, share of history co-clicked, tag overlap.

        `own_label` (train rows): leave this row's own contribution out of the counts.
        """
        h = hist[:, -self.window :]  # (N, W)
        valid = h != 0
        n_valid = np.maximum(valid.sum(1), 1)
        c = np.zeros(h.shape, np.float64)
        for j in range(h.shape[1]):  # W sparse lookups of N (item, target) pairs each
            c[:, j] = np.asarray(self.cooc[h[:, j], target]).ravel()
        if own_label is not None:
            # this row added label * (times h occurs in its own window) to C[h, target]
            dup = (h[:, :, None] == h[:, None, :]).sum(2)
            c -= own_label[:, None] * dup * valid
        c *= valid
        total = c.sum(1)
        t_tags = self.tags[target]  # (N, T)
        h_tags = self.tags[h]  # (N, W, T)
        share_tag = (h_tags[:, :, :, None] == t_tags[:, None, None, :]) & (t_tags[:, None, None, :] != 0)
        tag_overlap = (share_tag.any((2, 3)) & valid).sum(1) / n_valid
        return np.stack(
            [
                np.log1p(total),
                total / (self.clicks[target] + 10.0),
                np.log1p(c.max(1)),
                (c > 0).sum(1) / n_valid,
                tag_overlap,
            ],
            1,
        )

    def features_chunked(self, hist, target, own_label=None, chunk: int = 200_000) -> np.ndarray:
        parts = [
            self.features(
                hist[i : i + chunk],
                target[i : i + chunk],
                None if own_label is None else own_label[i : i + chunk],
            )
            for i in range(0, len(target), chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 5))


# ---- the model --------------------------------------------------------------------------------------
class PriorsBaseline:
    def __init__(
        self,
        n_items: int,
        tags: np.ndarray,
        strength: float = 20.0,
        folds: int = 5,
        window: int = 16,
        max_iter: int = 200,
        seed: int = 0,
    ):
        self.n_items, self.tags = n_items, tags
        self.strength, self.folds, self.window, self.seed = strength, folds, window, seed
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))

    def _x(self, priors: np.ndarray, affinity: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
        return np.hstack([priors, affinity, np.log1p(rows["hist_len"].to_numpy(np.float64))[:, None]])

    def fit(self, train: pd.DataFrame, hist: np.ndarray) -> np.ndarray:
        """Fit on train; returns train predictions made from out-of-fold / leave-one-out features."""
        y = train["label"].to_numpy()
        aff = HistoryAffinity(self.n_items, self.tags, self.window).fit(hist, train["item_id"].to_numpy(), y)
        x = self._x(
            oof_prior_features(train, self.folds, self.strength, self.seed),
            aff.features_chunked(hist, train["item_id"].to_numpy(), own_label=y),
            train,
        )
        self.model.fit(x, y)
        return self.model.predict_proba(x)[:, 1]

    def predict(
        self, history: pd.DataFrame, history_hist: np.ndarray, rows: pd.DataFrame, hist: np.ndarray
    ) -> np.ndarray:
        """P(click) for `rows`, with every count taken from the labelled `history` rows."""
        y = history["label"].to_numpy()
        aff = HistoryAffinity(self.n_items, self.tags, self.window).fit(
            history_hist, history["item_id"].to_numpy(), y
        )
        x = self._x(
            prior_features(history, rows, self.strength),
            aff.features_chunked(hist, rows["item_id"].to_numpy()),
            rows,
        )
        return self.model.predict_proba(x)[:, 1]
