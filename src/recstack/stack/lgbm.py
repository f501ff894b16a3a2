"""LightGBM through its scikit-learn API, fitted only under protocols that never score a row with a model
that saw the row's label.

- `cv_binary` (mmctr stacker): K folds grouped by user over the labelled rows; each fold's model is fitted on
  the other folds, early-stopped on a further held-out share of *their* users (never on the scored fold), and
  predicts its fold (out-of-fold) and the unlabelled rows (averaged over the K models).
- `fit_lambdarank` (tencentgr reranker): the number of trees is chosen by CV over the training queries, then
  one model is refitted on all of them (with `bag`, averaged with the CV models); the rows it will be scored
  on (valid users) take no part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd

from recstack.errors import DataError
from recstack.metrics import auc
from recstack.train.oof import user_folds

log = logging.getLogger(__name__)


class Predictor(Protocol):
    def predict(self, x: pd.DataFrame) -> np.ndarray: ...


# (X_fit, y_fit, X_stop, y_stop) -> a fitted model; X_stop / y_stop only decide when to stop
Fitter = Callable[[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray], Predictor]


def _params(lc: Any, seed: int) -> dict[str, Any]:
    return {
        "num_leaves": lc.num_leaves,
        "max_depth": lc.max_depth,
        "learning_rate": lc.learning_rate,
        "n_estimators": lc.n_estimators,
        "min_child_samples": lc.min_child_samples,
        "reg_lambda": lc.reg_lambda,
        "subsample": lc.subsample,
        "subsample_freq": 1 if lc.subsample < 1 else 0,
        "colsample_bytree": lc.colsample_bytree,
        "random_state": seed,
        "n_jobs": 1,  # a few thousand rows: threads cost more than they give; also keeps runs deterministic
        "deterministic": True,
        "verbose": -1,
    }


@dataclass
class BinaryModel:
    """A fitted LGBMClassifier: P(click) and its gain importances."""

    model: lgb.LGBMClassifier

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(x)[:, 1]

    @property
    def best_iteration(self) -> int:
        return int(self.model.best_iteration_ or self.model.n_estimators)

    def gain(self) -> dict[str, float]:
        g = self.model.booster_.feature_importance("gain")
        return dict(zip(self.model.booster_.feature_name(), map(float, g), strict=True))


def lgbm_binary(lc: Any, seed: int) -> Fitter:
    """The default fitter: LightGBM binary, early stopping on the logloss of the stop rows (smoother than AUC
    on a few hundred rows: AUC stopped one fold after 3 trees, another after 552)."""

    def fit(x: pd.DataFrame, y: np.ndarray, x_stop: pd.DataFrame, y_stop: np.ndarray) -> BinaryModel:
        model = lgb.LGBMClassifier(objective="binary", **_params(lc, seed))
        model.fit(
            x,
            y,
            eval_X=(x_stop,),
            eval_y=(y_stop,),
            eval_metric="binary_logloss",
            callbacks=[lgb.early_stopping(lc.early_stopping, first_metric_only=True, verbose=False)],
        )
        return BinaryModel(model)

    return fit


@dataclass
class CvResult:
    oof: np.ndarray  # (N,) out-of-fold P(click) of the labelled rows
    test: np.ndarray  # (M,) mean over the fold models
    oof_auc: float  # AUC of `oof` over all labelled rows (the figure the stacker reports)
    folds: list[dict[str, Any]]  # per fold: rows, AUC, trees
    gain: dict[str, float] = field(default_factory=dict)  # mean gain importance over folds, largest first


def cv_binary(
    x: pd.DataFrame,
    y: np.ndarray,
    users: np.ndarray,
    x_test: pd.DataFrame,
    fitter: Fitter,
    folds: int,
    inner_valid: float,
    seed: int,
) -> CvResult:
    """User-grouped K-fold CV: every labelled row is predicted by a model that never saw it, nor its user,
    neither to fit nor to early-stop."""
    if folds < 2:
        raise ValueError(f"stack.folds is {folds}; CV needs at least 2 folds")
    if not 0 < inner_valid < 1:
        raise ValueError(f"stack.inner_valid is {inner_valid}; expected a share in (0, 1)")
    y = np.asarray(y)
    fold_of = user_folds(users, folds, seed)
    oof = np.full(len(y), np.nan)
    test = np.zeros(len(x_test))
    per_fold, gains = [], []
    inner_k = max(2, round(1 / inner_valid))
    for k in range(folds):
        held = np.flatnonzero(fold_of == k)
        rest = np.flatnonzero(fold_of != k)
        stop = user_folds(users[rest], inner_k, seed + 1 + k) == 0  # early-stopping users, inside `rest`
        fit_rows, stop_rows = rest[~stop], rest[stop]
        model = fitter(x.iloc[fit_rows], y[fit_rows], x.iloc[stop_rows], y[stop_rows])
        oof[held] = model.predict(x.iloc[held])
        test += model.predict(x_test) / folds
        fold = {"fold": k, "rows": len(held), "fit_rows": len(fit_rows), "stop_rows": len(stop_rows)}
        if len(np.unique(y[held])) == 2:
            fold["auc"] = round(auc(y[held], oof[held]), 5)
        if isinstance(model, BinaryModel):
            fold["trees"] = model.best_iteration
            gains.append(model.gain())
        per_fold.append(fold)
    return CvResult(oof, test, auc(y, oof), per_fold, _mean_gain(gains))


def _mean_gain(gains: list[dict[str, float]]) -> dict[str, float]:
    if not gains:
        return {}
    mean = pd.DataFrame(gains).fillna(0.0).mean().sort_values(ascending=False)
    return {k: round(float(v), 3) for k, v in mean.items()}


# ---- lambdarank (tencentgr) ---------------------------------------------------------------------------
def _group_sizes(query: np.ndarray) -> np.ndarray:
    """Rows must be sorted by query; (Q,) rows per query in order."""
    starts = np.r_[0, np.flatnonzero(np.diff(query)) + 1]
    return np.diff(np.r_[starts, len(query)])


@dataclass
class RankModel:
    model: lgb.LGBMRanker  # refitted on all training queries (the first round's)
    trees: int  # of `model`
    cv: list[dict[str, Any]]  # per round and fold: queries, best trees, NDCG@10 of the held-out queries
    bag: list[lgb.LGBMRanker] = field(default_factory=list)  # further models averaged in when bagging

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        """The refitted model's score, or with `bag` the mean over it and the bagged models (fold models at
        their own best iteration, other rounds' refits; same objective and data, so one score scale)."""
        return np.mean([m.predict(x) for m in [self.model, *self.bag]], axis=0)

    def gain(self) -> dict[str, float]:
        g = self.model.booster_.feature_importance("gain")
        pairs = sorted(
            zip(self.model.booster_.feature_name(), map(float, g), strict=True), key=lambda t: -t[1]
        )
        return {k: round(v, 3) for k, v in pairs}


def fit_lambdarank(
    x: pd.DataFrame,
    label: np.ndarray,
    query: np.ndarray,
    weight: np.ndarray,
    lc: Any,
    folds: int,
    seed: int,
    bag: int = 0,
) -> RankModel:
    """LightGBM lambdarank; rows sorted by `query`, `label` 0/1 (the held-out target), `weight` the query's
    metric weight on every row of it (LightGBM scales each row's gradient by its weight: conversions 2.5).
    The number of trees is the mean best iteration of a query-grouped CV over these rows; then one model is
    refitted on all of them. `bag` >= 1: that many rounds (each its own fold split and LightGBM seed), and
    the prediction is the mean over every round's fold models and refit: one ~1,000-query fit is noisy (its
    valid score moves by +-0.003 with the seed alone)."""
    if len(x) == 0 or label.sum() == 0:
        raise DataError(
            "stack (tencentgr): no training query has its target among the candidates, nothing to learn from "
            "(raise data.stack_users or the retrieve sources' topk)"
        )
    if bag < 0:
        raise ValueError(f"stack.rerank.bag is {bag}; expected 0 (no bagging) or a number of rounds")
    uq, q_index = np.unique(query, return_inverse=True)
    models, cvs, trees_of = [], [], []
    for r in range(max(bag, 1)):
        r_seed = seed + 7919 * r  # round r's folds and LightGBM seed (apart from the next seeds a user tries)
        params = _params(lc, r_seed)
        cv = []
        if folds >= 2 and len(uq) >= folds:
            fold_of = np.random.default_rng(r_seed).permutation(len(uq))[q_index] % folds
            for k in range(folds):
                tr, te = fold_of != k, fold_of == k
                m = lgb.LGBMRanker(objective="lambdarank", **params)
                m.fit(
                    x[tr],
                    label[tr],
                    sample_weight=weight[tr],
                    group=_group_sizes(query[tr]),
                    eval_X=(x[te],),
                    eval_y=(label[te],),
                    eval_group=[_group_sizes(query[te])],
                    eval_at=[10],
                    callbacks=[lgb.early_stopping(lc.early_stopping, verbose=False)],
                )
                best = int(m.best_iteration_ or lc.n_estimators)
                cv.append(
                    {
                        "round": r,
                        "fold": k,
                        "queries": int(len(np.unique(query[te]))),
                        "trees": best,
                        "ndcg@10": round(float(m.best_score_["valid_0"]["ndcg@10"]), 5),
                    }
                )
                if bag:
                    models.append(m)
            trees = max(1, round(float(np.mean([f["trees"] for f in cv]))))
        else:
            trees = lc.n_estimators
        refit = lgb.LGBMRanker(objective="lambdarank", **{**params, "n_estimators": trees})
        refit.fit(x, label, sample_weight=weight, group=_group_sizes(query))
        models.insert(r, refit)  # the refits first: models[0] is round 0's
        cvs += cv
        trees_of.append(trees)
    return RankModel(models[0], trees_of[0], cvs, models[1:])
