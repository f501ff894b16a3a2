"""`ensemble` for mmctr: the shared body (stages/ensemble.blend_and_submit) over probabilities per test
row: `ensemble.method` fixed (typed weights, mean of logits), fit (non-negative weights summing to 1 on the
sources' logits) or rank (the same on within-split rank percentiles), cross-validated on valid with folds
grouped by user; the submission is prediction.csv / .zip (`ID,Task2`), validated before it is written."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from recstack.artifacts import write_table
from recstack.data.tables.predictions import predictions_table, read_predictions
from recstack.data.tables.prepared import read_samples
from recstack.ensemble.blend import (
    blend_apply,
    blend_fixed,
    cv_blend,
    fit_weights,
    logit,
    percentile,
)
from recstack.ensemble.submission import write_mmctr
from recstack.metrics import auc, logloss
from recstack.paths import Predictions
from recstack.stages.context import StageContext
from recstack.stages.ensemble import BLEND, Blending, blend_and_submit
from recstack.train.oof import user_folds

log = logging.getLogger(__name__)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class MmctrBlending(Blending):
    metric = "auc"

    def read(self, ctx: StageContext, sources: list[str]) -> tuple[dict[str, list[Any]], Any]:
        prep = ctx.input_dir("prepare")
        self.rows = {s: read_samples(prep, s) for s in ("valid", "test")}
        self.ids = {s: t["row_id"].to_numpy() for s, t in self.rows.items()}
        preds = {
            split: [read_predictions(ctx.input_dir(s), split, self.ids[split]) for s in sources]
            for split in self.ids
        }
        return preds, self.rows["valid"]["label"].to_numpy()

    def score(self, valid: np.ndarray, truth: np.ndarray) -> float:
        return auc(truth, valid)

    def blend(
        self, ctx: StageContext, preds: dict[str, list[Any]], truth: Any, figures: dict
    ) -> dict[str, Any]:
        ec = ctx.cfg.ensemble
        if ec.method == "fixed":
            figures["weights"] = [round(float(w) / sum(ec.weights), 4) for w in ec.weights]
            return {split: blend_fixed(preds[split], list(ec.weights)) for split in preds}
        to_z = logit if ec.method == "fit" else percentile
        z = {split: np.stack([to_z(p) for p in preds[split]], 1) for split in preds}  # (N, S)
        fold_of = user_folds(self.rows["valid"]["user_id"].to_numpy(), ec.folds, ctx.cfg.seed)
        oof, fold_w = cv_blend(z["valid"], truth, fold_of)
        w = fit_weights(z["valid"], truth)
        link = sigmoid if ec.method == "fit" else (lambda v: v)  # percentiles blend into [0, 1] already
        figures["weights"] = [round(float(v), 4) for v in w]  # fitted on all of valid: used for test
        figures["weights_folds"] = [[round(float(v), 4) for v in fw] for fw in fold_w]
        return {"valid": link(oof), "test": link(blend_apply(z["test"], w))}

    def write(self, ctx: StageContext, chosen: dict[str, Any], truth: Any, figures: dict) -> int:
        ec = ctx.cfg.ensemble
        figures["valid_auc"] = round(auc(truth, chosen["valid"]), 5)
        if ec.method != "rank" or figures["submitted"] != BLEND:
            figures["valid_logloss"] = round(logloss(truth, chosen["valid"]), 5)
        items = {s: t["item_id"].to_numpy() for s, t in self.rows.items()}
        parts = {s: (self.ids[s], chosen[s], items[s]) for s in self.ids}
        write_table(ctx.out / Predictions.FILE, predictions_table(parts))
        test = self.ids["test"]
        path = write_mmctr(ctx.out, test, chosen["test"], test, ec.column, ec.zip)
        figures["submission"] = path.name
        figures["test_rows"] = len(test)
        return len(test)


def run(ctx: StageContext) -> dict[str, Any]:
    return blend_and_submit(ctx, MmctrBlending())  # a fresh adapter per run: it keeps the run's rows
