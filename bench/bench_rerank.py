"""The tencentgr lambdarank reranker against the best single retrieval source, over LightGBM seeds and
variants, on a finished run's folders (the stack stage's own code, written to a scratch folder).

    ./run.sh all --config configs/tencentgr_movielens.yaml      # builds the retrieve candidates
    .venv/bin/python bench/bench_rerank.py [--config FILE] [--seeds 2025 1 2] [--variants base rich ...]
        [--set key=value ...]

Prints, per variant and seed, the valid score (0.31 HR@10 + 0.69 NDCG@10 on the local validation users)
and the lift over the best single source of the same run; then the mean over seeds. The seed moves only
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
from recstack.stages.stack import run_tencentgr

VARIANTS = {  # name -> stack.rerank overrides
    "base": {"rich_features": False, "depth": 0},  # the stage's features before, all candidates
    "rich": {"rich_features": True, "depth": 0},  # + the rich features, all candidates
    "rich_d100": {"rich_features": True, "depth": 100},  # the default: candidates in some source's top 100
    "rich_d200": {"rich_features": True, "depth": 200},
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
    print(f"{'variant':<10} {'seed':>5} {'valid':>7} {'best source':>18} {'lift':>7} {'trees':>5}")
    for name in args.variants:
        scores = []
        for seed in args.seeds:
            cfg = OmegaConf.merge(base, {"seed": seed, "stack": {"rerank": VARIANTS[name]}})
            with tempfile.TemporaryDirectory() as tmp:
                f = run_tencentgr(StageContext(cfg, paths, Path(tmp)))
            best = f["best_source"]
            scores.append(f["valid_score"])
            print(f"{name:<10} {seed:>5} {f['valid_score']:>7.4f} {best:>10} {f[f'valid_score_{best}']:.4f} "
                  f"{f['lift_over_best_source']:>+7.1%} {f['trees']:>5}", flush=True)  # fmt: skip
        print(f"{name:<10} {'mean':>5} {np.mean(scores):>7.4f}", flush=True)


if __name__ == "__main__":
    main()
