"""The best valid score any model can reach on the synthetic TencentGR data (issue 12's ">= 2x bce" bar).

The synthetic builder draws each training event from a known process (data/builders/synthetic_tgr.py): the
event's topic run T, an exposure from T by popularity (TOPIC_EXPOSURE) or from all items by popularity, and a
click with probability sigmoid(W_AFFINITY log1p(n_topics affinity(u, topic)) + W_POP z_pop + W_QUALITY
quality + c). So the item of a held-out click, given T and the user's preferences, has the exact law

    P(i | click, T, u)  ∝  (0.6 pop_i [topic_i = T] / pop(T) + 0.4 pop_i / pop(all)) * sigmoid(logit_u(i) + c)

over the training items. A model sees the history, not T or the preferences; the oracle here is told both,
ranks the candidate pool by this law (the best ranking for a gain that falls with rank) and scores it in
expectation: sum over its top 10 of P(i) (0.31 + 0.69 / log2(rank + 1)), the valid score's formula
(metrics.tgr_metrics). Knowing more cannot lower the best expected score, so the figure bounds every model's
expected valid score on the same users; it is exact for the oracle, not a sample.

    PYTHONPATH=src python bench/oracle_tgr.py --prepared <output_root>/tencentgr/synthetic_tgr/prepare \
        --config configs/tencentgr_synthetic.yaml [--set key=value ...]

`--prepared` is the prepare folder of a run on the same config: its valid targets and pool are scored (the
script checks that the in-memory build has the same events). Seen items stay rankable, as the synthetic
config's seen-item policy decides (`exclude_seen: auto` -> kept).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from recstack.config import load_config
from recstack.data.builders import synthetic_tgr as syn

HR_W, NDCG_W, K = 0.31, 0.69, 10  # metrics.tgr_metrics: score = 0.31 HR@10 + 0.69 NDCG@10


def click_law(latent: dict, n_items: int, n_topics: int, topics: np.ndarray, users: np.ndarray) -> np.ndarray:
    """(Q, n_items) P(item | the event is a click, its topic run, the user) for Q (topic, user) pairs."""
    pop = latent["item_pop"][:n_items]
    item_topic = latent["item_topic"][1:]  # (n_items,) by index = re-id - 1
    by_topic = np.bincount(item_topic, pop, minlength=n_topics)  # (n_topics,)
    ut, uw = latent["user_topics"][users], latent["user_weights"][users]  # (Q, 3) each; -1 = none
    aff = (uw[:, :, None] * (ut[:, :, None] == item_topic[None, None, :])).sum(1)  # (Q, n_items)
    z_pop, quality = latent["item_z_pop"][None, :n_items], latent["item_quality"][None, :n_items]
    logit = syn.click_logit(aff, z_pop, quality, n_topics) + latent["click_c"]  # the builder's own law
    exposed = (
        syn.TOPIC_EXPOSURE * pop[None, :] * (item_topic[None, :] == topics[:, None]) / by_topic[topics, None]
    )
    exposed = exposed + (1 - syn.TOPIC_EXPOSURE) * pop[None, :] / pop.sum()  # (Q, n_items)
    p = exposed / (1 + np.exp(-logit))
    return p / p.sum(1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/tencentgr_synthetic.yaml")
    ap.add_argument("--prepared", required=True, help="the prepare folder of a run on the same config")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, as on the command line")
    ap.add_argument("--chunk", type=int, default=100, help="valid users per block of the (users x items) law")
    a = ap.parse_args()
    cfg = load_config(a.config, a.set)
    sc = OmegaConf.to_object(cfg.data.synthetic_tgr)  # the dataclass (as the build stage passes it)
    t0 = time.time()
    latent: dict = {}
    raw, _ = syn.build_tgr_synthetic(sc, latent)
    n_items, n_topics = int(sc.items), int(sc.topics)
    print(
        f"built in memory in {time.time() - t0:.0f} s: {len(raw.events.user):,} training events, {n_items:,} items"
    )

    prep = Path(a.prepared)
    valid = pq.read_table(prep / "valid_targets.parquet").to_pandas()
    ev = pq.read_table(prep / "events.parquet", columns=["user", "ts"]).to_pandas()
    e = valid["event_index"].to_numpy()
    # the prepared events are the built ones in the same order: the oracle's event topics line up
    if not (np.array_equal(ev["ts"].to_numpy()[e], raw.events.ts[e])
            and np.array_equal(ev["user"].to_numpy()[e], raw.events.user[e])):  # fmt: skip
        raise SystemExit(f"{prep}: its events are not this config's build (other overrides or seed?)")
    index_of = {int(c): i for i, c in enumerate(latent["item_creative"].tolist())}  # creative -> item index
    items = pq.read_table(prep / "items.parquet", columns=["item", "creative_id"]).to_pandas()
    creative_of = dict(zip(items["item"].tolist(), items["creative_id"].tolist(), strict=True))
    target = np.array([index_of[creative_of[int(i)]] for i in valid["item"]])  # builder item index
    cands = pq.read_table(prep / "candidates.parquet", columns=["creative_id"]).to_pandas()
    pool = np.array([index_of[int(c)] for c in cands["creative_id"]])  # pool-only items index >= n_items
    warm = pool[pool < n_items]
    topics = latent["event_topic"][e].astype(np.int64)
    users = raw.events.user[e]

    gain = HR_W + NDCG_W / np.log2(np.arange(2, K + 2))  # (K,) a hit's score at ranks 1..K
    expected, realised = [], []
    for s in range(0, len(valid), a.chunk):
        p = click_law(latent, n_items, n_topics, topics[s : s + a.chunk], users[s : s + a.chunk])[:, warm]
        top = np.argsort(-p, axis=1, kind="stable")[:, :K]  # (q, K) positions in `warm`
        expected.append((np.take_along_axis(p, top, 1) * gain).sum(1))
        hit = warm[top] == target[s : s + a.chunk, None]  # (q, K)
        realised.append((hit * gain).sum(1))
    expected, realised = np.concatenate(expected), np.concatenate(realised)
    in_pool = np.isin(target, pool).mean()
    print(f"{len(valid):,} valid users, pool {len(pool):,} ({len(warm):,} training items); "
          f"{in_pool:.1%} of the held-out clicks are pool items")  # fmt: skip
    print(f"oracle (told each target's topic run and the user's preferences): expected valid score "
          f"{expected.mean():.4f}; on the actual targets {realised.mean():.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
