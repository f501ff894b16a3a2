"""`ensemble`: blend the configured sources, pick the best validated ranking, write the validated submission.

mmctr: `ensemble.method` fixed (typed weights, mean of logits), fit (non-negative weights summing to 1 on the
sources' logits) or rank (the same on within-split rank percentiles). Fitted weights are cross-validated on
valid with folds grouped by user: the blend's valid AUC is out-of-fold, test uses weights fitted on all of
valid (ensemble/blend.py).
tencentgr: weighted reciprocal-rank fusion of the sources' ranked lists (fixed weights, or fitted by the
same CV with a simplex-grid search for the best top-10 score).

Submission (`ensemble.submit=best`): the best validated candidate among the sources (single models: their
valid score; the stack: its out-of-fold CV score) and the blend (its CV score or, for fixed weights, its valid
score); ties go to the earlier candidate, the blend last. `submit=blend` always submits the blend.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recstack.artifacts import write_table
from recstack.data.tables.predictions import predictions_table, ranking_table, read_predictions, read_ranking
from recstack.data.tables.prepared import read_samples
from recstack.data.tables.tgr_prepared import read_table
from recstack.ensemble.blend import (
    blend_apply,
    blend_fixed,
    cv_blend,
    cv_rrf,
    fit_rrf_weights,
    fit_weights,
    logit,
    percentile,
    rrf_fuse,
    rrf_table,
)
from recstack.ensemble.submission import TGR_K, write_mmctr, write_tgr
from recstack.metrics import auc, logloss, tencentgr_score
from recstack.paths import Ensembled, Predictions, PreparedTGR
from recstack.stages.context import StageContext
from recstack.train.oof import user_folds

log = logging.getLogger(__name__)

BLEND = "blend"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _choose(scores: dict[str, float], submit: str) -> str:
    """The submitted candidate: the blend, or the highest validated score (first on ties)."""
    if submit == BLEND:
        return BLEND
    return max(scores, key=lambda k: (scores[k], -list(scores).index(k)))


class Blending(ABC):
    """What differs between tracks in this stage: how the sources' predictions are read, scored on valid,
    blended, and written (predictions.parquet + the track's validated submission). `P` is one candidate's
    prediction of one split: probabilities (mmctr) or a ranking with its scores (tencentgr)."""

    metric: str  # the figure name of a validated score: valid_<metric>_<candidate>
    prefix: str = ""  # of the blend's model name

    @abstractmethod
    def read(self, ctx: StageContext, sources: list[str]) -> tuple[dict[str, list[Any]], Any]:
        """Each source's prediction per split ({"valid": [...], "test": [...]}, in `sources` order) and the
        valid truth `score` takes."""

    @abstractmethod
    def score(self, valid: Any, truth: Any) -> float:
        """A candidate's validated score (higher is better)."""

    @abstractmethod
    def blend(
        self, ctx: StageContext, preds: dict[str, list[Any]], truth: Any, figures: dict
    ) -> dict[str, Any]:
        """The blend per split (its valid prediction out-of-fold where fitted); weights into `figures`."""

    def write_candidates(self, ctx: StageContext, out: dict[str, dict[str, Any]]) -> None:
        """Every candidate's predictions beside the submitted one, where the track keeps them (tencentgr)."""
        return None

    @abstractmethod
    def write(self, ctx: StageContext, chosen: dict[str, Any], truth: Any, figures: dict) -> int:
        """predictions.parquet and the validated submission of the chosen candidate; its figures into
        `figures`; returns the number of test rows (users) answered."""


def blend_and_submit(ctx: StageContext, how: Blending) -> dict[str, Any]:
    """The stage body: score each source and the blend on valid, submit the best (or the blend)."""
    ec, m = ctx.cfg.ensemble, how.metric
    sources = list(ec.sources)
    preds, truth = how.read(ctx, sources)
    scores = {s: how.score(p, truth) for s, p in zip(sources, preds["valid"], strict=True)}
    figures: dict[str, Any] = {
        "model": f"{how.prefix}{ec.method}({'+'.join(sources)})",
        "method": ec.method,
        "sources": sources,
    }  # in the order of `weights` (the report labels them)
    figures |= {f"valid_{m}_{s}": round(v, 5) for s, v in scores.items()}
    out = {s: {split: preds[split][i] for split in preds} for i, s in enumerate(sources)}
    out[BLEND] = how.blend(ctx, preds, truth, figures)
    scores[BLEND] = how.score(out[BLEND]["valid"], truth)
    figures[f"valid_{m}_{BLEND}"] = round(scores[BLEND], 5)
    chosen = _choose(scores, ec.submit)
    figures["submitted"] = chosen
    how.write_candidates(ctx, out)
    rows = how.write(ctx, out[chosen], truth, figures)
    log.info("valid %s per candidate (%s weights %s): %s", m, ec.method, figures["weights"],
             ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))  # fmt: skip
    log.info("submitted %s (valid %s %.4f): %s (%d test rows, validated)", chosen, m, scores[chosen],
             ctx.paths.stage_dir("ensemble") / figures["submission"], rows)  # fmt: skip
    return figures


# ---- mmctr: probabilities per test row -----------------------------------------------------------------
class MmctrBlending(Blending):
    metric = "auc"

    def read(self, ctx: StageContext, sources: list[str]) -> tuple[dict[str, list[Any]], Any]:
        prep = ctx.input_dir("prepare")
        self.rows = {s: read_samples(prep, s) for s in ("valid", "test")}
        self.ids = {s: t["row_id"].to_numpy() for s, t in self.rows.items()}
        preds = {split: [read_predictions(ctx.input_dir(s), split, self.ids[split]) for s in sources]
                 for split in self.ids}  # fmt: skip
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
        link = _sigmoid if ec.method == "fit" else (lambda v: v)  # percentiles blend into [0, 1] already
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


# ---- tencentgr: a ranking of the candidate pool per user ------------------------------------------------
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
        parts = {f"{name}/{split}": (c[split][0][:, :TGR_K], c[split][1][:, :TGR_K])
                 for name, c in out.items() for split in c}  # fmt: skip
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


def stage_body(how: type[Blending]) -> Callable[[StageContext], dict[str, Any]]:
    """The ensemble stage of a track whose predictions `how` reads, blends and writes (tracks/ wire it); a
    fresh adapter per run (it keeps the run's rows between its steps)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        return blend_and_submit(ctx, how())

    run.__name__ = f"ensemble_{how.__name__}"
    return run
