"""Cheap features for the level-2 models, computed from prepared tables only (never from the rows' labels).

mmctr, per sample row: tag overlap of the target with the history, the target's likes / views levels,
history length, repeats of the target in the history, and click counts of the target item and of the user
from the *train* split (valid and test rows get the same train-only counts, so the stacker sees one
distribution across the rows it learns from and the rows it predicts).

tencentgr, per (query, candidate item): decayed and raw popularity, item age and recency from the valid fold's
events (tgr_prepared.fit_events), repeats of the item in the user's history (and how recently and with
which action it was seen: history_features), and cosine similarity of the item to the user's recent history in
the embed space.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.data.tables.prepared import read_hist, read_items, read_samples
from recstack.fusion import rrf_terms
from recstack.models.popularity import DAY, decayed_popularity
from recstack.tasks import RRF_K

CHUNK = 20_000  # rows per block of the (rows x history x tags x tags) comparison


def _tag_overlap(
    hist: np.ndarray, target: np.ndarray, tags: np.ndarray, recent: int
) -> dict[str, np.ndarray]:
    """Share of (recent) history items sharing a tag with the target, and how many of the target's tags
    occur anywhere in the history. Tag 0 is padding."""
    share, share_recent, covered = (np.zeros(len(hist)) for _ in range(3))
    for a in range(0, len(hist), CHUNK):
        h, t = hist[a : a + CHUNK], target[a : a + CHUNK]
        th, tt = tags[h], tags[t]  # (B, L, T), (B, T)
        eq = (th[:, :, :, None] == tt[:, None, None, :]) & (tt[:, None, None, :] != 0)  # (B, L, T, T)
        item_hit = eq.any((2, 3)) & (h != 0)  # (B, L): history item shares a tag with the target
        n = np.maximum((h != 0).sum(1), 1)
        share[a : a + CHUNK] = item_hit.sum(1) / n
        n_r = np.maximum((h[:, -recent:] != 0).sum(1), 1)
        share_recent[a : a + CHUNK] = item_hit[:, -recent:].sum(1) / n_r
        tag_hit = eq.any((1, 2))  # (B, T): target tag seen in the history
        covered[a : a + CHUNK] = tag_hit.sum(1) / np.maximum((tt != 0).sum(1), 1)
    return {"tag_share": share, "tag_share_recent": share_recent, "tag_covered": covered}


def mmctr_features(prep: str | Path, split: str, recent: int = 10) -> pd.DataFrame:
    """One row per sample of `split` (in the prepared row order), indexed by row_id."""
    rows = read_samples(prep, split)
    hist = read_hist(prep, split)
    items = read_items(prep)
    tags = np.stack(items["tags"].to_numpy()).astype(np.int64)
    train = read_samples(prep, "train")
    n_items = len(items)
    item_rows = np.bincount(train["item_id"], minlength=n_items)
    item_clicks = np.bincount(train["item_id"], weights=train["label"], minlength=n_items)
    user_stats = train.groupby("user_id")["label"].agg(["size", "sum"])
    target = rows["item_id"].to_numpy()
    users = rows["user_id"]
    feats = {
        "likes_level": rows["likes_level"].to_numpy(np.float32),
        "views_level": rows["views_level"].to_numpy(np.float32),
        "hist_len": rows["hist_len"].to_numpy(np.float32),
        "target_in_hist": (hist == target[:, None]).sum(1).astype(np.float32),
        "item_train_rows": item_rows[target].astype(np.float32),
        "item_train_clicks": item_clicks[target].astype(np.float32),
        "user_train_rows": users.map(user_stats["size"]).fillna(0).to_numpy(np.float32),
        "user_train_clicks": users.map(user_stats["sum"]).fillna(0).to_numpy(np.float32),
    }
    feats |= {k: v.astype(np.float32) for k, v in _tag_overlap(hist, target, tags, recent).items()}
    return pd.DataFrame(feats, index=pd.Index(rows["row_id"].to_numpy(), name="row_id"))


def user_relative(x: pd.DataFrame, users: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Each column relative to the user's other rows of the same split: minus their mean, and the row's
    rank among them (a share in (0, 1]), plus the user's row count. Uses no label: the split's rows are all
    known when predicting. A user's rows compete for the same click (MovieLens builds 1 click + 3 negatives
    per user and split), so a score's rank inside its user says more than its global level."""
    out = {}
    for c in columns:
        g = x[c].groupby(users)
        out[f"{c}_minus_user_mean"] = (x[c] - g.transform("mean").to_numpy()).to_numpy(np.float32)
        out[f"{c}_user_rank"] = g.rank(pct=True).to_numpy(np.float32)
    out["user_rows"] = pd.Series(users).map(pd.Series(users).value_counts()).to_numpy(np.float32)
    return pd.DataFrame(out, index=x.index)


# ---- tencentgr ----------------------------------------------------------------------------------------
def item_stats(
    item: np.ndarray,
    action: np.ndarray,
    ts: np.ndarray,
    n_rows: int,
    half_life_days: float,
    conversion_weight: float,
) -> pd.DataFrame:
    """Per item row: decayed click popularity, clicks, events, days since first and last event (NaN: none)."""
    now = ts.max() if len(ts) else 0
    first = np.full(n_rows, np.iinfo(np.int64).max)
    last = np.full(n_rows, np.iinfo(np.int64).min)
    np.minimum.at(first, item, ts)
    np.maximum.at(last, item, ts)
    seen = np.bincount(item, minlength=n_rows) > 0
    return pd.DataFrame(
        {
            "pop_decay": decayed_popularity(item, action, ts, n_rows, half_life_days, conversion_weight),
            "pop_clicks": np.bincount(item, weights=(action >= 1).astype(np.float64), minlength=n_rows),
            "pop_events": np.bincount(item, minlength=n_rows).astype(np.float64),
            "item_age_days": np.where(seen, (now - first) / DAY, np.nan),
            "item_idle_days": np.where(seen, (now - last) / DAY, np.nan),
        }
    ).astype(np.float32)


def history_similarity(
    emb: np.ndarray, hist: list[np.ndarray], query: np.ndarray, item: np.ndarray, recent: int
) -> dict[str, np.ndarray]:
    """Cosine of each candidate `item` to its query's recent history (last `recent` items): to their mean,
    the best match, and the last item. NaN where the user has no history."""

    def unit(rows: np.ndarray) -> np.ndarray:
        """Unit-length rows of emb, gathered first: never the whole (items, D) table (2.5 GB at TencentGR-1M
        size, memory-mapped), whose normalised copies held 10 GB at once."""
        v = np.asarray(emb[rows])
        return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)

    n_q = len(hist)
    has = np.zeros(n_q, bool)
    pad = np.zeros((n_q, recent), np.int64)
    mask = np.zeros((n_q, recent), bool)
    lasts = np.zeros(n_q, np.int64)
    for q, h in enumerate(hist):
        h = h[-recent:]
        if len(h):
            has[q] = True
            pad[q, : len(h)], mask[q, : len(h)] = h, True
            lasts[q] = h[-1]
    last = unit(lasts) * has[:, None]  # (Q, D)
    hv = unit(pad) * mask[..., None]  # (Q, R, D)
    mean = hv.sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    out = {k: np.full(len(item), np.nan, np.float32) for k in ("sim_mean", "sim_last", "sim_max")}
    for a in range(0, len(item), CHUNK):  # bounds the (rows, R, D) gather
        q, cand = query[a : a + CHUNK], unit(item[a : a + CHUNK])  # (B,), (B, D)
        ok = has[q]
        out["sim_mean"][a : a + CHUNK] = np.where(ok, np.einsum("nd,nd->n", cand, mean[q]), np.nan)
        out["sim_last"][a : a + CHUNK] = np.where(ok, np.einsum("nd,nd->n", cand, last[q]), np.nan)
        sims = np.einsum("nd,nrd->nr", cand, hv[q])  # (B, R)
        out["sim_max"][a : a + CHUNK] = np.where(ok, np.where(mask[q], sims, -np.inf).max(1), np.nan)
    return out


def user_normalised(part: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Each score column relative to its query's best candidate (score - the query's max): a source's
    scale drifts between users (co-visitation sums grow with history length), its lead over the query's
    other candidates does not. NaN stays NaN (the source did not propose the item)."""
    q = part["user_row"].to_numpy()
    out = {}
    for c in columns:
        s = part[c].astype(np.float64)
        out[f"{c}_gap"] = (s - s.groupby(q).transform("max").to_numpy()).to_numpy(np.float32)
    return out


def windowed_popularity(
    item: np.ndarray,
    action: np.ndarray,
    ts: np.ndarray,
    q_time: np.ndarray,
    query: np.ndarray,
    cand: np.ndarray,
    windows_days: tuple[float, ...],
) -> dict[str, np.ndarray]:
    """Per (query, candidate) row, from the given (training) events: the candidate's clicks in each window
    of days before the query's time (its last history event), days since its last click before then, and
    the share of its clicks that fell in the shortest window (trend). Popularity "now" for each query
    rather than at the end of the data: a MovieLens query may sit months before the last event.
    NaN where the query has no time (no history)."""
    click = action >= 1
    big = np.int64(1) << 40  # ts in seconds < 2**40
    key = np.sort(item[click].astype(np.int64) * big + ts[click].astype(np.int64))
    has = np.isfinite(q_time)
    t = np.where(has, q_time, 0).astype(np.int64)[query]
    base = cand.astype(np.int64) * big
    upto = np.searchsorted(key, base + t, side="right")
    start = np.searchsorted(key, base)
    out: dict[str, np.ndarray] = {}
    for w in windows_days:
        lo = np.searchsorted(key, base + t - np.int64(w * DAY), side="right")
        out[f"clicks_{w:g}d"] = np.where(has[query], upto - np.maximum(lo, start), np.nan).astype(np.float32)
    out["clicks_before"] = np.where(has[query], upto - start, np.nan).astype(np.float32)
    last = np.where(upto > start, key[np.maximum(upto - 1, 0)] - base, -1)
    out["last_click_days"] = np.where(has[query] & (upto > start), (t - last) / DAY, np.nan).astype(
        np.float32
    )
    short = out[f"clicks_{min(windows_days):g}d"]
    out["click_trend"] = (short / np.maximum(out["clicks_before"], 1)).astype(np.float32)
    return out


def _recent_matrix(hist: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, n) the last n history items, most recent first, and their mask."""
    pad = np.zeros((len(hist), n), np.int64)
    mask = np.zeros((len(hist), n), bool)
    for q, h in enumerate(hist):
        h = h[::-1][:n]
        pad[q, : len(h)], mask[q, : len(h)] = h, True
    return pad, mask


def history_pair_sums(
    hist: list[np.ndarray],
    query: np.ndarray,
    cand: np.ndarray,
    lookup: Callable[[np.ndarray, np.ndarray], np.ndarray],
    lasts: tuple[int, ...],
    name: str,
) -> dict[str, np.ndarray]:
    """`name`_last<n>: sum of lookup(a, candidate) over the query's last n history items a (e.g. the
    co-visitation weight w(a -> candidate)), for each n of `lasts`: the latest item alone says more about
    the next one than the recency-weighted sum the source ranks by."""
    n_max = max(lasts)
    pad, mask = _recent_matrix(hist, n_max)
    acc = np.zeros(len(query), np.float64)
    out = {}
    for j in range(n_max):
        ok = mask[query, j]
        acc[ok] += lookup(pad[query[ok], j], cand[ok])
        if j + 1 in lasts:
            out[f"{name}_last{j + 1}"] = acc.astype(np.float32)
    return out


def feature_match(
    codes: np.ndarray,
    names: list[str],
    hist: list[np.ndarray],
    query: np.ndarray,
    cand: np.ndarray,
    recent: int,
) -> dict[str, np.ndarray]:
    """Per item feature column (codes: (items, C), 0 = none): the share of the query's last `recent`
    history items with the candidate's value (e.g. the same genre). NaN without history or value."""
    pad, mask = _recent_matrix(hist, recent)
    n = np.maximum(mask.sum(1), 1)[query]
    out = {}
    for c, name in enumerate(names):
        v = codes[cand, c]
        same = (codes[pad[query], c] == v[:, None]) & mask[query]
        share = same.sum(1) / n
        out[f"match_{name}"] = np.where((v != 0) & mask[query].any(1), share, np.nan).astype(np.float32)
    return out


def source_agreement(
    part: pd.DataFrame, sources: list[str], top: tuple[int, ...] = (10, 50), rrf_k: float = RRF_K
) -> dict[str, np.ndarray]:
    """Per candidate, how the `sources` (their `<s>_rank`, -1 = not proposed) agree on it: the best rank
    any of them gives it, how many rank it within each `top`, and the equal-weight reciprocal-rank sum
    sum_s 1 / (rrf_k + rank_s) (fusion.rrf_terms; Cormack et al. 2009). No weight is fitted, so these mean the same on the
    ranker's training queries as on new users (unlike a fusion tuned on those queries)."""
    ranks = part[[f"{s}_rank" for s in sources]].to_numpy(np.float64)  # (N, S)
    has = ranks >= 0
    out = {"best_rank": np.where(has.any(1), np.where(has, ranks, np.inf).min(1), np.nan).astype(np.float32)}
    for t in top:
        out[f"n_top{t}"] = (has & (ranks < t)).sum(1).astype(np.float32)
    # 1 / (rrf_k + rank): the feature the reranker was fitted with, one place ahead of fusion's 1 / (rrf_k + rank + 1)
    out["rrf_equal"] = rrf_terms(ranks, rrf_k - 1.0).sum(1).astype(np.float32)
    return out


def user_standardised(part: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Each score column as a z-score within its query: (score - the query's mean) / its std over the
    candidates the source proposed. The gap to the best (user_normalised) says how far below the top an
    item is; this says how far above the query's bulk, which separates a confident source (one clear
    winner) from a flat one. NaN stays NaN; a query with one proposed candidate gets 0."""
    q = part["user_row"].to_numpy()
    out = {}
    for c in columns:
        s = part[c].astype(np.float64)
        g = s.groupby(q)
        std = g.transform("std").to_numpy()
        z = (s.to_numpy() - g.transform("mean").to_numpy()) / np.where(std > 0, std, 1.0)
        out[f"{c}_z"] = np.where(np.isnan(std) & ~np.isnan(s.to_numpy()), 0.0, z).astype(np.float32)
    return out


def popularity_taste(
    pop_clicks: np.ndarray,
    pop_events: np.ndarray,
    hist: list[np.ndarray],
    query: np.ndarray,
    cand: np.ndarray,
    recent: int,
) -> dict[str, np.ndarray]:
    """The candidate's click rate (clicks / events: on MovieLens the share of its ratings >= 4, how well
    liked it is rather than how often seen) and how its popularity compares with what the user watches:
    log(1 + clicks) of the candidate minus the mean of it over the query's last `recent` history items
    (a user of niche items vs of blockbusters), the same for the click rate. NaN without history."""
    rate = np.where(pop_events > 0, pop_clicks / np.maximum(pop_events, 1), np.nan)
    logpop = np.log1p(pop_clicks)
    pad, mask = _recent_matrix(hist, recent)
    n = mask.sum(1)
    has = n > 0
    user_pop = np.where(has, (logpop[pad] * mask).sum(1) / np.maximum(n, 1), np.nan)
    r = np.where(mask, rate[pad], np.nan)
    valid_r = mask & ~np.isnan(r)
    user_rate = np.where(
        valid_r.any(1), np.where(valid_r, r, 0).sum(1) / np.maximum(valid_r.sum(1), 1), np.nan
    )
    return {
        "click_rate": rate[cand].astype(np.float32),
        "pop_vs_user": (logpop[cand] - user_pop[query]).astype(np.float32),
        "rate_vs_user": (rate[cand] - user_rate[query]).astype(np.float32),
    }


def history_features(
    hist: list[np.ndarray],
    hist_action: list[np.ndarray],
    hist_ts: list[np.ndarray],
    query: np.ndarray,
    cand: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per (query, candidate) row, the candidate in the query's own history (oldest first): how often it was
    clicked or converted there (`seen_count` counts every action), the action of its latest occurrence
    (0 exposure, 1 click, 2 conversion), how many events ago that was (0 = the last event) and how many days
    before the query's last event. NaN (clicks 0) where the item is not in the history: where users come back
    to items (the seen-item policy keeps them) the target is often one, and which one is recency and action."""
    n_q = len(hist)
    length = np.array([len(h) for h in hist], np.int64)
    q = np.repeat(np.arange(n_q), length)
    item = np.concatenate(hist).astype(np.int64) if n_q else np.zeros(0, np.int64)
    act = np.concatenate(hist_action).astype(np.int64) if n_q else np.zeros(0, np.int64)
    ts = np.concatenate(hist_ts).astype(np.int64) if n_q else np.zeros(0, np.int64)
    age = np.repeat(length, length) - 1 - (np.arange(len(q)) - np.repeat(np.cumsum(length) - length, length))
    t_last = np.zeros(n_q, np.int64)
    t_last[length > 0] = ts[np.cumsum(length)[length > 0] - 1]
    n = int(max(item.max(initial=0), cand.max(initial=0))) + 1
    key = q * n + item
    order = np.lexsort((-age, key))  # by key, the latest occurrence (smallest age) last
    key, act, age, ts, q = key[order], act[order], age[order], ts[order], q[order]
    last = np.r_[np.flatnonzero(key[1:] != key[:-1]), len(key) - 1] if len(key) else np.zeros(0, np.int64)
    first = np.r_[0, last[:-1] + 1] if len(key) else np.zeros(0, np.int64)
    clicks = np.add.reduceat((act >= 1).astype(np.float64), first) if len(key) else np.zeros(0)
    ukey = key[last]
    c_key = query.astype(np.int64) * n + cand.astype(np.int64)
    at = np.minimum(np.searchsorted(ukey, c_key), max(len(ukey) - 1, 0))
    found = (ukey[at] == c_key) if len(ukey) else np.zeros(len(c_key), bool)
    at = np.where(found, at, 0)

    def pick(values: np.ndarray, missing: float = np.nan) -> np.ndarray:
        return np.where(found, values[at] if len(values) else 0, missing).astype(np.float32)

    return {
        "hist_clicks": pick(clicks, 0.0),
        "hist_last_action": pick(act[last].astype(np.float64)),
        "hist_last_age": pick(age[last].astype(np.float64)),
        "hist_last_days": pick(((t_last[q[last]] - ts[last]) / DAY).astype(np.float64)),
    }
