"""Synthetic TencentGR data with planted structure, at any size (TencentGR-1M scale in about a minute).

Latent topics drive everything, as in the mmctr builder, so a model that reads a feature gains from it:
- items: a topic, a Zipf popularity and a latent quality. The 13 sparse features: some show the topic
  (through a per-feature topic -> value table, with a feature-specific share of noise), one shows
  popularity and one quality (noisy deciles), 111 is id-like, the rest are noise, some partly missing.
  Each provided embedding (81: 32-d, 82: 1024-d by default) is a topic centroid + noise, showing a random
  topic for a modality-specific share of items; a share of items has none.
- users: preferences over 1-3 topics; profile features (103, 104, 105, 109 sparse; 106 array) weakly tied
  to the main topic and to activity.
- sequences (<= 100 item events per user, mean `events_per_user`): sessions over a ~90-day window (short
  gaps inside, long gaps between); within a session the topic sticks. Each event exposes an item of the
  current topic or a popular one; it is clicked with a probability that rises with the user's affinity to
  the item's topic, its popularity and its quality, and a share of clicks (the better items) convert.
- candidate pool: popular + random training items and a share of pool-only (cold) items.
- predict users: a separate set drawn by the same process; the last click (or conversion) of each one's
  sequence is its hidden target (the truth), the events before it go to `predict_events` (as MovieLens).

Everything is vectorised over users in chunks, so memory stays at the output arrays plus one chunk.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recstack.artifacts import write_table
from recstack.config import SyntheticTGRConfig
from recstack.data.builders.movielens import deciles
from recstack.data.builders.synthetic import _alias_tables, _draw
from recstack.data.raw.progress import peak_rss_gib
from recstack.data.raw.tencentgr import TgrEvents, TgrRaw
from recstack.paths import RawTencentGR
from recstack.tasks import mm_widths

log = logging.getLogger(__name__)

MAX_EVENTS = 100  # TencentGR keeps the last 100 events of a user
MIN_EVENTS = 2
LENGTH_SHAPE = 2.0  # event counts ~ Gamma(2) before the cap: most users at the cap, as in TencentGR-1M
ZIPF = 0.9  # item popularity ~ rank ** -ZIPF
SESSION_EVENTS = 12  # mean events per session
STAY = 0.75  # within a session, chance the next event keeps the current topic
PREF_TOPIC = 0.85  # a new topic run follows the user's preferences, else a random topic
TOPIC_EXPOSURE = 0.6  # exposures from the current topic (by popularity in it); the rest popular overall
W_AFFINITY, W_POP, W_QUALITY = 2.0, 0.3, 0.5  # click logit weights
W_CONVERSION = 1.0  # conversion logit weight of quality (among clicks)
IN_SESSION_GAP = 45.0  # mean seconds between events of a session
T_END = 1_748_736_000  # 2025-06-01 UTC: end of the time window
CHUNK_USERS = 1 << 16
# item sparse features: (kind, cardinality (0: one value per topic), noise share, missing share)
ITEM_FEATURES = {
    "100": ("topic", 8, 0.05, 0.0),  # coarse category: several topics share a value
    "101": ("topic", 0, 0.10, 0.0),  # the topic itself
    "102": ("subtopic", 4, 0.10, 0.0),  # a sub-category of the topic
    "111": ("id", 0, 0.0, 0.0),  # id-like: about one value per two items
    "112": ("pop", 10, 0.0, 0.0),  # popularity decile (noisy)
    "114": ("topic", 0, 0.30, 0.05),
    "115": ("noise", 5, 0.0, 0.0),
    "116": ("noise", 20, 0.0, 0.0),
    "117": ("topic", 0, 0.60, 0.0),  # weak
    "118": ("noise", 100, 0.0, 0.10),
    "119": ("noise", 10, 0.0, 0.40),
    "120": ("topic", 16, 0.20, 0.20),
    "121": ("noise", 3, 0.0, 0.0),
    "122": ("quality", 10, 0.0, 0.0),  # quality decile (noisy)
}
# provided embeddings: feature -> (share of items whose vector shows a random topic, noise / centroid scale)
MODALITY = {"81": (0.15, 1.0), "82": (0.10, 1.5)}
DEFAULT_MODALITY = (0.20, 1.5)


def _lengths(n: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) item events per user, in [MIN_EVENTS, MAX_EVENTS], averaging `mean` (Gamma, then capped)."""
    if mean >= MAX_EVENTS:
        return np.full(n, MAX_EVENTS, np.int64)
    sample = np.random.default_rng(0).gamma(LENGTH_SHAPE, 1 / LENGTH_SHAPE, 20_000)  # fixed: calibration

    def capped_mean(mu: float) -> float:
        return float(np.clip(np.ceil(mu * sample), MIN_EVENTS, MAX_EVENTS).mean())

    lo, hi = 0.0, 100.0 * MAX_EVENTS
    for _ in range(60):  # bisection: the capped mean grows with mu
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if capped_mean(mid) < mean else (lo, mid)
    g = rng.gamma(LENGTH_SHAPE, hi / LENGTH_SHAPE, n)
    return np.clip(np.ceil(g), MIN_EVENTS, MAX_EVENTS).astype(np.int64)


def _intercept(logit: np.ndarray, rate: float) -> float:
    """c such that mean(sigmoid(logit + c)) == rate (Newton steps)."""
    c = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-(logit + c)))
        gap = p.mean() - rate
        if abs(gap) < 1e-7:
            break
        c -= float(np.clip(gap / max((p * (1 - p)).mean(), 1e-6), -5, 5))
    return c


def _item_features(
    topic: np.ndarray, z_pop: np.ndarray, quality: np.ndarray, n_topics: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """feature id -> (N,) int64 values (1.., 0 = missing) for every item of the universe."""
    n = len(topic)
    pop_dec, qual_dec = (
        deciles(z_pop + 0.3 * rng.standard_normal(n)),
        deciles(quality + 0.5 * rng.standard_normal(n)),
    )
    out = {}
    for feat, (kind, card, noise, missing) in ITEM_FEATURES.items():
        if kind == "topic":
            table = rng.permutation(n_topics) % card + 1 if card else rng.permutation(n_topics) + 1
            values, top = table[topic], card or n_topics
        elif kind == "subtopic":
            values, top = topic * card + rng.integers(0, card, n) + 1, n_topics * card
        elif kind == "id":
            top = max(2, n // 2)
            values = rng.integers(1, top + 1, n)
        elif kind == "pop":
            values, top = pop_dec + 1, 10
        elif kind == "quality":
            values, top = qual_dec + 1, 10
        else:
            values, top = rng.integers(1, card + 1, n), card
        if noise:
            values = np.where(rng.random(n) < noise, rng.integers(1, top + 1, n), values)
        if missing:
            values = np.where(rng.random(n) < missing, 0, values)
        out[feat] = values.astype(np.int64)
    return out


def _embeddings(
    cfg: SyntheticTGRConfig, topic: np.ndarray, creative: np.ndarray, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """feat -> (creative ids (n,), (n, dim) float32) for a `mm_coverage` share of the items."""
    n_items, n_topics = len(topic), int(topic.max()) + 1
    dims = mm_widths(cfg.mm_dims)
    out = {}
    for feat in cfg.mm_feats:
        flip, noise = MODALITY.get(feat, DEFAULT_MODALITY)
        dim = dims[feat]
        centroid = rng.standard_normal((n_topics, dim), dtype=np.float32)
        shown = np.where(rng.random(n_items) < flip, rng.integers(0, n_topics, n_items), topic)
        rows = np.flatnonzero(rng.random(n_items) < cfg.mm_coverage)
        mat = np.empty((len(rows), dim), np.float32)
        scale = np.float32(1 / np.sqrt(dim * (1 + noise**2)))  # entries ~ N(0, 1 / dim)
        for s in range(0, len(rows), CHUNK_USERS):  # in place, block by block: no (n, dim) temporaries
            block = mat[s : s + CHUNK_USERS]
            rng.standard_normal(dtype=np.float32, out=block)
            block *= np.float32(noise)
            block += centroid[shown[rows[s : s + CHUNK_USERS]]]
            block *= scale
        out[feat] = (creative[rows], mat)
    return out


def _segment_cumsum(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sum of `x` restarting at each segment (segments contiguous, given by starts/lengths)."""
    cs = np.cumsum(x)
    return cs - np.repeat(cs[starts] - x[starts], lengths)


def click_logit(affinity: np.ndarray, z_pop: np.ndarray, quality: np.ndarray, n_topics: int) -> np.ndarray:
    """An exposure's click logit before the intercept: the user's affinity to the item's topic (0..1), its
    standardised log popularity and its quality (bench/oracle_tgr.py scores with the same law)."""
    return W_AFFINITY * np.log1p(n_topics * affinity) + W_POP * z_pop + W_QUALITY * quality


class _Chunk:
    """Events of users [a, b): every array is per event, users in order, time order within a user."""

    def __init__(self, a: int, lengths: np.ndarray, ctx: dict, rng: np.random.Generator):
        n = len(lengths)
        starts = np.cumsum(lengths) - lengths
        e = int(lengths.sum())
        local = np.repeat(np.arange(n), lengths)
        pos = np.arange(e) - starts[local]
        ptop, pw, cumw = ctx["pref_topic"][a : a + n], ctx["pref_w"][a : a + n], ctx["pref_cum"][a : a + n]
        n_topics = ctx["n_topics"]

        # sessions and topic runs
        first = pos == 0
        session = first | (rng.random(e) < 1 / SESSION_EVENTS)
        new_run = session | (rng.random(e) < 1 - STAY)
        run_id = np.cumsum(new_run) - 1
        run_user = local[new_run]
        run_topic = _pick_topics(ptop[run_user], cumw[run_user], n_topics, rng)
        ev_topic = run_topic[run_id]

        # exposures: the current topic (by popularity in it) or popular overall
        in_topic = _draw(ctx["topic_tables"], ev_topic, rng)
        overall = _draw(ctx["global_table"], np.zeros(e, np.int64), rng)
        item = np.where(rng.random(e) < TOPIC_EXPOSURE, in_topic, overall)  # 1-based training item ids
        it_topic = ctx["topic"][item - 1]
        affinity = (pw[local] * (ptop[local] == it_topic[:, None])).sum(1)
        logit = click_logit(affinity, ctx["z_pop"][item - 1], ctx["quality"][item - 1], n_topics)
        conv_logit = W_CONVERSION * ctx["quality"][item - 1]
        if "click_c" not in ctx:  # calibrated once, on the first chunk
            ctx["click_c"] = _intercept(
                logit[rng.choice(e, min(e, 200_000), replace=False)], ctx["click_rate"]
            )
        click = rng.random(e) < 1 / (1 + np.exp(-(logit + ctx["click_c"])))
        if "conv_c" not in ctx:  # conversions: a share of the clicks
            clicked = conv_logit[click]
            sub = rng.choice(len(clicked), min(len(clicked), 200_000), replace=False)
            ctx["conv_c"] = _intercept(clicked[sub], ctx["conversion_rate"]) if len(clicked) else 0.0
        conv = click & (rng.random(e) < 1 / (1 + np.exp(-(conv_logit + ctx["conv_c"]))))

        # time: long gaps between sessions scaled to each user's span of the window, short gaps inside
        window = ctx["window"]
        between = np.where(session & ~first, rng.exponential(1.0, e), 0.0)
        total_between = np.bincount(local, between, minlength=n)
        span = window * rng.uniform(0.3, 0.95, n)
        gap = between * (span / np.maximum(total_between, 1e-9))[local]
        gap += np.where(session, 0.0, rng.exponential(IN_SESSION_GAP, e))
        rel = _segment_cumsum(gap, starts, lengths) + pos  # + 1 s per event: strictly increasing
        room = np.maximum(window - rel[starts + lengths - 1] - 1, 0)
        t0 = T_END - window + rng.random(n) * room
        ts = (t0[local] + rel).astype(np.int64)

        self.user = local + a + 1  # re-ids from 1
        self.item = item
        self.action = click.astype(np.int64) + conv
        self.ts = ts
        last = starts + lengths - 1
        self.last_topic, self.last_ts = ev_topic[last], ts[last]
        self.topic = ev_topic  # the topic run each event belongs to (for `latent`: the oracle bench)


def _pick_topics(ptop: np.ndarray, cumw: np.ndarray, n_topics: int, rng: np.random.Generator) -> np.ndarray:
    """One topic per row: a preferred topic (by weight) with PREF_TOPIC, else a random one."""
    n = len(ptop)
    j = np.minimum((cumw < rng.random(n)[:, None]).sum(1), ptop.shape[1] - 1)
    return np.where(rng.random(n) < PREF_TOPIC, ptop[np.arange(n), j], rng.integers(0, n_topics, n))


def build_tgr_synthetic(cfg: SyntheticTGRConfig, latent: dict | None = None) -> tuple[TgrRaw, pd.DataFrame]:
    """TgrRaw (targets hidden) + truth (user_id raw string, creative_id, action per predict user, in answer
    order); `cfg` has SyntheticTGRConfig's fields. A `latent` dict, when given, receives the planted structure
    (for tests and analysis): item_topic (I + 1,) by re-id (-1 for row 0), cand_topic (C,), user_topics
    (U + 1, 3) preferred topics (-1: none) and user_weights (U + 1, 3); and what the click model of the
    training events used: event_topic (one per training event), item_pop, item_z_pop, item_quality,
    item_creative (index = re-id - 1, pool-only items after the I training items) and click_c."""
    n_train, n_pred, n_items, n_topics = cfg.users, cfg.predict_users, cfg.items, cfg.topics
    n_cold = int(round(cfg.candidates * cfg.cold_share))
    n_warm = cfg.candidates - n_cold
    if n_train < 1 or n_items < n_topics or n_topics < 1 or not 1 <= n_warm <= n_items:
        raise ValueError(
            "synthetic tencentgr: need users >= 1, items >= topics >= 1, 1 <= warm pool <= items"
        )
    dims = mm_widths(cfg.mm_dims)
    unknown = [f for f in cfg.mm_feats if f not in dims]
    if unknown:
        raise ValueError(f"synthetic tencentgr: mm feature(s) {unknown} have no dim (known: {sorted(dims)})")
    ss = np.random.SeedSequence(cfg.seed)
    ss_item, ss_mm, ss_user, ss_pool, ss_chunks = ss.spawn(5)
    rng_item, rng_mm = np.random.default_rng(ss_item), np.random.default_rng(ss_mm)
    rng_user, rng_pool = np.random.default_rng(ss_user), np.random.default_rng(ss_pool)

    # ---- items: the indexer's 1..I, then n_cold pool-only items (index i = re-id - 1) ----
    n_all_items = n_items + n_cold
    topic = np.r_[
        np.arange(n_topics),
        rng_item.choice(n_topics, n_all_items - n_topics, p=rng_item.dirichlet(np.full(n_topics, 5.0))),
    ]
    topic = rng_item.permutation(topic)
    pop = (rng_item.permutation(n_all_items) + 1.0) ** -ZIPF
    log_pop = np.log(pop)
    z_pop = (log_pop - log_pop.mean()) / log_pop.std()
    quality = rng_item.standard_normal(n_all_items)
    creative = 20_000_000 + np.cumsum(rng_item.integers(1, 16, n_all_items))
    creative = rng_item.permutation(creative).astype(np.int64)  # distinct raw creative ids
    feats = _item_features(topic, z_pop, quality, n_topics, rng_item)
    mm = _embeddings(cfg, topic, creative, rng_mm)

    # ---- candidate pool: half the warm part the most popular training items, half random ones ----
    by_pop = np.argsort(-pop[:n_items], kind="stable")
    n_top = n_warm // 2
    rest = rng_pool.choice(by_pop[n_top:], n_warm - n_top, replace=False)
    pool = rng_pool.permutation(np.r_[by_pop[:n_top], rest, np.arange(n_items, n_all_items)])  # item indices

    # ---- users: training and predict users share re-ids 1..U+P (predict ones scattered) ----
    n_users = n_train + n_pred
    is_pred = np.zeros(n_users, bool)
    is_pred[rng_user.choice(n_users, n_pred, replace=False)] = True
    k = rng_user.integers(1, 4, n_users)
    pref_topic = rng_user.integers(0, n_topics, (n_users, 3))
    pref_w = rng_user.gamma(1.0, size=(n_users, 3)) * (np.arange(3)[None, :] < k[:, None])
    pref_w /= pref_w.sum(1, keepdims=True)
    main = pref_topic[np.arange(n_users), pref_w.argmax(1)]
    lengths = _lengths(n_users, cfg.events_per_user, rng_user)
    user_sparse, user_array = _user_features(main, lengths, n_topics, rng_user)
    raw_ids = rng_user.permutation(n_users) + 10_000_000
    user_raw = np.array([""] + [f"user_{u}" for u in raw_ids.tolist()], dtype=object)

    # ---- events, chunk by chunk, into the output arrays ----
    ctx = {
        "pref_topic": pref_topic,
        "pref_w": pref_w,
        "pref_cum": np.cumsum(pref_w, 1),
        "n_topics": n_topics,
        "topic": topic,
        "z_pop": z_pop,
        "quality": quality,
        "topic_tables": _alias_tables(pop[:n_items], topic[:n_items]),
        "global_table": _alias_tables(pop[:n_items], np.zeros(n_items, np.int64)),
        "click_rate": cfg.click_rate,
        "conversion_rate": cfg.conversion_rate,
        "window": cfg.days * 86400.0,
    }
    n_train_ev = int(lengths[~is_pred].sum())
    train = TgrEvents(*(np.empty(n_train_ev, np.int64) for _ in range(4)))
    pred = TgrEvents(*(np.empty(int(lengths[is_pred].sum()), np.int64) for _ in range(4)))
    fill = [0, 0]
    train_topic = np.empty(n_train_ev, np.int32) if latent is not None else None
    bounds = list(range(0, n_users, CHUNK_USERS))
    for a, child in zip(bounds, ss_chunks.spawn(len(bounds)), strict=True):
        b = min(a + CHUNK_USERS, n_users)
        ch = _Chunk(a, lengths[a:b], ctx, np.random.default_rng(child))
        to_pred = is_pred[ch.user - 1]
        if train_topic is not None:
            train_topic[fill[0] : fill[0] + int((~to_pred).sum())] = ch.topic[~to_pred]
        for slot, (dest, sel) in enumerate(((train, ~to_pred), (pred, to_pred))):
            m = int(sel.sum())
            for name in ("user", "item", "action", "ts"):
                getattr(dest, name)[fill[slot] : fill[slot] + m] = getattr(ch, name)[sel]
            fill[slot] += m
        del ch

    # ---- predict users: the last click (or conversion) of a candidate in their own sequence is the hidden
    # target, the events before it their history (as the MovieLens builder does, whose pool is every item).
    # The same law as the local validation's targets (prepare: each valid user's last click of a candidate),
    # so that valid estimates the test: a target drawn apart (from the pool, in the next topic, never a seen
    # item) scored the valid users 0.53 and these 0.19 (bench/README.md "Tencentgr local validation"). A
    # predict user without such a click after at least one event has no target: left out of the predict set
    # (its events too).
    r = np.random.default_rng(ss_pool.spawn(1)[0])
    p_all = np.flatnonzero(is_pred)  # index = re-id - 1
    if len(pred) and (np.diff(pred.user) < 0).any():
        raise AssertionError("synthetic tencentgr: predict events are not grouped by user")
    p_start = np.searchsorted(pred.user, p_all + 1)
    in_pool = np.zeros(n_all_items, bool)
    in_pool[pool] = True
    clicks = np.flatnonzero((pred.action >= 1) & in_pool[pred.item - 1])
    owner = np.searchsorted(p_start, clicks, side="right") - 1  # predict user of each click
    last = np.full(len(p_all), -1)
    np.maximum.at(last, owner, clicks)
    has = last > p_start  # a click of a candidate, after at least one event
    p_users, t_row, p_start = p_all[has], last[has], p_start[has]
    target, t_action = pred.item[t_row] - 1, pred.action[t_row]  # item indices
    before = np.zeros(len(pred) + 1, np.int64)  # +1 at each history's start, -1 at its target: cumsum > 0
    np.add.at(before, p_start, 1)
    np.add.at(before, t_row, -1)
    hist = np.cumsum(before[:-1]) > 0
    pred = TgrEvents(*(getattr(pred, name)[hist] for name in ("user", "item", "action", "ts")))
    n_pred = len(p_users)
    order = r.permutation(n_pred)  # answer order: not the id order

    raw = TgrRaw(
        user_raw=user_raw,
        creative_id=np.r_[0, creative[:n_items]].astype(np.int64),
        item_sparse={f: np.r_[0, v[:n_items]] for f, v in feats.items()},
        user_sparse=user_sparse,
        user_array=user_array,
        events=train,
        profile_ts=np.zeros(n_users + 1, np.int64),  # set below
        predict_users=(p_users + 1)[order].astype(np.int64),
        predict_events=pred,
        cand_creative_id=creative[pool],
        cand_features={f: v[pool] for f, v in feats.items()},
        mm=mm,
    )
    # the profile record carries the user's first event time (as in the fixture)
    first = np.full(n_users + 1, T_END, np.int64)
    for ev in (train, pred):
        starts = np.flatnonzero(np.r_[True, np.diff(ev.user) != 0]) if len(ev) else np.zeros(0, np.int64)
        first[ev.user[starts]] = ev.ts[starts]
    first[0] = 0
    raw.profile_ts = first
    truth = pd.DataFrame(
        {
            "user_id": user_raw[p_users[order] + 1].astype(str),
            "creative_id": creative[target[order]].astype(np.int64),
            "action": t_action[order],
        }
    )
    if latent is not None:
        chosen = pref_w > 0
        latent["item_topic"] = np.r_[-1, topic[:n_items]]
        latent["cand_topic"] = topic[pool]
        latent["user_topics"] = np.r_[np.full((1, 3), -1), np.where(chosen, pref_topic, -1)]
        latent["user_weights"] = np.r_[np.zeros((1, 3)), pref_w]
        # what draws a training event (bench/oracle_tgr.py): its topic run, and every item's popularity,
        # standardised log popularity, quality and raw creative id (index = re-id - 1; pool-only items last)
        latent["event_topic"] = train_topic
        latent.update(item_pop=pop, item_z_pop=z_pop, item_quality=quality, item_creative=creative)
        latent["click_c"] = float(ctx["click_c"])
    return raw, truth


def _user_features(
    main: np.ndarray, lengths: np.ndarray, n_topics: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, list[list[int]]]]:
    """Sparse 103, 104, 105, 109 ((U + 1,) int64, 0 = missing) and array 106 (U + 1 lists), weakly tied to the
    main topic (103, 104, 106) and to activity (109)."""
    n = len(main)

    def tied(card: int, share: float, values: np.ndarray | None = None) -> np.ndarray:
        if values is None:
            values = (rng.permutation(n_topics) % card + 1)[main]
        return np.where(rng.random(n) < share, values, rng.integers(1, card + 1, n))

    activity = np.minimum(deciles(lengths + rng.random(n)) // 2 + 1, 5)
    sparse = {
        "103": tied(8, 0.3),  # age bucket
        "104": tied(2, 0.2),  # gender
        "105": np.where(rng.random(n) < 0.1, 0, rng.integers(1, 8, n)),  # noise, partly missing
        "109": tied(5, 0.7, activity),  # activity level
    }
    sparse = {f: np.r_[0, v].astype(np.int64) for f, v in sparse.items()}
    count = np.where(rng.random(n) < 0.05, 0, rng.integers(1, 5, n))  # 0-4 interests per user
    flat = rng.integers(1, 65, int(count.sum()))
    heads = np.cumsum(count) - count
    has = count > 0
    interest = (rng.permutation(n_topics) % 64 + 1)[main]
    flat[heads[has]] = np.where(rng.random(int(has.sum())) < 0.5, interest[has], flat[heads[has]])
    values, ends = flat.tolist(), (heads + count).tolist()
    arrays = [[]] + [values[s:e] for s, e in zip(heads.tolist(), ends, strict=True)]
    return sparse, {"106": arrays}


def build_and_write(cfg: SyntheticTGRConfig, root: str | Path) -> dict[str, float]:
    """Build the synthetic set and write it in the platform layout under `root`, with the truth in
    `RawTencentGR(root).truth`. Returns figures (sizes, seconds and peak RSS GiB of build and write)."""
    from recstack.data.raw.tencentgr_platform import write_platform

    t0 = time.perf_counter()
    raw, truth = build_tgr_synthetic(cfg)
    t1 = time.perf_counter()
    build_gib = peak_rss_gib()
    write_platform(raw, root, emb_dims=dict(cfg.mm_dims))
    write_table(
        RawTencentGR(Path(root)).truth,
        pa.table(
            {
                "user_id": pa.array(truth.user_id.tolist(), pa.string()),
                "creative_id": pa.array(truth.creative_id.to_numpy(np.int64)),
                "action": pa.array(truth.action.to_numpy(np.int64)),
            }
        ),
    )
    t2 = time.perf_counter()
    figures = {
        "users": raw.n_users,
        "items": raw.n_items,
        "events": len(raw.events),
        "predict_users": len(raw.predict_users),
        "predict_events": len(raw.predict_events),
        "candidates": len(raw.cand_creative_id),
        "click_rate": float((raw.events.action >= 1).mean()),
        "conversion_rate": float((raw.events.action == 2).mean()),
        "build_s": t1 - t0,
        "build_gib": build_gib,
        "write_s": t2 - t1,
        "peak_gib": peak_rss_gib(),
    }
    log.info("synthetic tencentgr written to %s: %s", root, figures)
    return figures
