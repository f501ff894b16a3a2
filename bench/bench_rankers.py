"""Our DIN and QIN against peer libraries' DIN on the same split, embedding size, batch size and epochs.

    ./run.sh prepare                                   # MovieLens-100K in the mmctr layout (the default)
    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt   # peers, once
    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_rankers.py                  # quality + CPU speed table
    .venv/bin/python bench/bench_rankers.py --scale    # every ranker's samples/s at MicroLens-1M size
    .venv/bin/python bench/bench_rankers.py --like-for-like --repeats 2   # DIN vs FuxiCTR's, one thread each
    .venv/bin/python bench/bench_rankers.py --like-for-like --profile-steps 20   # where our side's time goes

Quality: valid and test AUC (test labels from the builder's local_truth) of our DIN and QIN with and without
the multimodal matrix (the embed stage's when it ran, else the provided one; MovieLens ships none), and of
FuxiCTR's DIN and deepctr-torch's DIN, each run in .venv-bench in a child process (their numpy/pandas pins
clash with ours). Speed: training samples/s (the train loop only, evaluation excluded), same batch size.
--like-for-like: our DIN and FuxiCTR's on one model definition (item id + the two context levels, embedding
--emb, attention MLP [4E, 2E] with ReLU (the challenge's DIN), DNN [8E, 4E] over [target, interest,
target * interest, context], N(0, 0.01) embeddings, Adam, --batch, --epochs, valid AUC after every epoch),
one thread each (torch.set_num_threads(1) and OMP_NUM_THREADS=1 on both sides), ours in this process and
FuxiCTR's in .venv-bench, alternating (ours, FuxiCTR, ours, FuxiCTR, ...) so that a machine's load falls on
both. Each side's clock starts before it reads its training data from disk (ours: the prepare stage's
parquet tables -> tensors; FuxiCTR: its npz files -> NpzDataLoader) and includes building the model. Printed:
train-loop samples/s (evaluation excluded; FuxiCTR's loop includes its DataLoader's batch assembly, ours
slices tensors), samples/s with the data loading, their ratios, and the wall time (loading + training +
every evaluation so far) at which each side's valid AUC first reaches the target (--target-auc, default the
lower of the two sides' best valid AUCs of the same repeat).
--scale: builds nothing; expects the synthetic MicroLens-1M-sized set (3.6M train rows, 91,717 items) from
    python -m recstack prepare --config configs/mmctr_synthetic.yaml data.synthetic.users=360000 \
        data.synthetic.items=91717 data.synthetic.images=false
and times every ranker at its reference sizes (the schema defaults: DIN as the challenge baseline, QIN and
the Transformer-DCN as published, DIN + DCN head) on CUDA when present (bf16) else the CPU, with the training
peak GPU memory and the published speed beside it (--gpu: CUDA or an error; --train-rows: a CPU subsample):
    python bench/bench_rankers.py --scale --epochs 2 --train-rows 40000 --valid-rows 2000   # CPU
    python bench/bench_rankers.py --gpu --epochs 3 --variants qin,qin+compile,din,transformer_dcn
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from recstack.config import RANK_MODELS, TRAINER_KEYS, DinConfig, RankConfig, load_config
from recstack.data.tables.ranking import read_matrix, read_rank_items, read_rank_rows
from recstack.metrics import auc
from recstack.models.rankers import RANKERS
from recstack.paths import Embedded, Paths, Prepared
from recstack.stages.rank import build_model
from recstack.train import dist, trainer
from recstack.train.trainer import DeviceRows, TrainSettings, fit, predict

ROOT = Path(__file__).resolve().parents[1]
PEER_PY = ROOT / ".venv-bench" / "bin" / "python"  # --peer-python overrides (a venv shared between checkouts)


def load(cfg):
    paths = Paths(cfg)
    prep = paths.stage_dir("prepare")
    items = read_rank_items(prep)
    rows = {s: read_rank_rows(prep, s, len(items)) for s in ("train", "valid", "test")}
    truth = pd.read_parquet(paths.raw_mmctr.test_truth).set_index("ID")["label"]
    rows["test"].label = truth.reindex(rows["test"].row_id).to_numpy(np.float32)
    mm, mm_name = None, "none"
    for path, name in ((paths.stage_dir("embed") / Embedded.ITEMS, "embed"),
                       (prep / Prepared.embedding(cfg.rank.provided), cfg.rank.provided)):  # fmt: skip
        if path.is_file():
            mm, mm_name = read_matrix(path, len(items)), name
            break
    return items, rows, mm, mm_name


def ours(name, items, rows, mm, a, device, side=True) -> dict:
    arch = (
        {"emb_dim": a.emb, "attention_units": [4 * a.emb, 2 * a.emb], "dnn_units": [8 * a.emb, 4 * a.emb],
         "dropout": 0.0}
        if name == "din"
        else {"emb_dim": a.emb, "attention_len": 64, "layers": 2, "dropout": 0.1}
    )  # fmt: skip
    cards = [int(max(r.context[:, j].max() for r in rows.values())) + 1 for j in range(2)]
    torch.manual_seed(a.seed)
    model = build_model(name, items, mm, cards, arch, device, side)
    micro = a.micro_batch if name == "din" else 0  # QIN's BatchNorm wants the whole batch's statistics
    s = TrainSettings(RankConfig(epochs=a.epochs, patience=a.epochs, progress=False),
                      RANK_MODELS[name](lr=a.lr, batch_size=a.batch, micro_batch=micro), seed=a.seed,
                      desc=name)  # fmt: skip
    d = {k: DeviceRows.of(r, device) for k, r in rows.items()}
    res = fit(model, d["train"], d["valid"], s)
    sps = [r["samples_per_s"] for r in res.curve]
    return {
        "valid_auc": auc(rows["valid"].label, predict(model, d["valid"])),
        "test_auc": auc(rows["test"].label, predict(model, d["test"])),
        "samples_per_s": float(np.median(sps)),
        "epochs": len(res.curve),
    }


def export(rows, items, folder: Path) -> Path:
    """The same split for the peers, as plain arrays (ids shifted nowhere: 0 is padding everywhere)."""
    path = folder / "split.npz"
    arrays = {"n_items": np.array(len(items)), "tags": items.tags}
    for s, r in rows.items():
        arrays |= {f"{s}_hist": r.hist, f"{s}_target": r.target, f"{s}_context": r.context,
                   f"{s}_label": r.label}  # fmt: skip
    np.savez(path, **arrays)
    return path


def peers(data: Path, a) -> list[dict]:
    if not PEER_PY.is_file():
        return [
            {
                "model": "FuxiCTR DIN / deepctr-torch DIN",
                "error": f"{PEER_PY} missing: see requirements-bench.txt",
            }
        ]
    out = []
    for lib in ("fuxictr", "deepctr"):
        args = [str(PEER_PY), str(ROOT / "bench" / "peer_din.py"), "--lib", lib, "--data", str(data),
                "--emb", str(a.emb), "--batch", str(a.batch), "--epochs", str(a.epochs), "--lr", str(a.lr),
                "--seed", str(a.seed)]  # fmt: skip
        proc = subprocess.run(args, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            out.append({"model": f"{lib} DIN", "error": proc.stderr.strip().splitlines()[-1:] or "?"})
        else:
            out.append(json.loads(lines[-1]))
    return out


def ours_like_for_like(cfg, a, device, keep: np.ndarray | None) -> dict:
    """Our DIN on the peers' features, the clock started before the prepared tables are read."""
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    prep = Paths(cfg).stage_dir("prepare")
    items = read_rank_items(prep)
    rows = {s: read_rank_rows(prep, s, len(items)) for s in ("train", "valid")}
    if keep is not None:
        rows["train"] = rows["train"].take(keep)
    cards = [int(max(r.context[:, j].max() for r in rows.values())) + 1 for j in range(2)]
    arch = {"emb_dim": a.emb, "attention_units": [4 * a.emb, 2 * a.emb], "dnn_units": [8 * a.emb, 4 * a.emb],
            "dropout": 0.0}  # fmt: skip
    torch.manual_seed(a.seed)
    model = build_model("din", items, None, cards, arch, device, side=False)
    d = {k: DeviceRows.of(r, device) for k, r in rows.items()}
    load_s = time.perf_counter() - t_start
    stamps: list[float] = []
    plain = trainer.predict

    def stamped(*args, **kwargs):  # fit evaluates valid once per epoch through trainer.predict
        out = plain(*args, **kwargs)
        stamps.append(time.perf_counter() - t_start)
        return out

    s = TrainSettings(RankConfig(epochs=a.epochs, patience=a.epochs, progress=False),
                      DinConfig(lr=a.lr, batch_size=a.batch, micro_batch=a.micro_batch), seed=a.seed,
                      desc="din")  # fmt: skip
    trainer.predict = stamped
    try:
        res = fit(model, d["train"], d["valid"], s)
    finally:
        trainer.predict = plain
    train_s = sum(r["seconds"] for r in res.curve)
    n = len(rows["train"])
    return {"model": "recstack DIN", "valid_auc": res.best_auc, "epochs": len(res.curve),
            "samples_per_s": len(res.curve) * n / train_s, "load_s": load_s, "train_s": train_s,
            "samples_per_s_with_load": len(res.curve) * n / (train_s + load_s),
            "curve": [(t, r["valid_auc"]) for t, r in zip(stamps, res.curve, strict=True)],
            "threads": torch.get_num_threads()}  # fmt: skip


def profile_ours(cfg, a) -> None:
    """Where our like-for-like DIN's training time goes: torch.profiler over --profile-steps batches of
    one thread (one epoch of fit over that many batches, then its valid evaluation), ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    prep = Paths(cfg).stage_dir("prepare")
    items = read_rank_items(prep)
    rows = {s: read_rank_rows(prep, s, len(items)) for s in ("train", "valid")}
    cards = [int(max(r.context[:, j].max() for r in rows.values())) + 1 for j in range(2)]
    arch = {"emb_dim": a.emb, "attention_units": [4 * a.emb, 2 * a.emb], "dnn_units": [8 * a.emb, 4 * a.emb],
            "dropout": 0.0}  # fmt: skip
    torch.manual_seed(a.seed)
    model = build_model("din", items, None, cards, arch, torch.device("cpu"), side=False)
    d = {k: DeviceRows.of(r, torch.device("cpu")) for k, r in rows.items()}
    s = TrainSettings(RankConfig(epochs=1, patience=1, progress=False),
                      DinConfig(lr=a.lr, batch_size=a.batch, micro_batch=a.micro_batch), seed=a.seed,
                      desc="din")  # fmt: skip
    fit(model, d["train"], d["valid"], s, train_idx=torch.arange(a.batch * 5))  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        res = fit(model, d["train"], d["valid"], s, train_idx=torch.arange(a.profile_steps * a.batch))
    print(f"{a.profile_steps} batches of {a.batch} ({a.micro_batch or a.batch}-row micro-batches), one thread: "
          f"{res.curve[0]['samples_per_s']:,.0f} samples/s under the profiler")  # fmt: skip
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def fuxictr_like_for_like(data: Path, a, workers: int) -> dict:
    args = [str(PEER_PY), str(ROOT / "bench" / "peer_din.py"), "--lib", "fuxictr", "--data", str(data),
            "--emb", str(a.emb), "--batch", str(a.batch), "--epochs", str(a.epochs), "--lr", str(a.lr),
            "--seed", str(a.seed), "--activation", "relu", "--like-for-like", "--threads", "1",
            "--workers", str(workers)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"FuxiCTR DIN failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def time_to(curve: list, target: float) -> float | None:
    """Seconds (since the side's clock started) at the first evaluation whose valid AUC reaches target."""
    return next((t for t, v in curve if v >= target - 1e-6), None)  # the curve holds 6 decimals


def like_for_like(cfg, a) -> None:
    if not PEER_PY.is_file():
        raise SystemExit(f"{PEER_PY} missing: python3.11 -m venv .venv-bench && "
                         ".venv-bench/bin/pip install -r requirements-bench.txt")  # fmt: skip
    device = torch.device("cpu")
    prep = Paths(cfg).stage_dir("prepare")
    items = read_rank_items(prep)
    rows = {s: read_rank_rows(prep, s, len(items)) for s in ("train", "valid")}
    keep = None
    if a.train_rows and a.train_rows < len(rows["train"]):  # the same subsample for both sides
        keep = np.sort(np.random.default_rng(a.seed).choice(len(rows["train"]), a.train_rows, replace=False))
        rows["train"] = rows["train"].take(keep)
    print(f"{cfg.dataset}: {len(rows['train'])} train / {len(rows['valid'])} valid rows; emb {a.emb}, attention "
          f"[{4 * a.emb}, {2 * a.emb}] ReLU, DNN [{8 * a.emb}, {4 * a.emb}], batch {a.batch}, lr {a.lr}, "
          f"{a.epochs} epochs, 1 thread each, {a.repeats} repeats", flush=True)  # fmt: skip
    pairs = []  # (repeat, ours, FuxiCTR with some loader workers)
    workers = [int(x) for x in a.peer_workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = export(rows, items, Path(tmp))
        for i in range(1, a.repeats + 1):
            ours_r = ours_like_for_like(cfg, a, device, keep)
            print(json.dumps({"repeat": i} | ours_r), flush=True)
            for w in workers:
                fux_r = fuxictr_like_for_like(data, a, w)
                print(json.dumps({"repeat": i} | fux_r), flush=True)
                pairs.append((i, ours_r, fux_r))
    print("\n| repeat | side | train-loop samples/s | samples/s incl. load | load s | best valid AUC | target AUC "
          "| wall s to target |\n|---|---|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    ratios: dict[int, list[tuple[float, float, float | None]]] = {w: [] for w in workers}
    for i, o, f in pairs:
        target = a.target_auc or min(o["valid_auc"], f["valid_auc"])
        t_o, t_f = time_to(o["curve"], target), time_to(f["curve"], target)
        for side, r, t in (("recstack", o, t_o), (f"FuxiCTR ({f['workers']} loader workers)", f, t_f)):
            print(f"| {i} | {side} | {r['samples_per_s']:,.0f} | {r['samples_per_s_with_load']:,.0f} "
                  f"| {r['load_s']:.1f} | {r['valid_auc']:.4f} | {target:.4f} "
                  f"| {'not reached' if t is None else f'{t:.0f}'} |")  # fmt: skip
        ratios[f["workers"]].append((o["samples_per_s"] / f["samples_per_s"],
                                     o["samples_per_s_with_load"] / f["samples_per_s_with_load"],
                                     None if t_o is None or t_f is None else t_f / t_o))  # fmt: skip
    for w, rs in ratios.items():
        loop, load, tt = (
            ", ".join("-" if x is None else f"{x:.2f}x" for x in col) for col in zip(*rs, strict=True)
        )
        print(f"\nrecstack / FuxiCTR ({w} loader workers), samples/s: train loop {loop} (median "
              f"{np.median([r[0] for r in rs]):.2f}x), with data loading {load}; time to the target valid AUC, "
              f"FuxiCTR / recstack: {tt}")  # fmt: skip


REFERENCE = {  # published training speed at MicroLens-1M size, for the table's last column
    "qin": "~21k samples/s, ~170 s/epoch (QIN's public logs, RTX 4090)",
}


def scale_mode(a) -> None:
    """Training samples/s of every ranker at MicroLens-1M size (3.6M train rows, 91,717 items) at its
    reference sizes (the schema defaults: DIN as the challenge baseline, QIN and Transformer-DCN as
    published), on CUDA when present (bf16 autocast) else on the CPU, next to the published figures.
    Steady state = median over the epochs after the first (the first holds compilation / warm-up); on the
    CPU `--train-rows` times a subsample (samples/s does not depend on how many rows an epoch has)."""
    sizes = ["data.synthetic.users=360000", "data.synthetic.items=91717", "data.synthetic.images=false"]
    cfg = load_config(ROOT / "configs" / "mmctr_synthetic.yaml", sizes + a.overrides)
    defaults = load_config(None)  # the reference sizes of every rank.<name> block
    device = dist.resolve_device("cuda" if a.gpu else "auto")
    items, rows, mm, mm_name = load(cfg)
    n_train = len(rows["train"])
    if a.train_rows and a.train_rows < n_train:
        keep = np.sort(np.random.default_rng(a.seed).choice(n_train, a.train_rows, replace=False))
        rows["train"] = rows["train"].take(keep)
    rows["valid"] = rows["valid"].take(
        np.arange(min(len(rows["valid"]), a.valid_rows))
    )  # each epoch scores it
    cards = [int(max(r.context[:, j].max() for r in rows.values())) + 1 for j in range(2)]
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"{n_train} train rows (timed on {len(rows['train'])}), {len(items)} items, history "
          f"{rows['train'].hist.shape[1]}, multimodal {mm_name} {None if mm is None else mm.shape}, {where}",
          flush=True)  # fmt: skip
    d = {k: DeviceRows.of(r, device) for k, r in rows.items() if k != "test"}
    variants = a.variants.split(",") if a.variants else [*RANKERS, "din+dcn"]
    table = []
    for variant in variants:
        compiled = variant.endswith("+compile")
        name, _, head = variant.removesuffix("+compile").partition("+")
        block = OmegaConf.to_container(defaults.rank[name], resolve=True)
        arch = {k: v for k, v in block.items() if k not in TRAINER_KEYS} | ({"head": head} if head else {})
        torch.manual_seed(a.seed)
        model = build_model(name, items, mm, cards, arch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        s = TrainSettings(RankConfig(epochs=a.epochs, patience=a.epochs, progress=False, compile=compiled),
                          # whole batches: micro-batches pay on a CPU only (config.DinConfig.micro_batch)
                          dataclasses.replace(OmegaConf.to_object(defaults.rank[name]), micro_batch=0),
                          seed=a.seed, desc=variant)  # fmt: skip
        res = fit(model, d["train"], d["valid"], s)
        sps = [r["samples_per_s"] for r in res.curve]
        row = {"model": variant, "batch": block["batch_size"], "epochs": len(sps), "first_epoch_samples_per_s": sps[0],
               "steady_samples_per_s": float(np.median(sps[1:] if len(sps) > 1 else sps)),
               "best_valid_auc": res.best_auc, "params": sum(p.numel() for p in model.parameters()),
               "train_peak_gib": max(r.get("train_peak_gib", 0.0) for r in res.curve),
               "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0}  # fmt: skip
        row["epoch_s_at_full_size"] = n_train / row["steady_samples_per_s"]
        print(json.dumps(row | {"curve": res.curve}), flush=True)
        table.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"\n| model ({device.type}) | batch | params | steady samples/s | s per epoch of {n_train:,} rows "
          "| train peak GiB | valid AUC | published |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        ref = REFERENCE.get(r["model"].removesuffix("+compile"), "-")
        peak = f"{r['train_peak_gib']:.2f}" if device.type == "cuda" else "-"  # GPU memory only
        print(f"| {r['model']} | {r['batch']} | {r['params']:,} | {r['steady_samples_per_s']:,.0f} "
              f"| {r['epoch_s_at_full_size']:,.0f} | {peak} | {r['best_valid_auc']:.4f} | {ref} |")  # fmt: skip


def main() -> None:
    global PEER_PY  # read by peers() and like_for_like()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "mmctr_movielens.yaml"))
    p.add_argument("--emb", type=int, default=16)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--micro-batch", type=int, default=256,
                   help="our DIN: rows per forward/backward within a batch (same update; 0 = whole batch)")  # fmt: skip
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--train-rows", type=int, default=0, help="subsample train (same rows for all); 0 = all")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--scale", action="store_true",
                   help="every ranker's samples/s at MicroLens-1M size, reference sizes (CUDA when present)")  # fmt: skip
    p.add_argument("--gpu", action="store_true", help="--scale on CUDA (an error without it)")
    p.add_argument(
        "--valid-rows", type=int, default=200_000, help="--scale: valid rows scored after each epoch"
    )
    p.add_argument("--variants", default="",
                   help="--scale: models to time, e.g. qin,qin+compile,din+dcn (default: every ranker + din+dcn)")  # fmt: skip
    p.add_argument("--like-for-like", action="store_true", help="our DIN vs FuxiCTR's, one definition")
    p.add_argument("--repeats", type=int, default=2, help="--like-for-like: alternating pairs")
    p.add_argument("--peer-workers", default="0",
                   help="--like-for-like: FuxiCTR NpzDataLoader worker processes, comma-separated runs per repeat "
                   "(0: batches assembled in its training thread, one CPU thread like ours; 1: its default, a "
                   "second process)")  # fmt: skip
    p.add_argument(
        "--peer-python", default=str(PEER_PY), help="the peers' venv python (requirements-bench.txt)"
    )
    p.add_argument("--profile-steps", type=int, default=0,
                   help="--like-for-like: profile our side over this many batches instead (no peers)")  # fmt: skip
    p.add_argument("--target-auc", type=float, default=0.0,
                   help="--like-for-like: valid AUC to time; 0 = the lower of the two sides' best")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="config overrides (key=value), e.g. output_root=...")
    a = p.parse_args()
    PEER_PY = Path(a.peer_python)
    if a.scale or a.gpu:
        return scale_mode(a)
    cfg = load_config(a.config, a.overrides)
    if a.like_for_like and a.profile_steps:
        return profile_ours(cfg, a)
    if a.like_for_like:
        return like_for_like(cfg, a)
    device = dist.resolve_device(cfg.device)
    items, rows, mm, mm_name = load(cfg)
    print(f"{cfg.dataset}: {len(rows['train'])} train rows, emb {a.emb}, batch {a.batch}, {a.epochs} epochs, "
          f"lr {a.lr}, {device}, torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    if a.train_rows and a.train_rows < len(rows["train"]):  # the same subsample for every model
        keep = np.sort(np.random.default_rng(a.seed).choice(len(rows["train"]), a.train_rows, replace=False))
        rows["train"] = rows["train"].take(keep)
        print(f"train subsampled to {a.train_rows} rows (seed {a.seed}) for every model", flush=True)
    table = []
    variants = [("din", False, False, "id only: the peers' features"), ("din", True, False, "id + tags + levels"),
                ("din", True, True, "+ multimodal"), ("qin", True, False, "id + tags + levels"),
                ("qin", True, True, "+ multimodal")]  # fmt: skip
    for name, side, use_mm, what in variants:
        label = f"recstack {name.upper()} ({what})"
        if use_mm and mm is None:
            table.append({"model": label, "error": "no multimodal matrix (run ./run.sh embed)"})
            continue
        t0 = time.perf_counter()
        r = ours(name, items, rows, mm if use_mm else None, a, device, side)
        r["model"] = label + (f" [{mm_name}]" if use_mm else "")
        r["wall_s"] = round(time.perf_counter() - t0, 1)
        table.append(r)
        print(json.dumps(r), flush=True)
    if not a.no_peers:
        with tempfile.TemporaryDirectory() as tmp:
            table += peers(export(rows, items, Path(tmp)), a)
    print("\n| model | valid AUC | test AUC | train samples/s | epochs |\n|---|---|---|---|---|")
    for r in table:
        if "error" in r:
            print(f"| {r['model']} | - | - | - | {r['error']} |")
        else:
            print(f"| {r['model']} | {r['valid_auc']:.4f} | {r['test_auc']:.4f} | {r['samples_per_s']:.0f} "
                  f"| {r['epochs']} |")  # fmt: skip
    fux = next((r for r in table if r["model"].startswith("fuxictr") and "error" not in r), None)
    din = next(r for r in table if r["model"].startswith("recstack DIN (id only"))
    if fux:
        ratio = din["samples_per_s"] / fux["samples_per_s"]
        print(f"\nDIN training samples/s, recstack (same features) / FuxiCTR: {ratio:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
