"""`ensemble`: blend the configured sources, pick the best validated ranking, write the validated submission.

mmctr: `ensemble.method` fixed (typed weights, mean of logits), fit (non-negative weights summing to 1 on the
sources' logits) or rank (the same on within-split rank percentiles). Fitted weights are cross-validated on
valid with folds grouped by user: the blend's valid AUC is out-of-fold, test uses weights fitted on all of
valid (ensemble/blend.py).
tencentgr: weighted reciprocal-rank fusion of the sources' ranked lists (fixed weights, or fitted by the
same CV with a simplex-grid search for the best top-10 score).

Submission (`ensemble.submit=best`): the best validated candidate among the sources (single models: their
valid score; the stack: its out-of-fold CV score) and the blend (its CV score or, for fixed weights, its valid
score); ties go to the earlier candidate, the blend last. `submit=blend` always submits the blend."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

from recstack.stages.context import StageContext

log = logging.getLogger(__name__)


BLEND = "blend"


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
    log.info(
        "valid %s per candidate (%s weights %s): %s",
        m,
        ec.method,
        figures["weights"],
        ", ".join(f"{k}={v:.4f}" for k, v in scores.items()),
    )
    log.info(
        "submitted %s (valid %s %.4f): %s (%d test rows, validated)",
        chosen,
        m,
        scores[chosen],
        ctx.paths.stage_dir("ensemble") / figures["submission"],
        rows,
    )
    return figures
