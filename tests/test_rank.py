"""The rank stages (DIN, QIN, Transformer-DCN) on tiny data: outputs, OOF folds, resume after an interruption, bad input."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.data.tables.ranking import read_rank_rows
from recstack.errors import DataError
from recstack.metrics import auc
from recstack.paths import Paths, Prepared
from recstack.pipeline import run_stage, run_until
from recstack.train import trainer
from recstack.train.oof import user_folds

from conftest import ROOT, SMALL_SYNTH

TINY_RANK = (
    "rank.multimodal=provided",
    "rank.epochs=2",
    "rank.progress=false",
    "rank.din.emb_dim=8",
    "rank.din.attention_units=[16]",
    "rank.din.dnn_units=[16]",
    "rank.din.batch_size=128",
    "rank.qin.emb_dim=8",
    "rank.qin.layers=2",
    "rank.qin.attention_len=8",
    "rank.qin.batch_size=128",
    "rank.transformer_dcn.emb_dim=8",
    "rank.transformer_dcn.ffn=16",
    "rank.transformer_dcn.max_len=8",
    "rank.transformer_dcn.summary_last=2",
    "rank.transformer_dcn.dnn_units=[16]",
    "rank.transformer_dcn.batch_size=128",
    "rank.transformer_dcn.lr=0.002",
)


@pytest.fixture
def rank_cfg(tmp_cfg):
    def make(*overrides):
        return tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, *TINY_RANK, *overrides)

    return make


def _preds(cfg, stage):
    return pd.read_parquet(Paths(cfg).stage_dir(stage) / "predictions.parquet")


def test_rankers_write_predictions_metrics_curve_and_feed_the_ensemble(rank_cfg):
    cfg = rank_cfg(
        "ensemble.sources=[baseline,rank_din,rank_qin,rank_transformer_dcn]",
        "ensemble.method=fixed",
        "ensemble.weights=[1,1,1,1]",
    )
    manifests = run_until(cfg, "ensemble")
    assert list(manifests) == [
        "build", "prepare", "baseline", "rank_din", "rank_qin", "rank_transformer_dcn", "ensemble"
    ]  # fmt: skip
    for stage in ("rank_din", "rank_qin", "rank_transformer_dcn"):
        figs = manifests[stage]["figures"]
        assert figs["multimodal"] == "provided:item_emb_d128"
        # the synthetic builder keeps test labels aside: scored in metrics.json, never in the printed figures
        assert not any(k.startswith("test_") for k in figs)
        folder = Paths(cfg).stage_dir(stage)
        preds = _preds(cfg, stage)
        # both AUCs recomputed from the scored rows and the labels (valid: prepared; test: the builder's truth)
        valid = pd.read_parquet(Paths(cfg).stage_dir("prepare") / "samples_valid.parquet")
        truth = pd.read_parquet(Paths(cfg).raw_mmctr.test_truth).set_index("ID")["label"]
        by_split = {k: g.set_index("query")["score"] for k, g in preds.groupby("split")}
        assert figs["valid_auc"] == pytest.approx(
            auc(valid["label"], by_split["valid"].reindex(valid["row_id"])), abs=1e-4
        )
        test_auc = json.loads((folder / "metrics.json").read_text())["test_auc"]
        assert test_auc == pytest.approx(
            auc(truth.reindex(by_split["test"].index), by_split["test"]), abs=1e-4
        )
        assert sorted(preds["split"].unique()) == ["test", "valid"]  # folds=0: no in-sample train rows
        assert len(preds) == 300 and np.isfinite(preds["score"]).all()
        curve = pd.read_csv(folder / "curve.csv")
        assert list(curve["epoch"]) == [1, 2] and {"train_loss", "valid_auc", "lr"} <= set(curve.columns)
        assert (folder / "model.pt").is_file() and json.loads((folder / "metrics.json").read_text())["folds"]
        assert not Paths(cfg).resume_dir(stage).exists()  # removed once finished
    assert set(manifests["ensemble"]["figures"]) >= {
        "valid_auc_rank_din", "valid_auc_rank_qin", "valid_auc_rank_transformer_dcn"
    }  # fmt: skip


def test_transformer_dcn_oof_folds_and_din_with_a_dcn_head(rank_cfg):
    """The winner's model gets OOF train predictions from the registry like DIN; DIN's head is a config
    option (rank.din.head=dcn: the parallel cross network), a different model on the same stage."""
    cfg = rank_cfg("rank.folds=2", "rank.epochs=1")
    run_until(cfg, "rank_transformer_dcn")
    preds = _preds(cfg, "rank_transformer_dcn")
    train = pd.read_parquet(Paths(cfg).stage_dir("prepare") / "samples_train.parquet", columns=["row_id"])
    got = preds[preds["split"] == "train"]["query"].sort_values().to_numpy()
    assert np.array_equal(got, np.sort(train["row_id"].to_numpy()))
    mlp = rank_cfg("rank.epochs=1")
    dcn = rank_cfg("rank.epochs=1", "rank.din.head=dcn", "rank.din.cross_layers=2")
    a, b = (run_until(c, "rank_din")["rank_din"] for c in (mlp, dcn))
    assert a["key"] != b["key"]  # the head is part of the stage's cache key
    state = __import__("torch").load(Paths(dcn).stage_dir("rank_din") / "model.pt", map_location="cpu")
    state = state.get("model", state) if isinstance(state, dict) else state
    assert any(k.startswith("dcn.cross.layers.1.") for k in state) and not any(
        k.startswith("dnn.") for k in state
    )


def test_oof_folds_predict_every_train_row_grouped_by_user(rank_cfg):
    cfg = rank_cfg("rank.folds=2", "rank.epochs=1")
    figs = run_until(cfg, "rank_din")["rank_din"]["figures"]
    preds = _preds(cfg, "rank_din")
    train = pd.read_parquet(Paths(cfg).stage_dir("prepare") / "samples_train.parquet", columns=["row_id"])
    got = preds[preds["split"] == "train"]["query"].sort_values().to_numpy()
    assert np.array_equal(got, np.sort(train["row_id"].to_numpy()))
    assert 0 <= figs["train_oof_auc"] <= 1
    metrics = json.loads((Paths(cfg).stage_dir("rank_din") / "metrics.json").read_text())
    assert [f["fold"] for f in metrics["folds"]] == [0, 1]
    assert (Paths(cfg).stage_dir("rank_din") / "model_fold1.pt").is_file()
    users = np.repeat(np.arange(50), 3)
    folds = user_folds(users, 4, seed=1)
    assert all(len(set(folds[users == u])) == 1 for u in range(50)) and set(folds) == {0, 1, 2, 3}


def test_interrupted_training_resumes_and_ends_as_an_uninterrupted_run(
    rank_cfg, tmp_path, monkeypatch, caplog
):
    whole = rank_cfg("rank.epochs=3", "rank.patience=5")
    run_until(whole, "rank_din")
    expected = _preds(whole, "rank_din")

    cfg = rank_cfg("rank.epochs=3", "rank.patience=5", f"output_root={tmp_path / 'interrupted'}")
    run_until(cfg, "prepare")
    real_predict, calls = trainer.predict, []

    def crash_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the valid evaluation of epoch 2, before its checkpoint
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(trainer, "predict", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run_stage(cfg, "rank_din")
    assert not Paths(cfg).stage_dir("rank_din").exists()
    assert (Paths(cfg).resume_dir("rank_din") / "all.pt").is_file()
    monkeypatch.setattr(trainer, "predict", real_predict)
    caplog.set_level("INFO")
    run_stage(cfg, "rank_din")
    assert "resumed after epoch 1" in caplog.text
    got = _preds(cfg, "rank_din")
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), atol=1e-6)
    curve = pd.read_csv(Paths(cfg).stage_dir("rank_din") / "curve.csv")
    assert list(curve["epoch"]) == [1, 2, 3]


def test_nan_in_embedding_matrix_names_file_and_row(rank_cfg):
    cfg = rank_cfg()
    run_until(cfg, "prepare")
    path = Paths(cfg).stage_dir("prepare") / Prepared.embedding("item_emb_d128")
    m = np.load(path)
    m[7, 3] = np.nan
    m[9, 0] = np.inf
    np.save(path, m)
    with pytest.raises(DataError, match=r"emb_item_emb_d128\.npy: embedding row 7 \(item_id 7\) dimension 3"):
        run_stage(cfg, "rank_din")
    assert not Paths(cfg).stage_dir("rank_din").exists()


def _rewrite(path, column, fn):
    table = pq.read_table(path)
    i = table.schema.get_field_index(column)
    pq.write_table(table.set_column(i, column, fn(table.column(column))), path)


def test_labels_outside_01_and_ids_beyond_vocabulary_are_errors(rank_cfg):
    cfg = rank_cfg()
    run_until(cfg, "prepare")
    prep = Paths(cfg).stage_dir("prepare")
    path = prep / Prepared.samples("train")
    n_items = len(pd.read_parquet(prep / "items.parquet"))

    def bad_label(col):
        y = col.to_numpy().copy()
        y[3] = 2.0
        return pa.array(y)

    _rewrite(path, "label", bad_label)
    with pytest.raises(
        DataError, match=r"samples_train\.parquet: column 'label' row 3 is 2\.0; expected 0 or 1"
    ):
        read_rank_rows(prep, "train", n_items)

    def bad_hist(col):
        col = col.combine_chunks()
        h = col.values.to_numpy().reshape(len(col), -1).copy()
        h[4, -1] = n_items + 5
        return pa.FixedSizeListArray.from_arrays(pa.array(h.reshape(-1)), h.shape[1])

    path = prep / Prepared.samples("valid")
    _rewrite(path, "hist", bad_hist)
    with pytest.raises(DataError, match=rf"column 'hist' row 4 has id {n_items + 5} outside the vocabulary"):
        read_rank_rows(prep, "valid", n_items)


def test_multimodal_choice_is_explicit(rank_cfg):
    cfg = rank_cfg("rank.multimodal=none", "rank.epochs=1")
    assert run_until(cfg, "rank_qin")["rank_qin"]["figures"]["multimodal"] == "none"
    with pytest.raises(DataError, match=r"emb_nope\.npy: not found \(rank\.provided=nope\); prepare wrote"):
        run_stage(rank_cfg("rank.provided=nope"), "rank_qin")


def test_kill_9_mid_stage_then_rerun_resumes_to_the_same_predictions(rank_cfg, tmp_path):
    """A real SIGKILL (no `finally` runs) in a child process after epoch 1's checkpoint: the rerun removes
    the dead run's temporary folder, resumes, and ends with an uninterrupted run's predictions."""
    import os
    import signal
    import subprocess
    import sys
    import time

    whole = rank_cfg("rank.epochs=8", "rank.patience=9")
    run_until(whole, "rank_din")
    expected = _preds(whole, "rank_din")

    out = tmp_path / "killed"
    cfg = rank_cfg("rank.epochs=8", "rank.patience=9", f"output_root={out}")
    run_until(cfg, "prepare")
    args = [f"{k}={v}" for k, v in (("input_root", cfg.input_root), ("output_root", out))]
    overrides = [*SMALL_SYNTH, *TINY_RANK, "rank.epochs=8", "rank.patience=9", *args]
    config = str(ROOT / "configs" / "mmctr_synthetic.yaml")
    child = subprocess.Popen([sys.executable, "-m", "recstack", "rank_din", "--config", config, *overrides],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)  # fmt: skip
    resume = Paths(cfg).resume_dir("rank_din") / "all.pt"
    deadline = time.time() + 240
    while not resume.is_file() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, "the child finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert list(Paths(cfg).run_dir.glob(".rank_din.tmp-*"))  # what kill -9 leaves behind
    assert not (Paths(cfg).stage_dir("rank_din") / "manifest.json").is_file()
    run_until(cfg, "rank_din")
    assert not list(Paths(cfg).run_dir.glob(".rank_din.tmp-*"))
    got = _preds(cfg, "rank_din")
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), atol=1e-6)
