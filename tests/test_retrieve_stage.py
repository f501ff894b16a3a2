"""The retrieve stage end to end through the pipeline entry point: tencentgr (tiny hand-made set, with and
without a fake seqrec stage) and mmctr (tiny synthetic set); config errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recstack.artifacts import write_table
from recstack.config import ConfigError
from recstack.data.raw.tencentgr_platform import write_platform
from recstack.data.tables.predictions import ranking_table
from recstack.errors import DataError
from recstack.paths import Paths, Predictions, PreparedTGR, Retrieved
from recstack.pipeline import Stage, run_until
from recstack.tracks import TRACKS

from conftest import SMALL_SYNTH
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
    train = pd.read_parquet(out / Retrieved.QUERIES)
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
