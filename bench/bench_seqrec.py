"""The tencentgr sequence retriever against its own BCE recipe and popularity, over seeds; and its scale.

    python bench/bench_seqrec.py --seeds 3 --config configs/tencentgr_movielens.yaml --set data.valid_users=400
    python bench/bench_seqrec.py --seeds 3 --config configs/tencentgr_synthetic.yaml --set data.valid_users=400
    python bench/bench_seqrec.py --scale --users 100000 --steps 200
    python bench/bench_seqrec.py --epoch --users 1000000 --set seqrec.batch_size=1024   # the GPU epoch

Quality: every run goes through the pipeline (`run_until(cfg, "seqrec")`, the stage forced), one data split
(`seed` fixed) and `seqrec.seed_offset` = 0, 1, 2 for the model's initialisation and draws; prints the valid
score (0.31 HR@10 + 0.69 NDCG@10) mean and standard deviation per loss, the popularity baseline's and the
retrieve stage's co-visitation source's on the same valid users. Each loss is read at the last step (both
losses trained the same number of steps) and at its own best evaluation step on valid (what the stage keeps).
Scale: a TencentGR-1M-shaped synthetic slice (100 events per user) prepared once, then a short training run
in a child process: training samples/s (windows of up to 100 events) and the child's peak RSS.
Epoch: one epoch of a TencentGR-1M-shaped event store (users x 100 events, 4.78M items, 660k pool) built in
memory (the pipeline's build + prepare take ~10 min at this size on one core) and trained by the stage's own
model and loop (SeqRec, ItemEncoder, train.seqrec.fit: the default seqrec config, bf16 autocast on CUDA):
the epoch's wall time, training samples/s and peak memory (GPU and host).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from recstack.config import load_config
from recstack.data.builders.synthetic_tgr import ITEM_FEATURES
from recstack.device import resolve_device
from recstack.models.item_encoder import ItemColumns
from recstack.paths import Paths, Seqrec
from recstack.pipeline import run_stage, run_until
from recstack.tracks.tencentgr import seqrec as stage
from recstack.train import seqrec as tr

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


def epoch_data(users: int, items: int, pool: int, events: int, device: torch.device, seed: int = 0) -> dict:
    """A TencentGR-1M-shaped store in memory: every user `events` events, items by a Zipf-like popularity
    (p ~ rank^-0.9 over a shuffled catalogue), 10% clicks or conversions (a tenth of them conversions: the
    synthetic builder's rates), session-like gaps; the item sparse features at the synthetic builder's
    cardinalities (a topic = 1 of 1,000), emb_81 (32-d, float16) and the user profile columns."""
    g = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = users * events
    cdf = torch.cumsum(torch.arange(1, items, device=device, dtype=torch.float64) ** -0.9, 0)
    ranks = torch.searchsorted(cdf / cdf[-1], torch.rand(n, device=device, generator=g, dtype=torch.float64))
    shuffle = torch.randperm(items - 1, device=device, generator=g) + 1  # item re-ids 1..items-1
    item = shuffle[ranks.clamp(max=items - 2)].to(torch.int32).cpu().numpy()
    u = torch.rand(n, device=device, generator=g)
    action = (
        ((u < 0.1).to(torch.int8) + (u < 0.01).to(torch.int8)).cpu().numpy()
    )  # 0 / 1 click / 2 conversion
    gap = np.where(rng.random(n) < 0.05, rng.exponential(86_400.0, n), rng.exponential(45.0, n))
    ts = 1_700_000_000 + np.cumsum(gap.astype(np.int64))
    user = np.repeat(np.arange(1, users + 1, dtype=np.int64), events)
    n_topics = 1000
    feats = {}
    for f, (kind, card, _noise, missing) in ITEM_FEATURES.items():
        if f == "111":  # id-like: the stage skips it (seqrec.skip_item_feats)
            continue
        top = n_topics * card if kind == "subtopic" else (card or n_topics)
        v = rng.integers(1, top + 1, items)
        feats[f"i{f}"] = torch.from_numpy(np.where(rng.random(items) < missing, 0, v))
    return {"user": user, "item": item, "action": action, "ts": ts, "feats": feats,
            "mm": torch.from_numpy(rng.standard_normal((items, 32), np.float32).astype(np.float16)),
            "u_sparse": torch.from_numpy(np.stack([rng.integers(0, c + 1, users + 1) for c in (8, 2, 7, 5)], 1)),
            "u_arrays": torch.from_numpy(rng.integers(0, 65, (users + 1, 1, 8))),
            "pool": rng.choice(np.arange(1, items), pool, replace=False)}  # fmt: skip


def epoch(args: argparse.Namespace) -> None:
    """One epoch of the stage's model and training loop on a TencentGR-1M-shaped store (module docstring)."""
    schema = load_config(None, [s_ for s_ in args.set if s_.startswith("seqrec.")])
    sc = schema.seqrec
    device = resolve_device("auto")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    d = epoch_data(args.users, args.items, args.pool, args.events, device)
    valid_n = min(2000, args.users)  # the first 2,000 users' last event is held out for the evaluations
    start = np.arange(args.users, dtype=np.int64) * args.events
    end = start + args.events
    train_end = end.copy()
    train_end[:valid_n] -= 1
    d["action"][train_end[:valid_n]] = 1  # each valid user's held-out last event is a click
    store = tr.EventStore.of(d["user"], d["item"], d["action"], d["ts"], device)
    train = tr.train_windows(start, train_end, np.arange(1, args.users + 1), sc.max_len, device)
    valid = tr.query_windows(start[:valid_n], train_end[:valid_n], np.arange(1, valid_n + 1), device)
    # the stage's own item side, negatives and model (every item in the store trains: the held-out valid
    # targets are 2k of 100M events)
    id_index = torch.from_numpy(stage.id_index_of(d["item"], args.items))
    popularity, rates = stage.negative_rates(d["item"], d["action"], d["pool"], args.items, sc.uniform_mix)
    cols = ItemColumns(id_index, sparse=d["feats"], multimodal={"emb_81": d["mm"]})
    model = stage.build_model(sc, cols, d["u_sparse"], d["u_arrays"], device)
    one_epoch = {
        "epochs": 1,
        "min_steps": 0,
        "eval_every": args.eval_every,
        "patience": 10**9,
        "progress": False,
    }
    s = tr.SeqTrainSettings(dataclasses.replace(OmegaConf.to_object(sc), **one_epoch), exclude_seen=False,
                            seed=schema.seed)  # fmt: skip

    def run(s: tr.SeqTrainSettings) -> tr.FitResult:
        target = train_end[:valid_n]  # each valid user's held-out event
        return tr.fit(model, store, train, valid, d["item"][target], d["action"][target],
                      torch.from_numpy(d["pool"]).to(device), popularity, rates, s)  # fmt: skip

    if args.profile:  # a few steps under torch.profiler instead of the epoch: where a step's time goes
        acts = [torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        with torch.profiler.profile(activities=acts) as prof:
            steps = {"epochs": 0, "min_steps": args.profile, "eval_every": args.profile}
            run(dataclasses.replace(s, cfg=dataclasses.replace(s.cfg, **steps)))
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
        return
    setup = time.perf_counter() - t0
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}); "
        f"{args.users:,} users x {args.events} events = {len(d['item']):,} events, {args.items:,} items, pool "
        f"{args.pool:,}; {len(train):,} training windows, batch {s.cfg.batch_size}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; data in memory in {setup:.0f} s",
        flush=True,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    logging.getLogger("recstack.train.seqrec").setLevel(logging.INFO)
    t1 = time.perf_counter()
    r = run(s)
    wall = time.perf_counter() - t1
    curve = pd.DataFrame(r.curve)
    eval_s = wall - float(curve["seconds"].sum())
    gpu = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(curve[["step", "train_loss", "valid_score", "samples_per_s", "seconds"]].to_string(index=False))
    print("| users | events | batch | steps | epoch wall s (evaluations incl.) | of it evaluations s | train "
          "samples/s | events/s | peak GPU GiB | peak RSS GiB |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: | ---: |")  # fmt: skip
    sps = len(train) / (wall - eval_s)
    print(f"| {args.users:,} | {len(d['item']):,} | {s.cfg.batch_size} | {r.steps:,} | {wall:.1f} | {eval_s:.1f} | "
          f"{sps:,.0f} | {sps * args.events:,.0f} | {gpu:.2f} | {rss:.2f} |")  # fmt: skip


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
    p.add_argument("--epoch", action="store_true")
    p.add_argument("--items", type=int, default=4_780_000)
    p.add_argument("--pool", type=int, default=660_000)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--profile", type=int, default=0, help="--epoch: profile this many steps instead")
    p.add_argument("--eval-every", type=int, default=0, help="--epoch: steps between evaluations (0: ~10)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.epoch:
        epoch(args)
    else:
        scale(args) if args.scale else quality(args)


if __name__ == "__main__":
    main()
