"""Does the tencentgr local validation predict the local test? Valid and test of every candidate, over seeds.

    .venv/bin/python bench/tgr_validity.py --config configs/tencentgr_movielens.yaml --seeds 2025 2026 2027 \
        [--set key=value ...] [--output-root outputs/bench_validity] [--pythonpath OTHER_CHECKOUT/src]

Runs the whole tencentgr pipeline once per seed (`python -m recstack all --config ... seed=S`, each seed in its
own output root so the runs never share a stage folder), then reads each run's folders and prints, per
candidate (every retrieve source, the fused ranking, seqrec, the popularity baseline, the reranker, the blend
and the submission): valid and local test, mean +- sd over the seeds, and for the submission the standard
error of its test score (the per-user gains' sd / sqrt(users), mean over the seeds) and |valid - test| / SE.

The test figures are scored here from the answers the dataset builder kept (input/<dataset>/local_truth/),
after the runs, by the scoring code of this checkout; `--pythonpath` runs the pipeline from another
checkout's source (e.g. the code before a change, in a `git worktree`), so both protocols are scored alike.
The valid figures are the runs' own. Nothing here feeds back into a run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recstack.config import load_config
from recstack.data.tables.predictions import read_ranking
from recstack.metrics import tencentgr_gains
from recstack.paths import MANIFEST, Ensembled, Paths, Predictions, PreparedTGR, Retrieved
from recstack.tracks.tencentgr import rank_topk

K = 10


def run(config: str, seed: int, root: Path, overrides: list[str], pythonpath: str | None) -> None:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "-m", "recstack", "all", "--config", config, f"seed={seed}", f"output_root={root}",
           *overrides]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # logs/


def figures(cfg, root: Path) -> dict[str, tuple[float | None, float | None, float | None]]:
    """{candidate: (valid, test, test SE)} of one finished run."""
    paths = Paths(cfg)
    truth = pd.read_parquet(paths.raw_tencentgr.truth)
    target = truth["creative_id"].to_numpy()
    creative = pd.read_parquet(paths.stage_dir("prepare") / PreparedTGR.ITEMS, columns=["creative_id"])
    creative = creative["creative_id"].to_numpy()

    def test(items: np.ndarray) -> tuple[float, float]:
        top = np.where(items[:, :K] >= 0, creative[np.maximum(items[:, :K], 0)], -1)
        g = tencentgr_gains(top, target, K)
        return float(g.mean()), float(g.std(ddof=1) / np.sqrt(len(g)))

    def manifest(stage: str) -> dict:
        p = paths.stage_dir(stage) / MANIFEST
        return json.loads(p.read_text())["figures"] if p.is_file() else {}

    out: dict[str, tuple[float | None, float | None, float | None]] = {}
    for stage in ("baseline", "seqrec", "stack"):
        f = manifest(stage)
        if f and (paths.stage_dir(stage) / Predictions.FILE).is_file():
            out[stage] = (
                f.get("valid_score"),
                *test(read_ranking(paths.stage_dir(stage), "test", len(truth))[0]),
            )
    f = manifest("retrieve")
    cand = paths.stage_dir("retrieve") / Retrieved.CANDIDATES
    if f and cand.is_file():
        ranks = [c for c in pq.read_schema(cand).names if c.endswith("_rank")]
        t = pq.read_table(
            cand, columns=["user_row", "item", *ranks], filters=[("split", "=", "test")]
        ).to_pandas()
        for col in ranks:
            name = col[: -len("_rank")]
            part = t[t[col] >= 0]
            items = rank_topk(
                part["user_row"].to_numpy(), part["item"].to_numpy(), part[col].to_numpy(), len(truth)
            )
            out[f"retrieve:{name}"] = (f.get(f"valid_score_{name}"), *test(items))
    f = manifest("ensemble")
    if f:
        rankings = paths.stage_dir("ensemble") / Ensembled.RANKINGS
        if rankings.is_file():  # every candidate's ranking (not written by older checkouts)
            t = pq.read_table(rankings).to_pandas()
            rows = t[t["split"] == "blend/test"].sort_values(["query", "rank"])
            if len(rows):
                out["ensemble:blend"] = (
                    f.get("valid_score_blend"),
                    *test(rows["item"].to_numpy().reshape(len(truth), -1)),
                )
        items = read_ranking(paths.stage_dir("ensemble"), "test", len(truth))[0]
        out[f"submitted ({f.get('submitted')})"] = (f.get("valid_score"), *test(items))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/tencentgr_movielens.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2025, 2026, 2027])
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--output-root", default="outputs/bench_validity")
    ap.add_argument("--pythonpath", default=None, help="run the pipeline from this source folder")
    ap.add_argument("--no-run", action="store_true", help="read finished runs only")
    args = ap.parse_args()
    per: dict[str, list[tuple]] = {}
    submitted: list[tuple] = []
    for seed in args.seeds:
        root = Path(args.output_root) / f"seed_{seed}"
        if not args.no_run:
            run(args.config, seed, root, args.overrides, args.pythonpath)
        cfg = load_config(args.config, [*args.overrides, f"seed={seed}", f"output_root={root}"])
        for name, v in figures(cfg, root).items():
            key = "submitted" if name.startswith("submitted") else name
            per.setdefault(key, []).append(v)
            if key == "submitted":
                submitted.append((name, *v))

    def ms(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{np.mean(xs):.4f} +- {np.std(xs, ddof=1):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

    print(f"\n{args.config} {' '.join(args.overrides)}: {len(args.seeds)} seeds {args.seeds}")
    print(f"{'candidate':<22} {'valid':>18} {'test':>18}")
    for name, vs in per.items():
        print(f"{name:<22} {ms([v[0] for v in vs]):>18} {ms([v[1] for v in vs]):>18}")
    if submitted:
        se = float(np.mean([s[3] for s in submitted]))
        gap = float(np.mean([s[1] for s in submitted]) - np.mean([s[2] for s in submitted]))
        print(f"submitted per seed: {', '.join(f'{s[0]} {s[1]:.4f}/{s[2]:.4f}' for s in submitted)}")
        print(f"submission: valid - test = {gap:+.4f}, test SE {se:.4f} ({abs(gap) / se:.2f} SE)")
        cov = per.get("retrieve:covisit")
        if cov:
            ratio = np.mean([s[2] for s in submitted]) / np.mean([c[1] for c in cov])
            print(f"submission test / covisit test = {ratio:.3f}")


if __name__ == "__main__":
    main()
