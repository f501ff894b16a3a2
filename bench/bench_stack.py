"""The mmctr stacker against its level-1 models, with ablations, on a finished run's folders.

    ./run.sh all --config configs/mmctr_movielens.yaml          # builds the level-1 predictions
    .venv/bin/python bench/bench_stack.py [--config FILE] [key=value ...]

Prints, per stacker variant, the valid AUC it reports (out-of-fold over valid, user-grouped CV) and the test
AUC from the builder's hidden labels (local_truth/), next to each level-1 model's valid and test AUC. The
test figures are for this report only: no choice is made on them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from recstack.config import load_config
from recstack.data.tables.predictions import read_predictions
from recstack.data.tables.prepared import read_samples
from recstack.ensemble.blend import logit
from recstack.metrics import auc
from recstack.paths import Paths
from recstack.stack.features import mmctr_features, user_relative
from recstack.stack.lgbm import cv_binary, lgbm_binary


def matrix(paths: Paths, sources: list[str], split: str, features: bool, relative: bool):
    prep = paths.stage_dir("prepare")
    rows = read_samples(prep, split)
    ids = rows["row_id"].to_numpy()
    x = pd.DataFrame({f"p_{s}": logit(read_predictions(paths.stage_dir(s), split, ids)) for s in sources},
                     index=pd.Index(ids, name="row_id"))  # fmt: skip
    if relative:
        x = x.join(user_relative(x, rows["user_id"].to_numpy(), list(x.columns)))
    if features:
        x = x.join(mmctr_features(prep, split))
    return rows, x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/mmctr_movielens.yaml")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    paths, sc = Paths(cfg), cfg.stack
    sources = list(sc.sources)
    truth = pd.read_parquet(paths.raw_mmctr.test_truth).set_index("ID")["label"]
    print("| model | valid AUC | test AUC | time |\n| --- | ---: | ---: | ---: |")
    valid, xv = matrix(paths, sources, "valid", False, False)
    test, xt = matrix(paths, sources, "test", False, False)
    y, y_test = valid["label"].to_numpy(), truth.reindex(test["row_id"]).to_numpy()
    for s in sources:
        print(f"| {s} | {auc(y, xv[f'p_{s}']):.4f} | {auc(y_test, xt[f'p_{s}']):.4f} | |")
    variants = [
        ("stack: level-1 only", False, False),
        ("stack: + cheap features", True, False),
        ("stack: + user-relative level-1", False, True),
        ("stack: all (default)", True, True),
    ]
    for name, features, relative in variants:
        t0 = time.perf_counter()
        valid, xv = matrix(paths, sources, "valid", features, relative)
        _, xt = matrix(paths, sources, "test", features, relative)
        cv = cv_binary(xv, y, valid["user_id"].to_numpy(), xt, lgbm_binary(sc.lgbm, cfg.seed), sc.folds,
                       sc.inner_valid, cfg.seed)  # fmt: skip
        sec = time.perf_counter() - t0
        print(
            f"| {name} ({xv.shape[1]} features) | {cv.oof_auc:.4f} | {auc(y_test, cv.test):.4f} | {sec:.1f} s |"
        )
    print(f"\nrows: valid {len(valid)} ({valid['user_id'].nunique()} users), test {len(test)}; "
          f"folds {sc.folds}, trees per fold {[f.get('trees') for f in cv.folds]}")  # fmt: skip
    top = list(cv.gain.items())[:8]
    print("gain (default variant):", ", ".join(f"{k}={v:.0f}" for k, v in top), "...")
    assert np.isfinite(cv.test).all()


if __name__ == "__main__":
    main()
