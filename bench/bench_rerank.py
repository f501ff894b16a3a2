"""The tencentgr lambdarank reranker against the best single retrieval source, over LightGBM seeds and
variants, on a finished run's folders (the stack stage's own code, written to a scratch folder).

    ./run.sh all --config configs/tencentgr_movielens.yaml      # builds the retrieve candidates
    .venv/bin/python bench/bench_rerank.py [--config FILE] [--seeds 2025 1 2] [--variants base rich ...]
        [--set key=value ...]

Prints, per variant and seed, the valid score (0.31 HR@10 + 0.69 NDCG@10 on the local validation users)
and the lift over the best single source of the same run, and the CV NDCG@10 over the training queries
(mean over folds and rounds, each at its early-stopped best: a second, optimistic but label-honest view
from 3x the valid users' queries); then the mean and std over seeds and the mean's lift over each source. The seed moves only
the reranker (its CV folds and bagging): the candidates are the run's. No local_truth is read.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from recstack.config import load_config
from recstack.paths import Paths
from recstack.stages.context import StageContext
from recstack.tracks.tencentgr.stack import run as run_tencentgr

FOURTH = {"skip_sources": [], "agreement": False, "bag": 0, "taste": False}  # the earlier stage
VARIANTS = {  # name -> stack.rerank overrides
    "base": {**FOURTH, "rich_features": False, "depth": 0},  # the stage's features before, all candidates
    "rich": {**FOURTH, "rich_features": True, "depth": 0},  # + the rich features, all candidates
    "rich_d100": {**FOURTH, "rich_features": True, "depth": 100},  # the earlier default
    "rich_d200": {**FOURTH, "rich_features": True, "depth": 200},
    # one change at a time over rich_d100, then together
    "no_merged": {**FOURTH, "skip_sources": ["merged"]},  # the fusion tuned on these queries: no feature
    "agree": {**FOURTH, "agreement": True},  # + cross-source agreement, per-query z-scores
    "bag": {**FOURTH, "bag": 1},  # + the CV fold models averaged in
    "bag3": {**FOURTH, "bag": 3},  # 3 rounds of CV fold models + refit averaged
    "taste": {**FOURTH, "taste": True},  # + click rate, popularity against the user's history
    "bag3_nomerged": {**FOURTH, "bag": 3, "skip_sources": ["merged"]},
    "bag_taste": {**FOURTH, "bag": 1, "taste": True},
    "default": {},  # the config's defaults (rich_d100 + bag 1)
    "all": {"skip_sources": ["merged"], "agreement": True, "taste": True, "bag": 1},  # every change together
    "all_bag3": {"skip_sources": ["merged"], "agreement": True, "taste": True, "bag": 3},
    "default_d200": {"depth": 200},
    # the candidate's own history (clicks there, last action, events / days since last seen)
    "history": {"history_features": True},  # on by default while it was measured (0.5293 vs 0.5304 without)
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tencentgr_movielens.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2025, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    args = ap.parse_args()
    base = load_config(args.config, args.overrides)
    paths = Paths(base)
    print(
        f"{'variant':<10} {'seed':>5} {'valid':>7} {'best source':>18} {'lift':>7} {'trees':>5} {'cv ndcg':>7}"
    )
    for name in args.variants:
        scores = []
        for seed in args.seeds:
            cfg = OmegaConf.merge(base, {"seed": seed, "stack": {"rerank": VARIANTS[name]}})
            with tempfile.TemporaryDirectory() as tmp:
                f = run_tencentgr(StageContext(cfg, paths, Path(tmp)))
            best = f["best_source"]
            scores.append(f["valid_score"])
            print(f"{name:<10} {seed:>5} {f['valid_score']:>7.4f} {best:>10} {f[f'valid_score_{best}']:.4f} "
                  f"{f['lift_over_best_source']:>+7.1%} {f['trees']:>5} {np.mean(f['cv_ndcg@10']):>7.4f}", flush=True)  # fmt: skip
        mean = np.mean(scores)
        vs = "  ".join(f"vs {s} {mean / f[f'valid_score_{s}'] - 1:+.1%}" for s in f["sources"]
                       if f[f"valid_score_{s}"] > 0)  # fmt: skip
        print(f"{name:<10} {'mean':>5} {mean:>7.4f} +- {np.std(scores):.4f}  {vs}", flush=True)


if __name__ == "__main__":
    main()
