"""`ensemble` for tencentgr: the shared body (stages/ensemble.blend_and_submit) over ranked lists:
weighted reciprocal-rank fusion of the sources' rankings (fixed weights, or fitted by user-grouped CV with a
simplex-grid search for the best top-10 score); the submission is submission.json / .csv (10 distinct pool
items per predict user), validated before it is written."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recstack.artifacts import write_table
from recstack.data.tables.predictions import ranking_table, read_ranking
from recstack.data.tables.tgr_prepared import read_table
from recstack.ensemble.blend import (
    cv_rrf,
    fit_rrf_weights,
    rrf_fuse,
    rrf_table,
)
from recstack.ensemble.submission import write_tgr
from recstack.metrics import tencentgr_score
from recstack.paths import Ensembled, Predictions, PreparedTGR
from recstack.stages.context import StageContext
from recstack.stages.ensemble import Blending, blend_and_submit
from recstack.tasks import TGR_K
from recstack.train.oof import user_folds

log = logging.getLogger(__name__)


class TencentgrBlending(Blending):
    metric = "score"
    prefix = "rrf_"

    def read(self, ctx: StageContext, sources: list[str]) -> tuple[dict[str, list[Any]], Any]:
        prep = ctx.input_dir("prepare")
        self.valid = read_table(prep, PreparedTGR.VALID)
        self.pu = read_table(prep, PreparedTGR.PREDICT_USERS)
        n = {"valid": len(self.valid), "test": len(self.pu)}
        ranks = {split: [read_ranking(ctx.input_dir(s), split, n[split])[0] for s in sources] for split in n}
        self.table = {split: rrf_table(ranks[split]) for split in n}
        preds = {split: [(r, np.zeros(r.shape)) for r in ranks[split]] for split in n}
        return preds, self.valid["item"].to_numpy()

    def score(self, valid: tuple[np.ndarray, np.ndarray], truth: np.ndarray) -> float:
        return tencentgr_score(valid[0][:, :TGR_K], truth, k=TGR_K)["score"]

    def blend(
        self, ctx: StageContext, preds: dict[str, list[Any]], truth: Any, figures: dict
    ) -> dict[str, Any]:
        ec, table = ctx.cfg.ensemble, self.table
        if ec.method == "fixed":
            w = np.asarray(ec.weights, np.float64) / np.sum(ec.weights)
            out = {split: rrf_fuse(*table[split], w, TGR_K) for split in table}
        else:  # fit / rank: RRF is rank-based already; weights fitted by user-grouped CV on valid
            fold_of = user_folds(self.valid["user"].to_numpy(), ec.folds, ctx.cfg.seed)
            top, fold_w = cv_rrf(*table["valid"], truth, fold_of, TGR_K)
            w = fit_rrf_weights(*table["valid"], truth, TGR_K)
            out = {"valid": (top, np.zeros(top.shape)), "test": rrf_fuse(*table["test"], w, TGR_K)}
            figures["weights_folds"] = [[round(float(v), 4) for v in fw] for fw in fold_w]
        figures["weights"] = [round(float(v), 4) for v in w]
        return out

    def write_candidates(self, ctx: StageContext, out: dict[str, dict[str, Any]]) -> None:
        parts = {
            f"{name}/{split}": (c[split][0][:, :TGR_K], c[split][1][:, :TGR_K])
            for name, c in out.items()
            for split in c
        }
        write_table(ctx.out / Ensembled.RANKINGS, ranking_table(parts))

    def write(self, ctx: StageContext, chosen: dict[str, Any], truth: Any, figures: dict) -> int:
        prep = ctx.input_dir("prepare")
        parts = {split: (chosen[split][0][:, :TGR_K], chosen[split][1][:, :TGR_K]) for split in chosen}
        m = tencentgr_score(parts["valid"][0], truth, k=TGR_K)
        figures |= {f"valid_{k}": round(float(v), 5) for k, v in m.items()}
        write_table(ctx.out / Predictions.FILE, ranking_table(parts))
        creative = (
            pq.read_table(prep / PreparedTGR.ITEMS, columns=["creative_id"]).column("creative_id").to_numpy()
        )
        pool = (
            pq.read_table(prep / PreparedTGR.CANDIDATES, columns=["creative_id"])
            .column("creative_id")
            .to_numpy()
        )
        # the answered users follow the ranking's queries (rows of predict_users); checked against prepare's list
        answered = self.pu["raw_user_id"].to_numpy()[np.arange(len(parts["test"][0]))].tolist()
        expected = read_table(prep, PreparedTGR.PREDICT_USERS)["raw_user_id"].tolist()
        path = write_tgr(ctx.out, creative[parts["test"][0]], answered, pool, expected)
        figures |= {"submission": path.name, "test_users": len(self.pu)}
        return len(self.pu)


def run(ctx: StageContext) -> dict[str, Any]:
    return blend_and_submit(ctx, TencentgrBlending())  # a fresh adapter per run: it keeps the run's rows
