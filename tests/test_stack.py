"""The mmctr LightGBM stacker: its CV never scores a row with a model that saw the row's label (nor its
user), a planted leak feature cannot raise the CV score it reports, and the stage end to end."""

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from recstack.config import LgbmConfig
from recstack.metrics import auc
from recstack.paths import Paths
from recstack.pipeline import Stage, run_until
from recstack.stack.lgbm import cv_binary, lgbm_binary
from recstack.tracks import TRACKS

from conftest import SMALL_SYNTH


def _rows(n_users=300, per_user=4, seed=0):
    """Users with `per_user` rows each, a weak real signal, and a unique random key per row."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    signal = rng.normal(size=len(users))
    y = (rng.random(len(users)) < 1 / (1 + np.exp(-1.2 * signal))).astype(int)
    x = pd.DataFrame({"signal": signal, "key": rng.permutation(len(users)).astype(float)})
    return x, y, users


@dataclass
class Memorizer:
    """Predicts the exact label of a key it was fitted on, 0.5 for any other key: scores a row perfectly
    exactly when the protocol let the model see that row's label."""

    table: dict

    def predict(self, x):
        return np.array([self.table.get(k, 0.5) for k in x["key"]])


def test_cv_never_fits_nor_early_stops_on_the_scored_rows_or_their_users():
    x, y, users = _rows()
    seen = []

    def spy(x_fit, y_fit, x_stop, y_stop):
        seen.append((set(x_fit["key"]), set(x_stop["key"])))
        return Memorizer(
            {**dict(zip(x_fit["key"], y_fit, strict=True)), **dict(zip(x_stop["key"], y_stop, strict=True))}
        )

    cv = cv_binary(x, y, users, x.iloc[:5], spy, folds=5, inner_valid=0.2, seed=3)
    user_of = dict(zip(x["key"], users, strict=True))
    for fit_keys, stop_keys in seen:
        assert fit_keys.isdisjoint(stop_keys)
        assert {user_of[k] for k in fit_keys}.isdisjoint({user_of[k] for k in stop_keys})
    # every row is scored by a model that never saw its label: the memoriser can only say 0.5
    assert np.all(cv.oof == 0.5) and cv.oof_auc == pytest.approx(0.5)
    # and the same memoriser scored in-sample (a leaky protocol) would be perfect: the test can fail
    leaky = Memorizer(dict(zip(x["key"], y, strict=True))).predict(x)
    assert auc(y, leaky) == 1.0


def test_planted_leak_feature_does_not_raise_the_reported_cv_auc():
    x, y, users = _rows(n_users=250)
    # settings that let LightGBM memorise single rows (a leaky protocol would reward the key feature)
    lc = LgbmConfig(num_leaves=63, max_depth=-1, learning_rate=0.1, n_estimators=300, early_stopping=300,
                    min_child_samples=1, reg_lambda=0.0, subsample=1.0, colsample_bytree=1.0)  # fmt: skip
    fit = lgbm_binary(lc, seed=0)
    honest = cv_binary(x[["signal"]], y, users, x[["signal"]].iloc[:3], fit, 5, 0.2, seed=1).oof_auc
    planted = cv_binary(x, y, users, x.iloc[:3], fit, 5, 0.2, seed=1).oof_auc
    assert planted <= honest + 0.01
    in_sample = fit(x, y, x, y).predict(x)  # the protocol the CV must not be: fitted on the scored rows
    assert auc(y, in_sample) > honest + 0.15


def test_cv_rejects_bad_settings():
    x, y, users = _rows(n_users=10)
    with pytest.raises(ValueError, match="at least 2 folds"):
        cv_binary(x, y, users, x, lgbm_binary(LgbmConfig(), 0), 1, 0.2, 0)
    with pytest.raises(ValueError, match="inner_valid"):
        cv_binary(x, y, users, x, lgbm_binary(LgbmConfig(), 0), 3, 1.5, 0)


def _fake_retrieve_mmctr(ctx):
    """A stand-in for the retrieve stage's mmctr features (paths.Retrieved.FEATURES contract)."""
    from recstack.artifacts import write_table
    from recstack.data.tables.prepared import read_samples

    parts = []
    for split in ("valid", "test"):
        rows = read_samples(ctx.input_dir("prepare"), split)
        parts.append(pd.DataFrame({"split": split, "row_id": rows["row_id"].to_numpy(),
                                   "sim_max": np.linspace(0, 1, len(rows), dtype=np.float32)}))  # fmt: skip
    import pyarrow as pa

    write_table(ctx.out / "features.parquet", pa.Table.from_pandas(pd.concat(parts), preserve_index=False))
    return {}


@pytest.fixture
def stack_cfg(tmp_cfg):
    return tmp_cfg("mmctr_synthetic.yaml", *SMALL_SYNTH, "stack.sources=[baseline]", "stack.folds=3")


def test_stage_writes_oof_valid_and_mean_test_predictions_with_importances(stack_cfg, caplog, monkeypatch):
    caplog.set_level("INFO")
    without = {k: v for k, v in TRACKS["mmctr"].stages.items() if k != "retrieve"}
    monkeypatch.setattr(TRACKS["mmctr"], "stages", without)
    figs = run_until(stack_cfg, "stack")["stack"]["figures"]
    assert "no retrieval features" in caplog.text  # the track has no retrieve stage: skipped, logged
    folder = Paths(stack_cfg).stage_dir("stack")
    preds = pd.read_parquet(folder / "predictions.parquet")
    assert sorted(preds["split"].unique()) == ["test", "valid"] and np.isfinite(preds["score"]).all()
    valid = pd.read_parquet(Paths(stack_cfg).stage_dir("prepare") / "samples_valid.parquet")
    p = preds[preds["split"] == "valid"].set_index("query")["score"].reindex(valid["row_id"]).to_numpy()
    assert figs["valid_auc"] == pytest.approx(auc(valid["label"], p), abs=1e-4)  # the OOF predictions
    assert figs["valid_auc_baseline"] > 0.5 and figs["features"][0] == "p_baseline"
    assert {"tag_share", "item_train_clicks", "hist_len"} <= set(figs["gain"])
    assert json.loads((folder / "importance.json").read_text())["gain"] == figs["gain"]
    assert "feature importance (gain)" in caplog.text


def test_stage_joins_the_retrieve_stage_features(stack_cfg, monkeypatch):
    stages = {k: v for k, v in TRACKS["mmctr"].stages.items() if k != "retrieve"}
    ordered = {}
    for name, st in stages.items():
        if name == "stack":
            ordered["retrieve"] = Stage("retrieve", _fake_retrieve_mmctr, ("prepare",), ("seed",), "fake")
        ordered[name] = st
    monkeypatch.setattr(TRACKS["mmctr"], "stages", ordered)
    manifests = run_until(stack_cfg, "stack")
    assert "retrieve" in manifests["stack"]["inputs"]
    figs = manifests["stack"]["figures"]
    assert figs["retrieval_features"] and "sim_max" in figs["features"]


def test_user_relative_features_use_only_the_users_own_rows():
    from recstack.stack.features import user_relative

    x = pd.DataFrame({"p": [0.1, 0.5, 0.3, 2.0]}, index=[10, 11, 12, 13])
    rel = user_relative(x, np.array([1, 1, 1, 2]), ["p"])
    assert rel["p_minus_user_mean"].tolist() == pytest.approx([-0.2, 0.2, 0.0, 0.0])
    assert rel["p_user_rank"].tolist() == pytest.approx([1 / 3, 1.0, 2 / 3, 1.0])
    assert rel["user_rows"].tolist() == [3, 3, 3, 1] and list(rel.index) == [10, 11, 12, 13]
