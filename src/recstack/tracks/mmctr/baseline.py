"""`baseline` for mmctr: smoothed CTR priors + history co-click affinity + logistic regression (the
pipeline ends in a submission from day one); predictions.parquet keyed by (split, row_id): OOF-encoded
train, valid and test rows."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from recstack.artifacts import write_table
from recstack.data.tables.predictions import predictions_table
from recstack.data.tables.prepared import read_hist, read_items, read_samples
from recstack.metrics import auc, gauc, logloss
from recstack.models.priors import PriorsBaseline
from recstack.paths import Predictions
from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    bc, prep = ctx.cfg.baseline, ctx.input_dir("prepare")
    train, valid, test = (read_samples(prep, s) for s in ("train", "valid", "test"))
    h_train, h_valid, h_test = (read_hist(prep, s) for s in ("train", "valid", "test"))
    items = read_items(prep)
    tags = np.stack(items["tags"].to_numpy())
    model = PriorsBaseline(
        len(items), tags, bc.prior_strength, bc.folds, bc.window, bc.max_iter, ctx.cfg.seed
    )
    p_train = model.fit(train, h_train)
    p_valid = model.predict(train, h_train, valid, h_valid)
    # test counts also use valid labels: the most recent labelled behaviour before test
    both = pd.concat([train, valid], ignore_index=True)
    p_test = model.predict(both, np.concatenate([h_train, h_valid]), test, h_test)
    y = valid["label"].to_numpy()
    figures = {
        "valid_auc": round(auc(y, p_valid), 5),
        "valid_logloss": round(logloss(y, p_valid), 5),
        "valid_gauc": round(gauc(valid["user_id"].to_numpy(), y, p_valid), 5),
        "train_oof_auc": round(auc(train["label"].to_numpy(), p_train), 5),
    }
    parts = {
        "train": (train["row_id"].to_numpy(), p_train, train["item_id"].to_numpy()),
        "valid": (valid["row_id"].to_numpy(), p_valid, valid["item_id"].to_numpy()),
        "test": (test["row_id"].to_numpy(), p_test, test["item_id"].to_numpy()),
    }
    write_table(ctx.out / Predictions.FILE, predictions_table(parts))
    log.info(
        "baseline valid AUC %.4f (logloss %.4f, gAUC %.4f)",
        figures["valid_auc"],
        figures["valid_logloss"],
        figures["valid_gauc"],
    )
    return figures
