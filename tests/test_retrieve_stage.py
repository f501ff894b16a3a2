"""The retrieve stage end to end through the pipeline entry point: tencentgr (tiny hand-made set, with and
without a fake seqrec stage) and mmctr (tiny synthetic set); config errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recstack.artifacts import sha256_file, write_table
from recstack.config import ConfigError
from recstack.data.raw.tencentgr_platform import write_platform
from recstack.data.tables.predictions import ranking_table
from recstack.data.tables.tgr_prepared import read_events
from recstack.errors import DataError
from recstack.paths import Paths, Predictions, PreparedTGR, Retrieved
from recstack.pipeline import Stage, run_stage, run_until
from recstack.retrieve.base import Events
from recstack.retrieve.covisit import fit_covisit, read_matrix, write_matrix
from recstack.tracks import TRACKS

from conftest import SMALL_SYNTH
from test_movielens import fake_wheel
from tgr_helpers import tiny_tgr

TGR = ("data.mm_feats=['81','82']", "data.emb_dims={'82': 8}", "data.valid_users=2", "data.stack_users=2",
       "embed.dim=16", "embed.align.epochs=1", "ensemble.sources=[retrieve]", "retrieve.covisit.window=3")  # fmt: skip


def _tgr(tmp_cfg, *overrides):
    cfg = tmp_cfg("tencentgr_real.yaml", *TGR, *overrides)
    write_platform(tiny_tgr(), Paths(cfg).raw_dir, {"82": 8})
    return cfg


def test_tencentgr_candidates_report_and_best_ranking(tmp_cfg):
    cfg = _tgr(tmp_cfg)
    manifests = run_until(cfg, "ensemble")
    assert list(manifests) == ["prepare", "embed", "seqrec", "retrieve", "ensemble"]
    paths = Paths(cfg)
    out, prep = paths.stage_dir("retrieve"), paths.stage_dir("prepare")
    cand = pd.read_parquet(out / Retrieved.CANDIDATES)
    valid = pd.read_parquet(prep / PreparedTGR.VALID)
    train = pd.read_parquet(prep / PreparedTGR.STACK_QUERIES)
    pu = pd.read_parquet(prep / PreparedTGR.PREDICT_USERS)
    assert len(train) == 2 and not set(train["user"]) & set(valid["user"])
    assert set(cand["split"]) == {"train", "valid", "test"}
    for s in ("covisit", "content", "popular", "merged"):
        assert cand[f"{s}_score"].dtype == np.float32 and cand[f"{s}_rank"].dtype == np.int32
        assert (np.isnan(cand[f"{s}_score"]) == (cand[f"{s}_rank"] < 0)).all()
    base = cand[["covisit_rank", "content_rank", "popular_rank", "seqrec_rank"]].to_numpy()
    assert (cand["n_sources"] == (base >= 0).sum(1)).all() and (cand["n_sources"] >= 1).all()
    assert not cand.duplicated(["split", "user_row", "item"]).any()
    assert cand.loc[cand.split == "test", "label"].isna().all()
    for split, tgt in (("train", train), ("valid", valid)):
        c = cand[cand.split == split]
        is_t = c["item"].to_numpy() == tgt["item"].to_numpy()[c["user_row"].to_numpy()]
        assert (c["label"][~is_t] == 0).all() and (c["label"][is_t] >= 1).all()
        assert (c["user"].to_numpy() == tgt["user"].to_numpy()[c["user_row"].to_numpy()]).all()
    assert cand.loc[cand.split == "test", "user_row"].max() == len(pu) - 1
    report = json.loads((out / Retrieved.REPORT).read_text())
    assert set(report["per_source"]) == {"covisit", "content", "popular", "seqrec", "merged"}
    assert "recall@10" in report["per_source"]["covisit"] and report["best"] in report["per_source"]
    figs = manifests["retrieve"]["figures"]
    assert figs["best"] == report["best"] and "valid_score_merged" in figs
    board = pd.read_csv(paths.leaderboard)  # the submitted ranking is a model row of the leaderboard
    assert (
        f"retrieve:{report['best']}" in set(board["model"])
        and figs["valid_score"] == report["per_source"][report["best"]]["score"]
    )
    pred = pd.read_parquet(out / Predictions.FILE)
    assert set(pred["split"]) == {"valid", "test"} and (pred["item"] > 0).all()
    assert pred.groupby(["split", "query"]).size().min() >= 10
    assert (paths.stage_dir("ensemble") / "submission.json").is_file()


def _fake_seqrec(ctx):
    """A stand-in for the seqrec stage: ranks items 1..12 by id for every query of every split."""
    prep = ctx.input_dir("prepare")
    valid = pd.read_parquet(prep / PreparedTGR.VALID)
    pu = pd.read_parquet(prep / PreparedTGR.PREDICT_USERS)
    parts = {}
    for split, n in (("train", ctx.cfg.data.stack_users), ("valid", len(valid)), ("test", len(pu))):
        items = np.tile(np.arange(1, 13), (n, 1))
        parts[split] = (items, -items.astype(float))
    write_table(ctx.out / Predictions.FILE, ranking_table(parts))
    return {}


def test_tencentgr_reads_a_finished_seqrec_stage(tmp_cfg, monkeypatch):
    cfg = _tgr(tmp_cfg, "ensemble.sources=[retrieve]")
    stages = dict(TRACKS["tencentgr"].stages)
    stages = {k: v for k, v in stages.items() if k not in ("retrieve", "stack")}  # 2 stack users: no reranker
    order = list(stages)
    fake = Stage("seqrec", _fake_seqrec, ("prepare",), ("track",), "fake")
    new = {}
    for k in order:
        if k == "ensemble":
            new["seqrec"] = fake
            new["retrieve"] = TRACKS["tencentgr"].stages["retrieve"]
        new[k] = stages[k]
    monkeypatch.setattr(TRACKS["tencentgr"], "stages", new)
    manifests = run_until(cfg)  # the whole track: seqrec runs before retrieve, which then reads it
    assert "seqrec" in manifests["retrieve"]["inputs"]
    cand = pd.read_parquet(Paths(cfg).stage_dir("retrieve") / Retrieved.CANDIDATES)
    assert "seqrec_rank" in cand
    s = cand[cand["seqrec_rank"] >= 0]
    assert set(s["split"]) == {"train", "valid", "test"} and s["item"].between(1, 12).all()


def test_mmctr_features_for_valid_and_test_rows(tmp_cfg):
    cfg = tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "embed.align.epochs=1")
    manifests = run_until(cfg, "retrieve")
    assert "embed" in manifests["retrieve"]["inputs"]
    paths = Paths(cfg)
    f = pd.read_parquet(paths.stage_dir("retrieve") / Retrieved.FEATURES)
    valid = pd.read_parquet(paths.stage_dir("prepare") / "samples_valid.parquet")
    assert set(f["split"]) == {"valid", "test"}
    v = f[f.split == "valid"]
    assert sorted(v["row_id"]) == sorted(valid["row_id"])
    cols = ["sim_max", "sim_mean", "sim_last", "covisit", "covisit_max", "ann_rank"]
    assert all(f[c].dtype == np.float32 for c in cols) and np.isfinite(f[cols].to_numpy()).all()
    assert (f["sim_max"] >= f["sim_mean"] - 1e-6).all() and f["ann_rank"].between(0, 200).all()
    # the planted topics make the target's similarity to the history informative
    assert manifests["retrieve"]["figures"]["valid_auc_sim_max"] > 0.5


@pytest.mark.parametrize(
    ("override", "msg"),
    [("retrieve.index.backend=gpu", "retrieve.index.backend"), ("retrieve.covisit.window=0", "covisit.window"),
     ("retrieve.covisit.windw=3", "unknown config key")],
)  # fmt: skip
def test_config_errors(tmp_cfg, override, msg):
    with pytest.raises(ConfigError, match=msg):
        tmp_cfg("tencentgr_real.yaml", override)


def test_unknown_factory_is_a_clear_error(tmp_cfg):
    cfg = _tgr(tmp_cfg, "retrieve.index.factory=IVFX,Flat")
    with pytest.raises(DataError, match="not a FAISS index_factory string"):
        run_until(cfg, "retrieve")


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in ((a.indptr, b.indptr), (a.nbr, b.nbr), (a.weight, b.weight)))


def test_the_stack_reads_the_covisitation_retrieve_fitted_once(tmp_path, tmp_cfg):
    """retrieve writes its two co-visitation matrices (the same as fitting them on the events before the held-out
    targets / on every event); the stack stage's rich features read them, so a changed retrieve.covisit
    setting reruns retrieve, whose new output reruns the stack, which fails naming the file when it is gone."""
    cache = tmp_path / "input" / "_cache"
    cache.mkdir(parents=True)
    wheel = fake_wheel(cache / "recbole-1.2.1-py3-none-any.whl", users=40, items=80, per_user=14)
    args = (f"data.movielens.wheel_sha256={sha256_file(wheel)}", "data.valid_users=12", "data.stack_users=20",
            "stack.rerank.lgbm.min_child_samples=5", "embed.dim=8", "embed.align.epochs=1")  # fmt: skip
    cfg = tmp_cfg("tencentgr_movielens.yaml", *args, "retrieve.covisit.window=3")
    first = run_until(cfg, "stack")
    assert any(f.startswith("covisit_last") for f in first["stack"]["figures"]["features"])
    paths = Paths(cfg)
    out, prep = paths.stage_dir("retrieve"), paths.stage_dir("prepare")
    n_rows = len(pd.read_parquet(prep / PreparedTGR.ITEMS))
    ev, pe = read_events(prep), read_events(prep, predict=True)
    events = Events(ev["user"], ev["item"], ev["action"], ev["ts"])
    train = pd.read_parquet(prep / PreparedTGR.STACK_QUERIES)
    valid = pd.read_parquet(prep / PreparedTGR.VALID)
    # the valid fold by hand: training users (a stacker query's up to its first cut), then the valid users'
    # histories and the predict users' (retrieve.fit_histories); the test fold: every event but the valid
    # targets and what follows, then the predict users' histories
    row = np.arange(len(ev["user"]))
    first_cut = train.groupby("user")["event_index"].min()
    s_cut = first_cut.reindex(ev["user"]).fillna(len(row)).to_numpy()
    v_cut = valid.set_index("user")["event_index"].reindex(ev["user"]).fillna(len(row)).to_numpy()
    is_valid = np.isin(ev["user"], valid["user"])
    hist = np.concatenate([np.flatnonzero((ev["user"] == u) & (row < c)) for u, c in
                           zip(valid["user"], valid["event_index"], strict=True)])  # fmt: skip

    def joined(*parts):
        return Events(*(np.concatenate([p[c] for p in parts]) for c in ("user", "item", "action", "ts")))

    pick = lambda m: {c: ev[c][m] for c in ev}  # noqa: E731
    fold_valid = joined(pick(~is_valid & (row < s_cut)), pick(hist), pe)
    fold_test = joined(pick(row < v_cut), pe)
    st = cfg.retrieve.covisit
    before = read_matrix(out / Retrieved.COVISIT_BEFORE, n_rows)
    assert _same(before, fit_covisit(fold_valid, n_rows, st)[0])
    assert _same(read_matrix(out / Retrieved.COVISIT_ALL, n_rows), fit_covisit(fold_test, n_rows, st)[0])
    del events
    assert len(before.nbr) > 0

    changed = tmp_cfg("tencentgr_movielens.yaml", *args, "retrieve.covisit.window=1")
    second = run_until(changed, "stack")
    assert second["retrieve"]["key"] != first["retrieve"]["key"]  # retrieve reran with the new window ...
    assert second["stack"]["key"] != first["stack"]["key"]  # ... and so did the stack, reading its output
    assert not _same(read_matrix(out / Retrieved.COVISIT_BEFORE, n_rows), before)

    (out / Retrieved.COVISIT_BEFORE).unlink()
    with pytest.raises(DataError, match="covisit_before.npz: missing"):
        run_stage(changed, "stack", force=True)


def test_read_matrix_rejects_a_bad_file(tmp_path):
    from recstack.retrieve.covisit import CovisitMatrix

    m = CovisitMatrix(np.array([0, 2, 3, 3], np.int64), np.array([1, 2, 0], np.int32), np.ones(3, np.float32))
    path = tmp_path / "m.npz"
    write_matrix(path, m)
    assert _same(read_matrix(path, 3), m)
    with pytest.raises(DataError, match=r"m.npz: indptr \(4,\).*expected indptr \(5,\)"):
        read_matrix(path, 4)
    write_matrix(path, CovisitMatrix(m.indptr, np.array([1, 2, 7], np.int32), m.weight))
    with pytest.raises(DataError, match=r"m.npz: neighbour ids outside 0..2"):
        read_matrix(path, 3)
    np.savez(path, indptr=m.indptr, nbr=m.nbr)
    with pytest.raises(DataError, match=r"m.npz: no array\(s\) \['weight'\]"):
        read_matrix(path, 3)
    with pytest.raises(DataError, match="none.npz: missing"):
        read_matrix(tmp_path / "none.npz", 3)


def test_test_queries_in_chunks_write_the_same_table(tmp_cfg, monkeypatch):
    """The test queries' candidates are merged, fused and written TEST_CHUNK queries at a time (one row group
    each): the table and the predictions equal those of one chunk."""
    import pyarrow.parquet as pq

    from recstack.tracks.tencentgr import retrieve as stage

    cfg = _tgr(tmp_cfg)
    run_until(cfg, "retrieve")
    out = Paths(cfg).stage_dir("retrieve")
    whole = pd.read_parquet(out / Retrieved.CANDIDATES)
    pred = pd.read_parquet(out / Predictions.FILE)
    n_test = whole.loc[whole["split"] == "test", "user_row"].nunique()
    assert pq.ParquetFile(out / Retrieved.CANDIDATES).num_row_groups == 3  # train, valid, test
    monkeypatch.setattr(stage, "TEST_CHUNK", 1)
    run_stage(cfg, "retrieve", force=True)
    assert pq.ParquetFile(out / Retrieved.CANDIDATES).num_row_groups == 2 + n_test
    pd.testing.assert_frame_equal(pd.read_parquet(out / Retrieved.CANDIDATES), whole)
    pd.testing.assert_frame_equal(pd.read_parquet(out / Predictions.FILE), pred)
