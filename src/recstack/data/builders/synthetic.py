"""Synthetic MMCTR data with planted structure, at any scale (3.6M rows x 64 history in seconds).

Latent topics drive everything, so a model that reads a modality measurably gains from it:
- items: a topic, a Zipf popularity and a latent quality. Tags = topic (10% wrong) + noisy extras; titles are
  real MicroLens titles of the topic's tag (or generated words); each provided embedding is a per-modality
  topic centroid + a quality direction + noise, where the topic it shows is wrong for a modality-specific
  share of items (so each modality is informative alone and fusing them helps); levels are noisy deciles.
- users: Dirichlet preferences over 1-3 topics and a sticky click stream (preference x popularity);
  a row's history is the stream before its target, the target is the next stream item or a popularity
  exposure, and the label depends on user-topic affinity, the current session topic, popularity and quality.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from recstack.data.builders.movielens import deciles
from recstack.data.raw.mmctr import MmctrItems, MmctrRaw, MmctrSplit

TAG_WIDTH = 5  # item_tags width in the challenge files
POSITIVE_RATE = 0.25  # MicroLens-1M train
NEXT_SHARE = 0.5  # targets that are the user's next stream item; the rest are popularity exposures
STAY = 0.6  # chance the click stream keeps the previous item's topic (sessions)
ZIPF = 0.9  # popularity ~ rank ** -ZIPF
MISSING = 0.03  # share of items without a text / image embedding
# label logit weights: long-term topic affinity, same topic as the last click, log-popularity, quality
W_AFFINITY, W_SESSION, W_POP, W_QUALITY = 1.5, 1.0, 0.3, 0.5
# per modality: (share of items whose vector shows a random topic, noise / centroid scale, quality weight)
MODALITY = {
    "item_emb_d128": (0.10, 0.8, 0.5),
    "txt_emb_BERT": (0.25, 1.0, 0.3),
    "img_emb_CLIPRN50": (0.35, 1.2, 0.8),
}
FILLER = ["the", "a", "my", "new", "best", "today", "video", "with", "and", "of", "so", "this"]


@dataclass
class SyntheticTruth:
    item_topic: np.ndarray  # (I + 1,) int64 latent topic, -1 for the padding row
    cover_topic: np.ndarray  # (I + 1,) int64 the topic an item's cover shows (as its image embedding does)
    test_label: np.ndarray  # (N_test,) float32, hidden from the raw files
    test_user: np.ndarray  # (N_test,) int64


def _read_pairs(path: Path) -> list[tuple[int, str]]:
    """`video_id, text` lines (header skipped); the text is unquoted and may itself hold commas."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        vid, _, text = line.partition(",")
        if vid.strip().isdigit() and text.strip():
            out.append((int(vid), text.strip()))
    return out


def _topic_titles(n_topics: int, fixtures_dir: Path | None) -> tuple[list[str], list[list[str]]] | None:
    """Topic t -> (name, pool of real titles): the most frequent MicroLens tags, cycled if there are fewer."""
    if fixtures_dir is None:
        return None
    d = fixtures_dir / "microlens_100k" if (fixtures_dir / "microlens_100k").is_dir() else fixtures_dir
    title_file, tag_file = d / "MicroLens-100k_title_en.csv", d / "tags_to_summary.csv"
    if not (title_file.is_file() and tag_file.is_file()):
        return None
    titles = dict(_read_pairs(title_file))
    by_tag: dict[str, list[str]] = {}
    for vid, tag in _read_pairs(tag_file):
        if vid in titles and tag != "Others":  # "Others" is no topic
            by_tag.setdefault(tag, []).append(titles[vid])
    ranked = [t for t, _ in Counter({t: len(v) for t, v in by_tag.items() if len(v) >= 5}).most_common()]
    names = [
        ranked[t % len(ranked)] + (f" {t // len(ranked) + 1}" if t >= len(ranked) else "")
        for t in range(n_topics)
    ]
    return names, [by_tag[ranked[t % len(ranked)]] for t in range(n_topics)]


def _titles(
    shown: np.ndarray, n_topics: int, fixtures_dir: Path | None, rng: np.random.Generator
) -> list[str]:
    """One title per item, from the topic in `shown` (I,)."""
    real = _topic_titles(n_topics, fixtures_dir)
    if real is not None:
        names, pools = real
        pick, tagged = rng.random(len(shown)), rng.random(len(shown)) < 0.5
        return [
            pools[t][int(p * len(pools[t]))] + (f" #{names[t].replace(' ', '')}" if g else "")
            for t, p, g in zip(shown.tolist(), pick.tolist(), tagged.tolist(), strict=True)
        ]
    # no fixtures: 8 made-up words per topic, mixed with filler words
    syll = np.array(list("bdfgklmnprstvz"))[:, None] + np.array(list("aeiou"))[None, :]
    vocab = ["".join(s) for s in rng.choice(syll.ravel(), size=(n_topics * 8, 3))]
    n_words = rng.integers(3, 7, len(shown))
    word = rng.integers(0, 8, (len(shown), 6)) + 8 * shown[:, None]
    filler = rng.integers(0, len(FILLER), (len(shown), 6))
    use_topic = rng.random((len(shown), 6)) < 0.6
    return [
        " ".join(vocab[w] if u else FILLER[f] for w, f, u in zip(ws[:n], fs[:n], us[:n], strict=True))
        for ws, fs, us, n in zip(
            word.tolist(), filler.tolist(), use_topic.tolist(), n_words.tolist(), strict=True
        )
    ]


def _alias_tables(weight: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, ...]:
    """Walker alias tables per group of items, for O(1) weighted draws (searchsorted was the bottleneck)."""
    order = np.argsort(group, kind="stable")  # table position -> item index, grouped
    count = np.bincount(group)
    lo = np.cumsum(count) - count
    prob, alias = np.ones(len(group)), np.arange(len(group))
    for g in np.flatnonzero(count):  # Vose's method, O(items) in all
        s, w = lo[g], weight[order[lo[g] : lo[g] + count[g]]]
        p = (w * len(w) / w.sum()).tolist()
        small, large = [i for i, v in enumerate(p) if v < 1], [i for i, v in enumerate(p) if v >= 1]
        while small and large:
            a, b = small.pop(), large.pop()
            prob[s + a], alias[s + a] = p[a], s + b
            p[b] -= 1 - p[a]
            (small if p[b] < 1 else large).append(b)
    return order, prob, alias, lo, count


def _draw(tables: tuple[np.ndarray, ...], group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Item ids (1-based), one per entry of `group` (any shape), drawn by weight within that group."""
    order, prob, alias, lo, count = tables
    k = lo[group] + np.minimum((rng.random(group.shape) * count[group]).astype(np.int64), count[group] - 1)
    return order[np.where(rng.random(group.shape) < prob[k], k, alias[k])] + 1


def build_mmctr_synthetic(cfg, fixtures_dir: Path | None = None) -> tuple[MmctrRaw, SyntheticTruth]:
    """The MMCTR raw layout (test labels hidden) plus the truth; `cfg` has SyntheticConfig's fields."""
    n_users, n_items, n_topics = cfg.users, cfg.items, cfg.topics
    width, per_user = cfg.hist_len, cfg.samples_per_user
    if per_user < 3 or n_items < n_topics or n_users < 1 or width < 1:
        raise ValueError("synthetic: need samples_per_user >= 3, items >= topics, users >= 1, hist_len >= 1")
    # independent streams, so e.g. titles from fixtures or not leave every other array unchanged
    rng_item, rng_text, rng_user, rng_row = np.random.default_rng(cfg.seed).spawn(4)

    # ---- items (index i = item_id - 1) ----
    topic = np.r_[
        np.arange(n_topics),
        rng_item.choice(n_topics, n_items - n_topics, p=rng_item.dirichlet(np.full(n_topics, 5.0))),
    ]
    topic = rng_item.permutation(topic)  # (I,), every topic has an item
    pop = (rng_item.permutation(n_items) + 1.0) ** -ZIPF  # (I,) Zipf weights
    log_pop = np.log(pop)
    z_pop = (log_pop - log_pop.mean()) / log_pop.std()
    quality = rng_item.standard_normal(n_items)
    views = deciles(z_pop + 0.3 * rng_item.standard_normal(n_items))
    likes = deciles(quality + 0.5 * z_pop + 0.7 * rng_item.standard_normal(n_items))

    def wrong(share: float) -> np.ndarray:  # topic as a noisy source shows it
        return np.where(rng_item.random(n_items) < share, rng_item.integers(0, n_topics, n_items), topic)

    tags = np.zeros((n_items + 1, TAG_WIDTH), np.int64)  # tag id = topic + 1; primary tag in the last column
    n_extra = rng_item.choice(3, n_items, p=[0.4, 0.4, 0.2])
    tags[1:, -1] = wrong(0.10) + 1
    for k in (1, 2):  # left-padded noisy secondary tags
        tags[1:, -1 - k] = np.where(n_extra >= k, rng_item.integers(1, n_topics + 1, n_items), 0)

    emb, mask, shown = {}, {}, {}
    for name, (flip, noise, w_q) in MODALITY.items():
        dim = {"item_emb_d128": 128, "txt_emb_BERT": cfg.txt_dim, "img_emb_CLIPRN50": cfg.img_dim}[name]
        centroid = rng_item.standard_normal((n_topics, dim), dtype=np.float32)
        q_dir = rng_item.standard_normal(dim, dtype=np.float32)
        shown[name] = wrong(flip)
        m = np.zeros((n_items + 1, dim), np.float32)  # (I + 1, D), row 0 padding
        rng_item.standard_normal(dtype=np.float32, out=m[1:])  # in place: no (I, D) temporaries
        m[1:] *= noise
        m[1:] += centroid[shown[name]]
        m[1:] += (w_q * quality).astype(np.float32)[:, None] * q_dir
        m /= np.float32(np.sqrt(dim * (1 + noise**2)))  # entries ~ N(0, 1 / D), like a normalised encoder
        has = np.r_[False, rng_item.random(n_items) >= (MISSING if name != "item_emb_d128" else 0.0)]
        m[~has] = 0.0
        emb[name], mask[name] = m, has
    title = np.array([""] + _titles(shown["txt_emb_BERT"], n_topics, fixtures_dir, rng_text), dtype=object)
    items = MmctrItems(
        tags=tags,
        title=title,
        likes_level=np.r_[-1, likes],  # -1: unknown (padding), as the reader gives it
        views_level=np.r_[-1, views],
        emb=emb,
        emb_mask=mask,
    )

    # ---- users: preferences over 1-3 topics, then a sticky click stream (U, L) ----
    pick = rng_user.random((n_users, n_topics))
    k = rng_user.integers(1, 4, n_users)
    chosen = pick <= np.sort(pick, 1)[np.arange(n_users), np.minimum(k, n_topics) - 1][:, None]
    g = rng_user.gamma(1.0, size=(n_users, n_topics)) * chosen
    pref = 0.9 * g / g.sum(1, keepdims=True) + 0.1 / n_topics  # (U, T), rows sum to 1
    cum_pref = np.cumsum(pref, 1)
    length = width + per_user  # the last row's target is at most the stream's last item
    s_topic = np.empty((n_users, length), np.int64)
    for t in range(length):  # per stream position, vectorised over users
        fresh = np.minimum((cum_pref < rng_user.random(n_users)[:, None]).sum(1), n_topics - 1)
        keep = (rng_user.random(n_users) < STAY) if t else np.zeros(n_users, bool)
        s_topic[:, t] = np.where(keep, s_topic[:, t - 1], fresh)
    stream = _draw(_alias_tables(pop, topic), s_topic, rng_user)  # (U, L) item ids, by popularity in topic

    # ---- rows: user u's row j targets stream position p = h0 + j (history h0 + j, capped at width) ----
    h0 = np.minimum(1 + (width * rng_row.random(n_users) ** 2).astype(np.int64), width)
    p = h0[:, None] + np.arange(per_user)[None, :]  # (U, S)
    users = np.arange(n_users)[:, None]
    exposure = _draw(_alias_tables(pop, np.zeros(n_items, np.int64)), np.zeros(p.shape, np.int64), rng_row)
    target = np.where(rng_row.random(p.shape) < NEXT_SHARE, stream[users, p], exposure)  # (U, S)
    t_topic = topic[target - 1]
    logit = (
        W_AFFINITY * np.log1p(n_topics * pref[users, t_topic])
        + W_SESSION * (t_topic == s_topic[users, p - 1])
        + W_POP * z_pop[target - 1]
        + W_QUALITY * quality[target - 1]
    )
    c = 0.0  # Newton steps for the intercept that gives POSITIVE_RATE on average
    for _ in range(50):
        prob = 1 / (1 + np.exp(-(logit + c)))
        gap = prob.mean() - POSITIVE_RATE
        if abs(gap) < 1e-6:
            break
        c -= np.clip(gap / max((prob * (1 - prob)).mean(), 1e-6), -5, 5)
    label = (rng_row.random(p.shape) < 1 / (1 + np.exp(-(logit + c)))).astype(np.float32)

    # history windows: left-pad the stream with `width` zeros, then row (u, p) = padded[u, p : p + width]
    padded = np.concatenate([np.zeros((n_users, width), np.int64), stream], 1)
    windows = sliding_window_view(padded, width, axis=1)  # (U, L + 1, W) view, no copy

    def make(js: np.ndarray) -> MmctrSplit:
        u = np.repeat(np.arange(n_users), len(js))  # user-major, time order within a user
        pj, tj = p[:, js].ravel(), target[:, js].ravel()
        return MmctrSplit(
            user_id=u + 1,
            item_seq=windows[u, pj],  # (n, W) int64 copy
            likes_level=items.likes_level[tj],
            views_level=items.views_level[tj],
            item_id=tj,
            label=label[:, js].ravel(),
        )

    train, valid = make(np.arange(per_user - 2)), make(np.array([per_user - 2]))
    test = make(np.array([per_user - 1]))
    truth = SyntheticTruth(
        item_topic=np.r_[-1, topic],
        cover_topic=np.r_[-1, shown["img_emb_CLIPRN50"]],
        test_label=test.label,
        test_user=test.user_id,
    )
    test.ids, test.label = np.arange(len(test), dtype=np.int64), None
    # the covers write_covers will give (the caller writes them when cfg.images)
    covers = np.arange(1, n_items + 1) if getattr(cfg, "images", True) else np.zeros(0, np.int64)
    return MmctrRaw(train=train, valid=valid, test=test, items=items, image_ids=covers), truth


def write_covers(item_topic: np.ndarray, images_dir: Path, size: int = 48, seed: int = 7) -> None:
    """One JPEG `<item_id>.jpg` per item 1..I: topic colour + striped pattern (angle, frequency), with noise.

    `item_topic` (I + 1,), row 0 padding (pass SyntheticTruth.cover_topic to match the image embeddings).
    Each file is written under a temporary name and renamed, so none is ever half-written.
    """
    rng = np.random.default_rng(seed)
    n_topics = int(item_topic[1:].max()) + 1
    colour = rng.uniform(30, 225, (n_topics, 3)).astype(np.float32)  # (T, 3)
    angle, freq = rng.uniform(0, np.pi, n_topics), rng.uniform(2 * np.pi, 8 * np.pi, n_topics)
    kx, ky = (freq * np.cos(angle)).astype(np.float32), (freq * np.sin(angle)).astype(np.float32)  # (T,)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (S, S)
    images_dir.mkdir(parents=True, exist_ok=True)
    folder = str(images_dir)
    ids = np.arange(1, len(item_topic))
    for chunk in np.array_split(ids, max(1, len(ids) // 2048)):  # float32 throughout: ~60 MB a chunk
        t = item_topic[chunk]
        phase = rng.uniform(0, 2 * np.pi, (len(chunk), 1, 1)).astype(np.float32)
        wave = np.sin(kx[t][:, None, None] * xx + ky[t][:, None, None] * yy + phase)  # (B, S, S) stripes
        img = colour[t][:, None, None, :] * (0.65 + 0.35 * wave)[..., None]  # (B, S, S, 3)
        img += 60 * (rng.random(img.shape, dtype=np.float32) - 0.5)  # pixel noise, sd 17 (uniform: fast)
        img = np.clip(img, 0, 255).astype(np.uint8)
        for i, pixels in zip(chunk.tolist(), img, strict=True):
            tmp = os.path.join(folder, f".{i}.jpg.tmp")
            Image.fromarray(pixels).save(tmp, format="JPEG", quality=80)
            os.replace(tmp, os.path.join(folder, f"{i}.jpg"))
