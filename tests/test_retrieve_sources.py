"""Candidate sources against obvious reference versions on tiny data; the merge and the fusion."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from recstack.artifacts import write_table
from recstack.config import ContentSourceConfig, CovisitConfig, PopularSourceConfig
from recstack.data.tables.predictions import ranking_table
from recstack.models.popularity import decayed_popularity
from recstack.retrieve.base import (
    MISSING,
    Events,
    Ranking,
    action_weights,
    backfill,
    drop_seen,
    query_histories,
)
from recstack.retrieve.content import Content
from recstack.retrieve.covisit import CovisitMatrix, fit_covisit, score_queries
from recstack.retrieve.features import covisit_lookup, row_features
from recstack.retrieve.index import IndexSettings, VectorIndex
from recstack.retrieve.merge import (
    WEIGHT_GRID,
    fuse,
    merge,
    metric_from_ranks,
    rrf_matrix,
    target_ranks,
    tune_weights,
)
from recstack.retrieve.popular import Popular
from recstack.retrieve.seqrec import Seqrec

N_ITEMS = 40


def tiny_events(seed: int = 0, users: int = 25) -> Events:
    rng = np.random.default_rng(seed)
    u, i, a, t = [], [], [], []
    for user in range(1, users + 1):
        n = int(rng.integers(2, 15))
        u += [user] * n
        i += rng.integers(1, N_ITEMS, n).tolist()
        a += rng.choice([0, 1, 1, 2], n).tolist()
        t += np.cumsum(rng.integers(1, 20_000, n)).tolist()
    return Events(*(np.array(x, np.int64) for x in (u, i, a, t)))


def brute_covisit(ev: Events, st: CovisitConfig) -> dict[tuple[int, int], float]:
    w = defaultdict(float)
    for x in range(len(ev)):
        for y in range(x + 1, min(len(ev), x + st.window + 1)):
            if ev.user[x] != ev.user[y] or ev.item[x] == ev.item[y]:
                continue
            decay = (
                2 ** (-abs(ev.ts[y] - ev.ts[x]) / (st.half_life_hours * 3600)) if st.half_life_hours else 1
            )
            w[ev.item[x], ev.item[y]] += action_weights(st)[ev.action[y]] * decay
            w[ev.item[y], ev.item[x]] += st.backward * action_weights(st)[ev.action[x]] * decay
    return {k: v for k, v in w.items() if v > 0}


@pytest.mark.parametrize("parts", [1, 3])
def test_covisit_matrix_and_scores_equal_brute_force(parts):
    ev = tiny_events()
    st = CovisitConfig(window=3, half_life_hours=2.0, exposure_weight=0.2, click_weight=1.0, conversion_weight=2.5, backward=0.5,
                         neighbours=1000, history=4, recency=0.7)  # fmt: skip
    m, fig = fit_covisit(ev, N_ITEMS, st, parts=parts)
    want = brute_covisit(ev, st)
    got = {(a, int(b)): float(w) for a in range(N_ITEMS) for b, w in zip(*m.row(a), strict=True)}
    assert got.keys() == want.keys() and fig["passes"] == parts
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5)
    # the query score: sum over the last `history` events of recency ** age * action weight * w(a -> b)
    pool = np.arange(5, N_ITEMS)
    pool_mask = np.isin(np.arange(N_ITEMS), pool)
    q = query_histories(ev, np.array([3, 7, 99]), "valid")  # user 99 has no events
    for exclude in (True, False):
        r = score_queries(m, q, st, pool_mask, 6, exclude)
        for row in range(len(q)):
            hist, acts = q.history(row), q.action[q.offsets[row] : q.offsets[row + 1]]
            score = defaultdict(float)
            for age, (a, act) in enumerate(zip(hist[::-1][: st.history], acts[::-1], strict=False)):
                for (x, b), w in want.items():
                    if x == a and b in pool and not (exclude and b in hist):
                        score[b] += st.recency**age * action_weights(st)[act] * w
            best = sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
            got_items = [int(i) for i in r.items[row] if i != MISSING]
            assert got_items == [b for b, _ in best]
            np.testing.assert_allclose(r.scores[row][: len(best)], [s for _, s in best], rtol=1e-4)
    assert (r.items[2] == MISSING).all()  # no history, no co-visitation candidates


def test_covisit_keeps_the_strongest_neighbours():
    ev = tiny_events(1)
    st = CovisitConfig(window=4, neighbours=3)
    m, _ = fit_covisit(ev, N_ITEMS, st)
    full, _ = fit_covisit(ev, N_ITEMS, CovisitConfig(window=4, neighbours=1000))
    for a in range(N_ITEMS):
        nbr, w = m.row(a)
        assert len(nbr) == min(3, len(full.row(a)[0]))
        np.testing.assert_allclose(w, full.row(a)[1][: len(nbr)])
        assert (covisit_lookup(m, np.full(len(nbr), a), nbr.astype(np.int64)) == w).all()


def test_covisit_lookup_equals_a_dict_of_the_pairs():
    """Rows keyed one by one (the lookup keys only the rows it is asked about): hits, misses, empty rows,
    a row asked many times and in any order."""
    rng = np.random.default_rng(3)
    n = 50
    lens = rng.integers(0, 8, n)
    lens[[0, 7]] = 0
    indptr = np.r_[0, np.cumsum(lens)].astype(np.int64)
    nbr = np.concatenate([rng.choice(n, k, replace=False) for k in lens]).astype(np.int32)
    weight = rng.random(len(nbr)).astype(np.float32)
    m = CovisitMatrix(indptr, nbr, weight)
    pairs = {(a, int(nbr[j])): weight[j] for a in range(n) for j in range(indptr[a], indptr[a + 1])}
    a = np.r_[rng.integers(0, n, 400), [p[0] for p in pairs]]
    b = np.r_[rng.integers(0, n, 400), [p[1] for p in pairs]]
    got = covisit_lookup(m, a, b)
    want = np.array([pairs.get((int(x), int(y)), 0.0) for x, y in zip(a, b, strict=True)], np.float32)
    assert (got == want).all() and (got > 0).sum() >= len(pairs)
    assert len(covisit_lookup(m, a[:0], b[:0])) == 0


def test_content_equals_brute_force():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    vecs[0] = 0
    ev = tiny_events()
    pool = np.arange(1, N_ITEMS, 2)
    src = Content(ContentSourceConfig(history=3, recency=0.5), vecs, pool, IndexSettings("Flat"))
    q = query_histories(ev, np.array([1, 2, 3, 99]), "valid")
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    for exclude in (True, False):
        r = src.recommend(q, 5, exclude)
        for row in range(3):
            hist = q.history(row)
            u = sum(0.5**age * unit[a] for age, a in enumerate(hist[::-1][:3]))
            cand = [p for p in pool if not (exclude and p in hist)]
            s = unit[cand] @ (u / np.linalg.norm(u))
            best = np.array(cand)[np.argsort(-s, kind="stable")[:5]]
            assert r.items[row].tolist() == best.tolist()
        assert (r.items[3] == MISSING).all() and np.isnan(r.scores[3]).all()
    # torch fallback gives the same candidates
    r_t = Content(
        ContentSourceConfig(history=3, recency=0.5), vecs, pool, IndexSettings(backend="torch")
    ).recommend(q, 5, True)
    assert (r_t.items == src.recommend(q, 5, True).items).all()


def test_popular_source_is_the_baseline_popularity():
    ev = tiny_events()
    pool = np.arange(1, N_ITEMS)
    src = Popular(PopularSourceConfig(half_life_days=0.5), N_ITEMS, pool)
    src.fit(ev)
    q = query_histories(ev, np.array([4, 5]), "test")
    pop = decayed_popularity(ev.item, ev.action, ev.ts, N_ITEMS, 0.5)
    order = pool[np.argsort(-pop[pool], kind="stable")]
    r = src.recommend(q, 7, exclude_seen=True)
    for row in range(2):
        assert r.items[row].tolist() == [i for i in order if i not in q.history(row)][:7]
    assert src.recommend(q, 7, exclude_seen=False).items[0].tolist() == order[:7].tolist()


def test_query_histories_cut_and_drop_seen():
    ev = tiny_events()
    start = int(np.flatnonzero(ev.user == 4)[0])
    q = query_histories(ev, np.array([4, 99]), "train", cut=np.array([start + 1, 0]))
    assert q.history(0).tolist() == [ev.item[start]] and len(q.history(1)) == 0
    r = Ranking(
        np.array([[ev.item[start], 50, 51], [7, MISSING, MISSING]]), np.array([[3, 2, 1], [1, 0, 0]], "f4")
    )
    d = drop_seen(r, q, 3)
    assert d.items.tolist() == [[50, 51, MISSING], [7, MISSING, MISSING]]


def test_seqrec_slot_reads_its_stage_ranking(tmp_path):
    items = np.array([[5, 6, 7], [8, 9, 10]])
    write_table(tmp_path / "predictions.parquet",
                ranking_table({"valid": (items, np.ones((2, 3))), "test": (items[:1], np.ones((1, 3)))}))  # fmt: skip
    ev = Events(np.array([1, 1, 2]), np.array([6, 3, 4]), np.array([1, 1, 1]), np.array([0, 1, 2]))
    src = Seqrec(tmp_path, np.arange(5, 11))
    q = query_histories(ev, np.array([1, 2]), "valid")
    assert src.recommend(q, 3, True).items.tolist() == [[5, 7, MISSING], [8, 9, 10]]
    assert Seqrec(tmp_path, np.array([6, 9])).recommend(q, 2, False).items.tolist() == [
        [6, MISSING],
        [9, MISSING],
    ]
    assert src.recommend(q, 2, False).items.tolist() == [[5, 6], [8, 9]]
    assert src.recommend(query_histories(ev, np.array([1]), "test"), 3, False).items.tolist() == [[5, 6, 7]]


def test_merge_keeps_every_source_and_fusion_ranks():
    a = Ranking(
        np.array([[1, 2, 3], [4, MISSING, MISSING]]), np.array([[0.9, 0.8, 0.7], [0.5, np.nan, np.nan]], "f4")
    )
    b = Ranking(np.array([[3, 9], [5, 4]]), np.array([[2.0, 1.0], [3.0, 2.0]], "f4"))
    t = merge({"a": a, "b": b}, np.array([11, 12]))
    got = {(int(r.user_row), int(r.item)) for r in t.itertuples()}
    assert got == {(0, 1), (0, 2), (0, 3), (0, 9), (1, 4), (1, 5)}
    row = t[(t.user_row == 0) & (t.item == 3)].iloc[0]
    assert row.a_rank == 2 and row.b_rank == 0 and row.n_sources == 2 and row.user == 11
    assert pytest.approx(row.a_score) == 0.7 and row.b_score == 2.0
    assert t[(t.user_row == 0) & (t.item == 9)].iloc[0].a_rank == -1
    assert np.isnan(t[(t.user_row == 0) & (t.item == 9)].iloc[0].a_score)
    fused = fuse(t, ["a", "b"], [1.0, 1.0], 60.0, 2, 3)
    assert fused.items[0].tolist() == [3, 1, 2]  # 1/63 + 1/61 > 1/61 > 1/62 (2 and 9 tie: lower id)
    assert fused.items[1].tolist()[:2] == [4, 5]
    # the rank of a target under a score equals sorting by hand; fusion weights tuned to a known answer
    target = np.array([9, 5])
    score = np.where(t["b_rank"] >= 0, 1.0 / (61 + t["b_rank"]), 0.0)
    assert target_ranks(t, score, target).tolist() == [1, 0]
    w, best = tune_weights(t, ["a", "b"], 60.0, target, np.ones(2))
    assert w[0] == 0 and w[1] > 0 and best == pytest.approx(metric_from_ranks(np.array([1, 0]), np.ones(2)))


def test_tuned_weights_equal_scoring_every_row():
    """tune_weights scores only the rows that can pass a target; the search over every row gives the same
    weights and score (ties between fused scores included: few ranks, many equal RRF sums)."""
    rng = np.random.default_rng(3)
    n_q, pool, k = 300, 40, 12
    rankings = {}
    for s in ("a", "b", "c"):
        items = np.stack([rng.permutation(pool)[:k] for _ in range(n_q)]).astype(np.int64)
        items[rng.random((n_q, k)) < 0.2] = MISSING
        rankings[s] = Ranking(items, np.where(items == MISSING, np.nan, 1.0).astype(np.float32))
    t = merge(rankings, np.arange(n_q))
    target = rng.integers(0, pool, n_q)
    weight = np.where(rng.random(n_q) < 0.1, 2.5, 1.0)
    names = ["a", "b", "c"]
    rrf = rrf_matrix(t, names, 60.0)
    best, best_w = -1.0, None
    for w in [(1.0,) * 3, *itertools.product(WEIGHT_GRID, repeat=3)]:
        if (
            any(w)
            and (s := metric_from_ranks(target_ranks(t, rrf @ np.asarray(w), target), weight)) > best + 1e-12
        ):
            best, best_w = s, list(w)
    got_w, got = tune_weights(t, names, 60.0, target, weight)
    assert got_w == best_w and got == best and 0 < best < 1
    # capped: tuned on a seeded subset of the queries, the same as tuning on that subset's own table
    sub_w, sub = tune_weights(t, names, 60.0, target, weight, max_queries=100, seed=5)
    pick = np.sort(np.random.default_rng(5).choice(n_q, 100, replace=False))
    rows = t[t["user_row"].isin(pick)].assign(user_row=lambda d: np.searchsorted(pick, d["user_row"]))
    assert (sub_w, sub) == tune_weights(rows, names, 60.0, target[pick], weight[pick]) and sub != best


def test_row_features_by_hand():
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(N_ITEMS, 6)).astype(np.float32)
    vecs[0] = 0
    ev = tiny_events(2)
    m, _ = fit_covisit(ev, N_ITEMS, CovisitConfig(window=2, neighbours=1000))
    hist = np.array([[0, 0, 3, 5], [0, 0, 0, 0]])
    target = np.array([7, 8])
    idx = VectorIndex(vecs[1:], IndexSettings("Flat"), ids=np.arange(1, N_ITEMS))
    f = row_features(hist, target, vecs, m, idx, window=2, recency=0.5, cap=10)
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    sims = [unit[3] @ unit[7], unit[5] @ unit[7]]
    assert f["sim_max"][0] == pytest.approx(max(sims), abs=1e-6) and f["sim_last"][0] == pytest.approx(
        sims[1]
    )
    assert f["sim_mean"][0] == pytest.approx(np.mean(sims), abs=1e-6) and f["sim_max"][1] == 0
    w = dict(((a, int(b)), float(x)) for a in (3, 5) for b, x in zip(*m.row(a), strict=True))
    assert f["covisit"][0] == pytest.approx(w.get((5, 7), 0) + 0.5 * w.get((3, 7), 0), rel=1e-5)
    u = 0.5 * unit[3] + unit[5]
    order = np.arange(1, N_ITEMS)[np.argsort(-(unit[1:] @ u), kind="stable")]
    want = int(np.flatnonzero(order[:10] == 7)[0]) if 7 in order[:10] else 10
    assert f["ann_rank"][0] == want and f["ann_rank"][1] == 10
    assert all(v.dtype == np.float32 for v in f.values())


def test_stack_queries_with_several_cuts_per_user_hold_out_from_the_earliest():
    from recstack.data.tables.tgr_prepared import before_cuts, stack_queries

    # two users; actions: 1 = click, 0 = exposure
    ev = {
        "user": np.array([1, 1, 1, 1, 1, 2, 2, 2]),
        "item": np.array([10, 11, 12, 13, 14, 20, 21, 22]),
        "action": np.array([1, 0, 1, 1, 0, 1, 0, 1]),
    }
    valid = pd.DataFrame({"user": np.array([], np.int64)})
    one = stack_queries(ev, valid, 5, 0)
    two = stack_queries(ev, valid, 5, 0, cuts=2)
    assert one["event_index"].tolist() == [3, 7]  # the last click of each user
    assert two["event_index"].tolist() == [2, 3, 5, 7] and two["item"].tolist() == [12, 13, 20, 22]
    assert (two["action"] >= 1).all() and two["n_hist"].tolist() == [2, 3, 0, 2]
    keep = before_cuts(ev["user"], two["event_index"].to_numpy())
    assert keep.tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
    ]  # from each user's earliest cut


def brute_backfill(own: np.ndarray, fallback: np.ndarray, shared: np.ndarray, k: int) -> list[list[int]]:
    out = []
    for q in range(len(own)):
        row: list[int] = []
        for x in [*own[q].tolist(), *fallback[q].tolist(), *shared.tolist()]:
            if x != MISSING and x not in row and len(row) < k:
                row.append(x)
        out.append(row + [MISSING] * (k - len(row)))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_backfill_equals_a_loop_and_marks_the_filled_slots(seed):
    rng = np.random.default_rng(seed)
    q, k = 37, 9
    own = np.where(rng.random((q, 6)) < 0.3, MISSING, rng.integers(1, 20, (q, 6)))
    own = np.array([np.r_[r[r != MISSING], r[r == MISSING]] for r in own])  # a ranking: compacted rows
    fallback = np.where(rng.random((q, 5)) < 0.3, MISSING, rng.integers(1, 20, (q, 5)))  # repeats own items
    shared = rng.permutation(np.arange(1, 12))  # fewer than some rows need: MISSING at the end
    items, filled = backfill(own, k, fallback, shared, chunk=8)  # several chunks
    assert items.tolist() == brute_backfill(own, fallback, shared, k)
    n_own = [len(set(r[r != MISSING].tolist())) for r in own]
    assert filled.tolist() == [
        [n <= j and items[r, j] != MISSING for j in range(k)] for r, n in enumerate(n_own)
    ]
    only_own, none = backfill(own, k)
    assert not none.any() and only_own.tolist() == brute_backfill(own, own[:, :0], shared[:0], k)
