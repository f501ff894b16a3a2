"""The tencentgr sequence retriever against its own BCE recipe and popularity, over seeds; and its scale.

    python bench/bench_seqrec.py --seeds 3 --config configs/tencentgr_movielens.yaml --set data.valid_users=400
    python bench/bench_seqrec.py --seeds 3 --config configs/tencentgr_synthetic.yaml --set data.valid_users=400
    python bench/bench_seqrec.py --scale --users 100000 --steps 200

Quality: every run goes through the pipeline (`run_until(cfg, "seqrec")`, the stage forced), one data split
(`seed` fixed) and `seqrec.seed_offset` = 0, 1, 2 for the model's initialisation and draws; prints the valid
score (0.31 HR@10 + 0.69 NDCG@10) mean and standard deviation per loss, the popularity baseline's and the
retrieve stage's co-visitation source's on the same valid users. Each loss is read at the last step (both
losses trained the same number of steps) and at its own best evaluation step on valid (what the stage keeps).
Scale: a TencentGR-1M-shaped synthetic slice (100 events per user) prepared once, then a short training run
in a child process: training samples/s (windows of up to 100 events) and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.config import load_config
from recstack.paths import Paths, Seqrec
from recstack.pipeline import run_stage, run_until

ROOT = Path(__file__).resolve().parents[1]


def quality(args: argparse.Namespace) -> None:
    base = ["seqrec.progress=false", *args.set]
    cfg = load_config(args.config, base)
    run_until(cfg, "prepare")
    pop = run_stage(cfg, "baseline", force=True)["figures"]["valid_score"]
    rows = {}
    for loss in args.losses.split(","):
        scores, last, secs = [], [], []
        for seed in range(args.seeds):
            c = load_config(args.config, [*base, f"seqrec.loss={loss}", f"seqrec.seed_offset={seed}"])
            t0 = time.perf_counter()
            run_until(c, "seqrec", force=True)
            secs.append(time.perf_counter() - t0)
            m = json.loads((Paths(c).stage_dir("seqrec") / Seqrec.METRICS).read_text())
            curve = pd.read_csv(Paths(c).stage_dir("seqrec") / Seqrec.CURVE)
            scores.append(m["valid_score"])  # the evaluation the stage keeps: its own best step on valid
            last.append(float(curve["valid_score"].iloc[-1]))  # the last step: both losses' equal step count
            print(f"  {loss} seed_offset={seed}: valid score {m['valid_score']:.4f} (HR@10 {m['valid_hr@10']:.4f},"
                  f" NDCG@10 {m['valid_ndcg@10']:.4f}) at its best step {m['best_step']}/{m['steps_planned']};"
                  f" {last[-1]:.4f} at the last step; {secs[-1]:.0f} s", flush=True)  # fmt: skip
        rows[loss] = (float(np.mean(scores)), float(np.std(scores)), float(np.mean(secs)),
                      float(np.mean(last)), float(np.std(last)))  # fmt: skip
    # the retrieve stage's co-visitation source on the same valid users (the bar of issue 12); it reads the
    # last seqrec run as one more source, which does not change the co-visitation figure
    cov = run_stage(cfg, "retrieve", force=True)["figures"].get("valid_score_covisit", float("nan"))
    print(f"\n{cfg.dataset} ({args.config}, {' '.join(args.set)}), valid users {cfg.data.valid_users}")
    print("| model | valid score at the last step (equal steps) | at its own best step | runs | s per run |\n"
          "| --- | ---: | ---: | ---: | ---: |")  # fmt: skip
    print(f"| popularity (baseline stage) | {pop:.4f} | - | 1 | - |")
    print(f"| co-visitation (retrieve stage) | {cov:.4f} | - | 1 | - |")
    for loss, (mean, std, sec, lmean, lstd) in rows.items():
        print(
            f"| seqrec loss={loss} | {lmean:.4f} ± {lstd:.4f} | {mean:.4f} ± {std:.4f} | {args.seeds} | {sec:.0f} |"
        )
    if {"infonce", "bce"} <= set(rows):
        i, b = rows["infonce"], rows["bce"]
        print(f"infonce / bce = {i[3] / max(b[3], 1e-9):.2f}x at equal (last) steps, "
              f"{i[0] / max(b[0], 1e-9):.2f}x each at its own best step")  # fmt: skip
    if "infonce" in rows:
        print(f"infonce (own best step) / co-visitation = {rows['infonce'][0] / max(cov, 1e-9):.2f}x")


def scale(args: argparse.Namespace) -> None:
    data = [f"data.synthetic_tgr.users={args.users}", f"data.synthetic_tgr.items={args.users // 2}",
            "data.synthetic_tgr.events_per_user=100", f"data.synthetic_tgr.candidates={args.users // 10}",
            f"data.synthetic_tgr.predict_users={args.users // 20}", "data.valid_users=2000", "data.stack_users=2000",
            f"output_root={args.root}/out", f"input_root={args.root}/in", "dataset=synthetic_tgr_scale"]  # fmt: skip
    cfg = load_config(ROOT / "configs" / "tencentgr_synthetic.yaml", data)
    run_until(cfg, "prepare")
    train = [*data, "seqrec.multimodal=provided", "seqrec.epochs=0", f"seqrec.min_steps={args.steps}",
             f"seqrec.eval_every={args.steps}", "seqrec.progress=false", *args.set]  # fmt: skip
    cmd = [sys.executable, "-m", "recstack", "seqrec", "--force", "--config",
           str(ROOT / "configs" / "tencentgr_synthetic.yaml"), *train]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    m = json.loads((Paths(cfg).stage_dir("seqrec") / Seqrec.METRICS).read_text())
    print(f"\nsynthetic TencentGR slice: {args.users} users x 100 events, {m['train_windows']} training windows, "
          f"pool {m['pool']}, {m['params']:,} parameters, device {m['device']}")  # fmt: skip
    print(
        "| steps | batch | train samples/s | events/s | stage wall s | peak RSS GiB |\n| ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    bs = load_config(
        None, [f"seqrec.{s.split('.', 1)[1]}" for s in args.set if s.startswith("seqrec.")]
    ).seqrec
    sps = m["train_samples_per_s"]
    print(f"| {args.steps} | {bs.batch_size} | {sps:.0f} | {sps * 100:.0f} | {wall:.0f} | {peak:.2f} |")
    print(f"one epoch of 1M users at this rate: {1e6 / max(sps, 1e-9) / 60:.0f} min")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "tencentgr_movielens.yaml"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--losses", default="infonce,bce")
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--scale", action="store_true")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--root", default="/tmp/recstack_bench_seqrec")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scale(args) if args.scale else quality(args)


if __name__ == "__main__":
    main()
