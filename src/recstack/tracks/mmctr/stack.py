"""`stack` for mmctr: binary LightGBM on the valid/test predictions of `stack.sources` (all trained on
train only, so those predictions are out-of-sample) plus cheap features (stack/features.py) and, when the
track's `retrieve` stage wrote them, its retrieval features. The stacker is cross-validated on valid with
folds grouped by user: the reported valid AUC is the out-of-fold AUC over valid, the test prediction the mean
of the fold models. K-fold OOF level-1 predictions on train (`rank.folds`) would cost K trainings of every
ranker, and the rankers are most of mmctr's time in the default run on 2 cores (bench/README.md "The default
run and the suite from a fresh clone"), so CV on valid it is."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recstack.artifacts import write_json, write_table
from recstack.data.tables.predictions import predictions_table, read_predictions
from recstack.data.tables.prepared import read_samples
from recstack.ensemble.blend import logit
from recstack.errors import DataError
from recstack.metrics import auc
from recstack.paths import MANIFEST, Predictions, Retrieved, Stacked
from recstack.stack.features import (
    mmctr_features,
    user_relative,
)
from recstack.stack.lgbm import cv_binary, lgbm_binary
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def _retrieval_features(ctx: StageContext) -> pd.DataFrame | None:
    folder = ctx.input_dir("retrieve")
    path = folder / Retrieved.FEATURES
    if not (folder / MANIFEST).is_file() or not path.is_file():
        log.info("no retrieval features (%s absent): stacking without them", path)
        return None
    df = pq.read_table(path).to_pandas()
    missing = {"split", "row_id"} - set(df.columns)
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(sorted(missing))}; expected split, row_id, features"
        )
    keys = df[["split", "row_id"]]
    if keys.duplicated().any():
        r = int(np.flatnonzero(keys.duplicated())[0])
        raise DataError(f"{path}: row {r} repeats (split, row_id) {tuple(keys.iloc[r])}")
    log.info(
        "retrieval features from %s: %s",
        path,
        ", ".join(c for c in df.columns if c not in ("split", "row_id")),
    )
    return df


def _mmctr_matrix(
    ctx: StageContext, split: str, rows: pd.DataFrame, retrieval: pd.DataFrame | None
) -> pd.DataFrame:
    sc, ids = ctx.cfg.stack, rows["row_id"].to_numpy()
    x = pd.DataFrame(
        {f"p_{s}": logit(read_predictions(ctx.input_dir(s), split, ids)) for s in sc.sources},
        index=pd.Index(ids, name="row_id"),
    )
    if sc.user_relative:
        x = x.join(user_relative(x, rows["user_id"].to_numpy(), list(x.columns)))
    if sc.features:
        x = x.join(mmctr_features(ctx.input_dir("prepare"), split))
    if retrieval is not None:
        part = retrieval[retrieval["split"] == split].drop(columns="split").set_index("row_id")
        part = part.reindex(ids)
        if part.isna().all(axis=1).any():
            r = int(ids[np.flatnonzero(part.isna().all(axis=1).to_numpy())[0]])
            raise DataError(
                f"{ctx.input_dir('retrieve') / Retrieved.FEATURES}: split {split} has no row_id {r}"
            )
        x = x.join(part.astype(np.float32))
    return x


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, sc, prep = ctx.cfg, ctx.cfg.stack, ctx.input_dir("prepare")
    if not sc.sources:
        raise DataError(
            "stack.sources is empty: name the level-1 stages to stack (e.g. [baseline, rank_din])"
        )
    valid, test = read_samples(prep, "valid"), read_samples(prep, "test")
    retrieval = _retrieval_features(ctx)
    x_valid = _mmctr_matrix(ctx, "valid", valid, retrieval)
    x_test = _mmctr_matrix(ctx, "test", test, retrieval)
    y = valid["label"].to_numpy()
    log.info(
        "stacker: %d valid rows (%d users), %d test rows, %d features: %s",
        len(valid),
        valid["user_id"].nunique(),
        len(test),
        x_valid.shape[1],
        ", ".join(x_valid.columns),
    )
    cv = cv_binary(
        x_valid,
        y,
        valid["user_id"].to_numpy(),
        x_test,
        lgbm_binary(sc.lgbm, cfg.seed),
        sc.folds,
        sc.inner_valid,
        cfg.seed,
    )
    singles = {s: round(auc(y, x_valid[f"p_{s}"].to_numpy()), 5) for s in sc.sources}
    best = max(singles, key=singles.get)
    figures: dict[str, Any] = {
        "model": "lgbm_binary",
        "valid_auc": round(cv.oof_auc, 5),  # out-of-fold over valid: the CV score
        "valid_auc_fold_mean": round(float(np.mean([f["auc"] for f in cv.folds if "auc" in f])), 5),
        **{f"valid_auc_{s}": v for s, v in singles.items()},
        "best_single": best,
        "gain_over_best_single": round(cv.oof_auc - singles[best], 5),
        "protocol": f"{sc.folds}-fold CV on valid grouped by user; early stopping on held-out users inside each fold",
        "features": list(x_valid.columns),
        "retrieval_features": retrieval is not None,
        "trees": [f.get("trees") for f in cv.folds],
        "rows": len(valid) + len(test),
        "gain": cv.gain,
    }
    parts = {
        "valid": (valid["row_id"].to_numpy(), cv.oof, valid["item_id"].to_numpy()),
        "test": (test["row_id"].to_numpy(), cv.test, test["item_id"].to_numpy()),
    }
    write_table(ctx.out / Predictions.FILE, predictions_table(parts))
    write_json(ctx.out / Stacked.IMPORTANCE, {"gain": cv.gain, "folds": cv.folds})
    log.info(
        "stack valid AUC %.4f (out-of-fold, %d folds by user); best single %s %.4f (%+.4f)",
        cv.oof_auc,
        sc.folds,
        best,
        singles[best],
        cv.oof_auc - singles[best],
    )
    log.info("feature importance (gain): %s", ", ".join(f"{k}={v:.1f}" for k, v in cv.gain.items()))
    return figures
