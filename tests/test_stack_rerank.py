"""The tencentgr lambdarank reranker over a retrieve stage's candidates (a stand-in retrieve stage writes
them exactly per the paths.Retrieved contract), the ensemble's choice among rankings, and bad input."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from recstack.artifacts import sha256_file, write_table
from recstack.config import CovisitConfig
from recstack.data.tables.tgr_prepared import before_cuts, pool_items, read_events, read_table
from recstack.errors import DataError
from recstack.paths import Paths, PreparedTGR, Retrieved
from recstack.pipeline import Stage, run_until
from recstack.retrieve.base import Events
from recstack.retrieve.covisit import fit_covisit, write_matrix
from recstack.tracks import TRACKS
from recstack.tracks.tencentgr.stack import candidate_schema, read_candidates

from test_movielens import fake_wheel

PER_SOURCE = 15


def fake_retrieve(ctx, drop_columns=()):
    """Two sources, each proposing PER_SOURCE items with the held-out target at a random rank among
    its own decoys; only the target is proposed by both (n_sources = 2). No single source knows where the
    target is; a reranker that learns `n_sources` does."""
    prep = ctx.input_dir("prepare")
    rng = np.random.default_rng(0)
    ev = read_events(prep)
    valid = read_table(prep, PreparedTGR.VALID)
    train = read_table(prep, PreparedTGR.STACK_QUERIES)  # the stacker's queries, as prepare drew them
    test = read_table(prep, PreparedTGR.PREDICT_USERS)
    pool = pool_items(prep)
    parts = []
    for split, qs in (("train", train), ("valid", valid), ("test", test)):
        for row, user in enumerate(qs["user"].tolist()):
            target = int(qs["item"].iloc[row]) if split != "test" else int(rng.choice(pool))
            others = rng.permutation(pool[pool != target])[: 2 * (PER_SOURCE - 1)]
            lists = {
                "a": np.r_[others[: PER_SOURCE - 1], target],
                "b": np.r_[others[PER_SOURCE - 1 :], target],
            }
            items = np.unique(np.concatenate(list(lists.values())))
            df = pd.DataFrame({"split": split, "user_row": row, "user": user, "item": items})
            for s, lst in lists.items():
                ranked = rng.permutation(lst)
                rank = pd.Series(np.arange(len(ranked)), index=ranked).reindex(items)
                df[f"{s}_rank"] = rank.fillna(-1).to_numpy(np.int32)
                df[f"{s}_score"] = np.where(rank.notna(), 1.0 / (1.0 + rank.fillna(0)), np.nan).astype(
                    np.float32
                )
            df["n_sources"] = ((df["a_rank"] >= 0).astype(int) + (df["b_rank"] >= 0)).astype(np.int8)
            if split == "test":
                df["label"] = np.float32(np.nan)
            else:
                w = 2.5 if int(qs["action"].iloc[row]) == 2 else 1.0
                df["label"] = np.where(df["item"] == target, w, 0.0).astype(np.float32)
            parts.append(df)
    cand = pd.concat(parts, ignore_index=True).drop(columns=list(drop_columns))
    write_table(ctx.out / Retrieved.CANDIDATES, pa.Table.from_pandas(cand, preserve_index=False))
    # the co-visitation matrices the stacker's rich features read, fitted as the real stage fits them
    n_rows = len(read_table(prep, PreparedTGR.ITEMS))
    events = Events(ev["user"], ev["item"], ev["action"], ev["ts"])
    cuts = np.r_[train["event_index"].to_numpy(), valid["event_index"].to_numpy()]
    for name, fit in ((Retrieved.COVISIT_BEFORE, events.take(before_cuts(events.user, cuts))),
                      (Retrieved.COVISIT_ALL, events)):  # fmt: skip
        write_matrix(ctx.out / name, fit_covisit(fit, n_rows, CovisitConfig())[0])
    return {}


def _with_retrieve(monkeypatch, run=fake_retrieve):
    ordered, real = {}, TRACKS["tencentgr"].stages["retrieve"]
    for name, st in TRACKS["tencentgr"].stages.items():
        if name == "stack":  # the real stage's inputs (embed, seqrec), a fake body
            ordered["retrieve"] = Stage("retrieve", run, ("prepare",), ("seed", "data.stack_users"), "fake",
                                        reads=real.reads)  # fmt: skip
        ordered[name] = st
    monkeypatch.setattr(TRACKS["tencentgr"], "stages", ordered)


@pytest.fixture
def tgr_cfg(tmp_path, tmp_cfg):
    cache = tmp_path / "input" / "_cache"
    cache.mkdir(parents=True)
    wheel = fake_wheel(cache / "recbole-1.2.1-py3-none-any.whl", users=40, items=80, per_user=14)
    return tmp_cfg("tencentgr_movielens.yaml", f"data.movielens.wheel_sha256={sha256_file(wheel)}",
                   "data.valid_users=12", "data.stack_users=20", "data.stack_cuts=1", "stack.rerank.lgbm.min_child_samples=5",
                   "stack.rerank.rich_features=false")  # fmt: skip


def test_reranker_beats_every_single_source_and_feeds_the_ensemble(tgr_cfg, monkeypatch, tmp_cfg):
    _with_retrieve(monkeypatch)
    manifests = run_until(tgr_cfg, "stack")
    assert list(manifests)[-3:] == ["seqrec", "retrieve", "stack"]
    figs = manifests["stack"]["figures"]
    assert figs["sources"] == ["a", "b"] and figs["train_queries"] == 20
    assert max(figs["valid_score_a"], figs["valid_score_b"]) < 0.7
    assert figs["valid_score"] > 0.95 and figs["lift_over_best_source"] > 0.1
    assert next(iter(figs["gain"])) == "n_sources"  # what no single source knows
    assert {"pop_decay", "item_idle_days", "seen_count", "sim_mean", "a_rank"} <= set(figs["features"])
    preds = pd.read_parquet(Paths(tgr_cfg).stage_dir("stack") / "predictions.parquet")
    valid = preds[preds["split"] == "valid"]
    per_user = valid.groupby("query")["item"]
    assert (
        per_user.size().eq(80).all() and per_user.nunique().eq(80).all()
    )  # the whole 80-item pool, no repeat
    # the ensemble fuses the baseline and the reranker, and submits the best validated ranking
    cfg = tmp_cfg("tencentgr_movielens.yaml", *[f"{k}={v}" for k, v in (
        ("data.movielens.wheel_sha256", tgr_cfg.data.movielens.wheel_sha256), ("data.valid_users", 12),
        ("data.stack_users", 20), ("stack.rerank.lgbm.min_child_samples", 5), ("stack.rerank.rich_features", "false"))],
        "ensemble.sources=[baseline,stack]")  # fmt: skip
    ens = run_until(cfg, "ensemble")["ensemble"]["figures"]
    assert ens["submitted"] == "stack" and ens["valid_score"] == figs["valid_score"]
    assert sum(ens["weights"]) == pytest.approx(1.0) and ens["valid_score_blend"] <= ens["valid_score"]
    # the rich features (noise on this toy data: 12 valid users, 0.917 = one target out of the top 10)
    rich_cfg = OmegaConf.merge(
        tgr_cfg,
        {"stack": {"rerank": {"rich_features": True, "agreement": True, "taste": True, "bag": 2,
                              "history_features": True}}},
    )  # fmt: skip
    rich = run_until(rich_cfg, "stack")["stack"]["figures"]
    assert rich["valid_score"] > 0.9 and rich["lift_over_best_source"] > 0.1
    assert {"a_score_gap", "clicks_30d", "last_click_days", "covisit_last1", "covisit_last5", "sim_max30",
            "user_gap_days"} <= set(rich["features"])  # fmt: skip
    assert any(f.startswith("match_i") for f in rich["features"])
    assert {"hist_clicks", "hist_last_action", "hist_last_age", "hist_last_days"} <= set(rich["features"])
    assert "hist_clicks" not in figs["features"]  # off by default
    assert {"best_rank", "n_top10", "rrf_equal", "a_score_z", "click_rate", "pop_vs_user"} <= set(
        rich["features"]
    )
    # a skipped source still prunes and is reported, but is no feature; skipping every source is an error
    one = OmegaConf.merge(rich_cfg, {"stack": {"rerank": {"skip_sources": ["b"]}}})
    figs = run_until(one, "stack")["stack"]["figures"]
    assert figs["sources"] == ["a", "b"] and "valid_score_b" in figs and "a_rank" in figs["features"]
    assert not any(f.startswith("b_") for f in figs["features"])
    none = OmegaConf.merge(tgr_cfg, {"stack": {"rerank": {"skip_sources": ["a", "b"]}}})
    with pytest.raises(DataError, match=r"skip_sources \['a', 'b'\] leaves none"):
        run_until(none, "stack")


def test_candidates_missing_a_column_are_an_error_naming_it(tgr_cfg, monkeypatch):
    _with_retrieve(monkeypatch, lambda ctx: fake_retrieve(ctx, drop_columns=("n_sources",)))
    with pytest.raises(DataError, match=r"candidates.parquet: missing column\(s\) n_sources"):
        run_until(tgr_cfg, "stack")


def test_read_candidates_checks_the_contract(tmp_path):
    path = tmp_path / "candidates.parquet"
    base = {"split": ["valid"] * 2, "user_row": [0, 0], "user": [1, 1], "item": [3, 3], "n_sources": [1, 1],
            "label": [0.0, 0.0], "a_score": [1.0, 0.5], "a_rank": [0, 1]}  # fmt: skip
    pd.DataFrame(base).to_parquet(path)
    assert candidate_schema(path) == ["a"]
    assert candidate_schema(path, {"valid": 1}) == ["a"]
    with pytest.raises(DataError, match="split valid has user_row 0; the split has 0 queries"):
        candidate_schema(path, {"valid": 0})
    with pytest.raises(DataError, match=r"split valid repeats \(user_row, item\) \(0, 3\)"):
        read_candidates(path, "valid")
    pd.DataFrame({**base, "item": [3, 4], "split": ["valid", "eval"]}).to_parquet(path)
    with pytest.raises(DataError, match="column 'split' has 'eval'"):
        candidate_schema(path)
    pd.DataFrame({k: v for k, v in base.items() if k != "a_rank"} | {"item": [3, 4]}).to_parquet(path)
    with pytest.raises(DataError, match="no <source>_score / <source>_rank column pair"):
        candidate_schema(path)
    with pytest.raises(DataError, match="not found"):
        candidate_schema(tmp_path / "none.parquet")


def test_read_candidates_reads_one_split_and_a_row_range_in_order(tmp_path):
    path = tmp_path / "candidates.parquet"
    df = pd.DataFrame({"split": ["test"] * 6 + ["valid"] * 2, "user_row": [3, 0, 1, 1, 2, 0, 0, 0],
                       "user": [9] * 8, "item": [5, 7, 9, 2, 4, 1, 1, 2], "n_sources": [1] * 8,
                       "label": [0.0] * 8, "a_score": [0.1] * 8, "a_rank": [0] * 8})  # fmt: skip
    with pq.ParquetWriter(path, pa.Table.from_pandas(df.iloc[:0]).schema) as w:
        for lo, hi in ((0, 3), (3, 6), (6, 8)):  # row groups, as retrieve writes them
            w.write_table(pa.Table.from_pandas(df.iloc[lo:hi]))
    got = read_candidates(path, "test", (1, 3))
    assert list(zip(got["user_row"], got["item"], strict=True)) == [(1, 2), (1, 9), (2, 4)]
    got = read_candidates(path, "test")
    assert list(zip(got["user_row"], got["item"], strict=True)) == [
        (0, 1),
        (0, 7),
        (1, 2),
        (1, 9),
        (2, 4),
        (3, 5),
    ]
    assert list(read_candidates(path, "valid")["item"]) == [1, 2]


def test_without_a_retrieve_stage_the_whole_pipeline_skips_the_reranker(tgr_cfg, caplog, monkeypatch):
    caplog.set_level("WARNING")
    without = {k: v for k, v in TRACKS["tencentgr"].stages.items() if k != "retrieve"}
    monkeypatch.setattr(TRACKS["tencentgr"], "stages", without)
    cfg = OmegaConf.merge(tgr_cfg, {"ensemble": {"sources": ["baseline"]}})
    manifests = run_until(cfg, None)
    assert "stack" not in manifests and "ensemble" in manifests
    assert "[stack] not run: it needs stage(s) retrieve" in caplog.text


def test_rich_features_by_hand():
    from recstack.models.popularity import DAY
    from recstack.stack.features import feature_match, history_pair_sums, user_normalised, windowed_popularity
    from recstack.tracks.tencentgr.stack import prune

    # clicks of item 5 at days 1, 9, 10 (an exposure at day 9.5 counts nothing); item 6 at day 2
    item, action = np.array([5, 5, 5, 5, 6]), np.array([1, 0, 1, 2, 1])
    ts = (np.array([1.0, 9.5, 9.0, 10.0, 2.0]) * DAY).astype(np.int64)
    q_time = np.array([10.0 * DAY, 9.0 * DAY, np.nan])  # query 2 has no history
    query, cand = np.array([0, 0, 1, 2]), np.array([5, 6, 5, 5])
    f = windowed_popularity(item, action, ts, q_time, query, cand, (1.5, 30.0))
    assert f["clicks_1.5d"][:3].tolist() == [2, 0, 1] and f["clicks_30d"][:3].tolist() == [3, 1, 2]
    assert f["clicks_before"][:3].tolist() == [3, 1, 2] and f["last_click_days"][:3].tolist() == [0, 8, 0]
    assert np.isnan(f["clicks_30d"][3]) and f["click_trend"][0] == pytest.approx(2 / 3)

    hist = [np.array([1, 2, 3]), np.array([4]), np.array([], np.int64)]
    w = {(3, 9): 1.0, (2, 9): 10.0, (1, 9): 100.0, (4, 9): 7.0}
    pairs = history_pair_sums(hist, np.array([0, 1, 2]), np.array([9, 9, 9]),
                              lambda a, b: np.array([w.get((x, y), 0.0) for x, y in zip(a, b, strict=True)]), (1, 2, 5), "cv")  # fmt: skip
    assert pairs["cv_last1"].tolist() == [1, 7, 0] and pairs["cv_last2"].tolist() == [11, 7, 0]
    assert pairs["cv_last5"].tolist() == [111, 7, 0]

    codes = np.array([[0], [1], [1], [2], [0], [1]])  # item -> genre (0 = none)
    m = feature_match(codes, ["g"], hist, np.array([0, 0, 1, 2]), np.array([5, 4, 3, 5]), 2)["match_g"]
    assert (
        m[0] == pytest.approx(0.5) and np.isnan(m[1]) and m[2] == 0 and np.isnan(m[3])
    )  # last 2: items 2, 3

    part = pd.DataFrame({"user_row": [0, 0, 1], "a_score": [1.0, 3.0, np.nan], "a_rank": [1, 0, -1],
                         "b_score": [0.5, np.nan, 2.0], "b_rank": [150, -1, 99]})  # fmt: skip
    gap = user_normalised(part, ["a_score", "b_score"])
    assert gap["a_score_gap"][:2].tolist() == [-2, 0] and np.isnan(gap["a_score_gap"][2])
    assert prune(part, ["a", "b"], 100)["b_rank"].tolist() == [150, -1, 99]
    assert prune(part, ["a", "b"], 1)["a_rank"].tolist() == [0] and len(prune(part, ["a", "b"], 0)) == 3


def test_agreement_features_by_hand():
    from recstack.stack.features import source_agreement, user_standardised

    part = pd.DataFrame({"user_row": [0, 0, 0, 1], "a_rank": [0, 12, -1, 3], "b_rank": [5, 60, 2, -1],
                         "a_score": [3.0, 1.0, np.nan, 7.0], "b_score": [0.5, 0.1, 0.9, np.nan]})  # fmt: skip
    f = source_agreement(part, ["a", "b"], top=(10, 50), rrf_k=60.0)
    assert f["best_rank"].tolist() == [0, 12, 2, 3]
    assert f["n_top10"].tolist() == [2, 0, 1, 1] and f["n_top50"].tolist() == [2, 1, 1, 1]
    assert f["rrf_equal"][1] == pytest.approx(1 / 72 + 1 / 120) and f["rrf_equal"][2] == pytest.approx(1 / 62)
    z = user_standardised(part, ["a_score", "b_score"])
    s = np.array([3.0, 1.0])
    assert z["a_score_z"][:2] == pytest.approx((s - s.mean()) / s.std(ddof=1))
    assert np.isnan(z["a_score_z"][2]) and z["a_score_z"][3] == 0  # not proposed; a query's only candidate
    b = np.array([0.5, 0.1, 0.9])
    assert z["b_score_z"][:3] == pytest.approx((b - b.mean()) / b.std(ddof=1)) and np.isnan(z["b_score_z"][3])


def test_bagged_ranker_scores_the_mean_of_the_fold_models_and_the_refit():
    from recstack.config import LgbmConfig
    from recstack.stack.lgbm import fit_lambdarank

    rng = np.random.default_rng(0)
    n_q, per = 60, 12
    query = np.repeat(np.arange(n_q), per)
    x = pd.DataFrame({"f": rng.normal(size=n_q * per), "g": rng.normal(size=n_q * per)})
    label = np.zeros(n_q * per, np.int32)
    label[np.arange(n_q) * per + x["f"].to_numpy().reshape(n_q, per).argmax(1)] = 1  # target = the largest f
    lc = LgbmConfig(num_leaves=4, n_estimators=60, early_stopping=10, min_child_samples=5)
    plain = fit_lambdarank(x, label, query, np.ones(len(x)), lc, 3, 0)
    bagged = fit_lambdarank(x, label, query, np.ones(len(x)), lc, 3, 0, bag=1)
    assert not plain.bag and len(bagged.bag) == 3
    expect = np.mean([m.predict(x) for m in [bagged.model, *bagged.bag]], axis=0)
    assert bagged.predict(x) == pytest.approx(expect)
    assert np.allclose(plain.predict(x), bagged.model.predict(x))  # same refit; the bag adds the folds
    assert not np.allclose(bagged.predict(x), plain.predict(x))
    rounds = fit_lambdarank(x, label, query, np.ones(len(x)), lc, 3, 0, bag=2)
    assert len(rounds.bag) == 2 * 3 + 1 and len(rounds.cv) == 6  # 2 rounds of 3 folds, round 1's refit
    assert {f["round"] for f in rounds.cv} == {0, 1} and np.allclose(
        rounds.model.predict(x), plain.predict(x)
    )
    with pytest.raises(ValueError, match="stack.rerank.bag is -1"):
        fit_lambdarank(x, label, query, np.ones(len(x)), lc, 3, 0, bag=-1)
    top = bagged.predict(x).reshape(n_q, per).argmax(1)
    assert (top == x["f"].to_numpy().reshape(n_q, per).argmax(1)).mean() > 0.8  # it learnt the planted rule


def test_popularity_taste_by_hand():
    from recstack.stack.features import popularity_taste

    clicks, events = np.array([0.0, 3.0, 1.0, 7.0]), np.array([0.0, 4.0, 4.0, 7.0])  # item 0: never seen
    hist = [np.array([1, 2]), np.array([], np.int64), np.array([3, 0])]
    f = popularity_taste(clicks, events, hist, np.array([0, 1, 2]), np.array([3, 3, 1]), recent=5)
    assert f["click_rate"][0] == 1.0 and f["click_rate"][2] == 0.75
    assert f["pop_vs_user"][0] == pytest.approx(np.log(8) - (np.log(4) + np.log(2)) / 2)
    assert f["rate_vs_user"][0] == pytest.approx(1.0 - (0.75 + 0.25) / 2)
    assert np.isnan(f["pop_vs_user"][1]) and np.isnan(f["rate_vs_user"][1])  # no history
    assert f["rate_vs_user"][2] == pytest.approx(0.75 - 1.0)  # item 0 has no rate: left out of the mean
    assert f["pop_vs_user"][2] == pytest.approx(np.log(4) - np.log(8) / 2)


def test_reranker_by_chunks_of_queries_equals_whole_splits(tgr_cfg, monkeypatch):
    """Every split read, featurised and scored STACK_CHUNK queries at a time (what bounds the stage's memory
    at TencentGR-1M size) gives the same predictions as whole splits, the rich features' contexts included."""
    from recstack.pipeline import run_stage
    from recstack.tracks.tencentgr import stack as stack_stage

    _with_retrieve(monkeypatch)
    cfg = OmegaConf.merge(tgr_cfg, {"stack": {"rerank": {"rich_features": True}}})
    run_until(cfg, "stack")
    path = Paths(cfg).stage_dir("stack") / "predictions.parquet"
    whole = pd.read_parquet(path)
    assert (whole.groupby("split")["query"].nunique() > 3).all()  # several chunks in every split
    monkeypatch.setattr(stack_stage, "STACK_CHUNK", 3)
    run_stage(cfg, "stack", force=True)
    pd.testing.assert_frame_equal(pd.read_parquet(path), whole)
