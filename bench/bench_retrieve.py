"""Retrieval benchmarks (figures in bench/README.md "Retrieval (FAISS index choice)" and
"Co-visitation fit and fusion search").

ann: Flat vs IVF (nprobe sweep) vs HNSW (efSearch sweep) on clustered synthetic vectors shaped like real
item embeddings (many clusters of unequal size and spread, L2-normalised, d = 128), queries = the normalised
mean of a few items of one cluster plus noise (a user's history vector). Recall@100 against Flat (exact),
QPS over all queries, build (train + add) time. Threads: FAISS's default (every core).

covisit: the co-visitation fit (retrieve/covisit.py) at TencentGR-1M size: 1M users x ~90 events over
500k items (Zipf popularity inside per-user topics, ~10% clicks, 1% conversions), the stage's default
settings; time and peak RSS (the process's, so run it alone: `--part covisit`).

    PYTHONPATH=src .venv/bin/python bench/bench_retrieve.py --part ann --items 100000,1000000
    PYTHONPATH=src .venv/bin/python bench/bench_retrieve.py --part covisit --users 1000000

fusion: the fusion-weight search of the merged ranking (retrieve/merge.py tune_weights) on a stage-shaped
merged table (4 sources x top 500 over a Zipf pool, --queries train queries); time, chosen weights, score.

    PYTHONPATH=src .venv/bin/python bench/bench_retrieve.py --part fusion --queries 2000
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import numpy as np

from recstack.config import CovisitConfig
from recstack.retrieve.base import Events, Ranking
from recstack.retrieve.covisit import fit_covisit
from recstack.retrieve.index import normalise
from recstack.retrieve.merge import merge, tune_weights


def clustered(n: int, d: int, clusters: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    size = rng.zipf(1.5, clusters).astype(np.float64)  # unequal cluster sizes, like item categories
    label = rng.choice(clusters, n, p=size / size.sum())
    spread = rng.uniform(0.3, 0.9, clusters).astype(np.float32)
    # within-cluster variation along a power-law spectrum (real embeddings' PCA spectra decay; isotropic
    # 128-d noise is a worst case no ANN index handles: IVF recall@100 0.42 at nprobe 32 on it)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    spectrum = (np.arange(1, d + 1) ** -0.75 * np.sqrt(d) / 2).astype(np.float32)
    noise = (rng.normal(size=(n, d)).astype(np.float32) * spectrum) @ basis
    x = centres[label] + spread[label, None] * noise
    return normalise(x, "bench vectors"), label


def queries_like_users(x: np.ndarray, label: np.ndarray, nq: int, rng: np.random.Generator) -> np.ndarray:
    seeds = rng.integers(0, len(x), nq)
    by = np.argsort(label, kind="stable")
    first = np.searchsorted(label[by], label[seeds])
    count = np.bincount(label, minlength=label.max() + 1)[label[seeds]]
    q = np.zeros((nq, x.shape[1]), np.float32)
    for _ in range(5):  # 5 history items of the seed's cluster
        q += x[by[first + rng.integers(0, count)]]
    q += 0.1 * rng.normal(size=q.shape).astype(np.float32)
    return normalise(q, "bench queries")


def timed_search(index: faiss.Index, q: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    _, ids = index.search(q, k)
    return ids, len(q) / (time.perf_counter() - t)


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(np.intersect1d(a, b)) / truth.shape[1] for a, b in zip(ids, truth, strict=True)])
    )


def bench_ann(n: int, nq: int, d: int, k: int, nprobes: list[int], efs: list[int], m: int) -> None:
    rng = np.random.default_rng(0)
    x, label = clustered(n, d, max(100, n // 1000), rng)
    q = queries_like_users(x, label, nq, rng)
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    truth, flat_qps = timed_search(flat, q, k)
    print(f"\n== {n:,} items, d={d}, {nq:,} queries, k={k} ==")
    print(f"{'index':<22}{'param':>10}{'build s':>10}{'QPS':>10}{'x Flat':>8}{'recall@100':>12}")
    print(f"{'Flat':<22}{'-':>10}{0:>10.1f}{flat_qps:>10.0f}{1:>8.1f}{1:>12.4f}")
    nlist = int(4 * np.sqrt(n))  # FAISS guideline: 4..16 x sqrt(n) lists
    factory = f"IVF{nlist},Flat"
    t = time.perf_counter()
    ivf = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x[rng.choice(n, min(n, 256 * nlist), replace=False)])
    ivf.add(x)
    build = time.perf_counter() - t
    for p in nprobes:
        faiss.extract_index_ivf(ivf).nprobe = p
        ids, qps = timed_search(ivf, q, k)
        print(f"{factory:<22}{'np=' + str(p):>10}{build:>10.1f}{qps:>10.0f}{qps / flat_qps:>8.1f}"
              f"{recall(ids, truth):>12.4f}", flush=True)  # fmt: skip
    if not efs:
        return
    t = time.perf_counter()
    hnsw = faiss.index_factory(d, f"HNSW{m}", faiss.METRIC_INNER_PRODUCT)
    hnsw.add(x)
    build = time.perf_counter() - t
    for ef in efs:
        hnsw.hnsw.efSearch = ef
        ids, qps = timed_search(hnsw, q, k)
        print(f"{'HNSW' + str(m):<22}{'ef=' + str(ef):>10}{build:>10.1f}{qps:>10.0f}{qps / flat_qps:>8.1f}"
              f"{recall(ids, truth):>12.4f}", flush=True)  # fmt: skip


def synthetic_events(users: int, items: int, mean_len: int, seed: int = 0) -> Events:
    rng = np.random.default_rng(seed)
    length = np.clip(rng.gamma(2.0, mean_len / 2.0 * 1.25, users).astype(np.int64), 2, 100)
    user = np.repeat(np.arange(1, users + 1, dtype=np.int32), length)
    topics = 1000
    per_topic = items // topics
    topic = rng.integers(0, topics, users)[user - 1]  # each user stays in one topic most of the time
    switch = rng.random(len(user)) < 0.3
    topic = np.where(switch, rng.integers(0, topics, len(user)), topic)
    rank = np.minimum(rng.zipf(1.3, len(user)) - 1, per_topic - 1)  # popular items of the topic first
    item = (1 + topic * per_topic + rank).astype(np.int32)
    u = rng.random(len(user))
    action = np.where(u < 0.01, 2, np.where(u < 0.1, 1, 0)).astype(np.int8)
    start = np.repeat(np.cumsum(length) - length, length)
    ts = (1_740_000_000 + (np.arange(len(user)) - start) * 600).astype(np.int64)
    return Events(user, item, action, ts)


def bench_covisit(users: int, items: int, mean_len: int, memory_mb: int) -> None:
    t = time.perf_counter()
    ev = synthetic_events(users, items, mean_len)
    gen = time.perf_counter() - t
    st = CovisitConfig(memory_mb=memory_mb)
    t = time.perf_counter()
    m, fig = fit_covisit(ev, items + 1, st)
    fit = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(f"co-visitation: {users:,} users, {len(ev):,} events, {items:,} items; window {st.window}, "
          f"memory_mb {memory_mb}: {fig['passes']} passes, fit {fit:.1f}s (events generated in {gen:.1f}s), "
          f"{fig['pairs_kept']:,} pairs kept for {fig['items_with_pairs']:,} items, peak RSS {rss:.2f} GiB")  # fmt: skip


def bench_fusion(queries: int, pool: int, topk: int, seed: int = 0) -> None:
    """The fusion-weight search (merge.tune_weights, the 4^S grid) on a merged table shaped like the retrieve
    stage's: 4 sources x top-`topk` of a `pool` with Zipf popularity (the sources overlap on popular items),
    each query's target proposed by each source with probability 0.4 at a uniform rank."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, pool + 1) ** 0.8
    pop /= pop.sum()
    target = rng.choice(pool, queries, p=pop)
    rankings = {}
    for s in ("covisit", "content", "popular", "seqrec"):
        items = np.empty((queries, topk), np.int64)
        for q in range(queries):
            items[q] = rng.choice(pool, topk, replace=False, p=pop)
        hit = rng.random(queries) < 0.4
        at = rng.integers(0, topk, queries)
        for q in np.flatnonzero(hit):
            row = items[q][items[q] != target[q]]
            items[q] = np.insert(row, min(at[q], len(row)), target[q])[:topk]
        rankings[s] = Ranking(items, -np.tile(np.arange(topk, dtype=np.float32), (queries, 1)))
    table = merge(rankings, np.arange(queries))
    weight = np.where(rng.random(queries) < 0.1, 2.5, 1.0)
    t = time.perf_counter()
    w, score = tune_weights(table, list(rankings), 60.0, target, weight)
    took = time.perf_counter() - t
    print(f"fusion-weight search: {queries:,} queries, {len(table):,} candidate rows, 4 sources "
          f"({4 ** 4 + 1} grid points): {took:.1f}s, weights {w}, train score {score:.5f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["ann", "covisit", "fusion"], required=True)
    ap.add_argument("--items", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--nprobe", default="8,16,32,64,128")
    ap.add_argument("--ef", default="16,32,64,128")  # "" skips HNSW
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--covisit-items", type=int, default=500_000)
    ap.add_argument("--events-per-user", type=int, default=90)
    ap.add_argument("--memory-mb", type=int, default=2048)
    ap.add_argument("--pool", type=int, default=66_000)  # fusion: the 10% synthetic pool
    ap.add_argument("--topk", type=int, default=500)
    a = ap.parse_args()
    if a.part == "ann":
        print(f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
        for n in (int(v) for v in a.items.split(",")):
            bench_ann(n, a.queries, a.dim, a.k, [int(v) for v in a.nprobe.split(",")],
                      [int(v) for v in a.ef.split(",") if v], a.hnsw_m)  # fmt: skip
    elif a.part == "fusion":
        bench_fusion(a.queries, a.pool, a.topk)
    else:
        bench_covisit(a.users, a.covisit_items, a.events_per_user, a.memory_mb)


if __name__ == "__main__":
    main()
