"""Our DIN and QIN against peer libraries' DIN on the same split, embedding size, batch size and epochs.

    ./run.sh prepare                                   # MovieLens-100K in the mmctr layout (the default)
    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt   # peers, once
    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_rankers.py                  # quality + CPU speed table
    .venv/bin/python bench/bench_rankers.py --gpu      # QIN samples/s at MicroLens-1M size (needs CUDA)

Quality: valid and test AUC (test labels from the builder's local_truth) of our DIN and QIN with and without
the multimodal matrix (the embed stage's when it ran, else the provided one; MovieLens ships none), and of
FuxiCTR's DIN and deepctr-torch's DIN, each run in .venv-bench in a child process (their numpy/pandas pins
clash with ours). Speed: training samples/s (the train loop only, evaluation excluded), same batch size.
--gpu: builds nothing; expects the synthetic MicroLens-1M-sized set (3.6M train rows) from
    python -m recstack prepare --config configs/mmctr_synthetic.yaml data.synthetic.users=360000 \
        data.synthetic.items=91717 data.synthetic.images=false
and times QIN at the reference sizes and DIN at the challenge baseline's (batch 8192, bf16), eager and
torch.compile'd, with the training peak GPU memory:
    python bench/bench_rankers.py --gpu --epochs 3 data.synthetic.users=360000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recstack.config import load_config
from recstack.data.tables.ranking import read_matrix, read_rank_items, read_rank_rows
from recstack.metrics import auc
from recstack.paths import Embedded, Paths, Prepared
from recstack.stages.rank import build_model
from recstack.train import dist
from recstack.train.trainer import DeviceRows, TrainSettings, fit, predict

ROOT = Path(__file__).resolve().parents[1]
PEER_PY = ROOT / ".venv-bench" / "bin" / "python"


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
    s = TrainSettings(epochs=a.epochs, patience=a.epochs, lr=a.lr, batch_size=a.batch, seed=a.seed,
                      micro_batch=micro, progress=False, desc=name)  # fmt: skip
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


def gpu_mode(a) -> None:
    """Training samples/s at MicroLens-1M size: QIN at the reference sizes (eager and torch.compile) and DIN
    at the challenge baseline's sizes, bf16 autocast, batch 8192. Steady state = median over the epochs
    after the first (the first holds the compilation / allocator warm-up)."""
    sizes = ["data.synthetic.users=300000", "data.synthetic.items=91717", "data.synthetic.images=false"]
    cfg = load_config(ROOT / "configs" / "mmctr_synthetic.yaml", sizes + a.overrides)
    device = dist.resolve_device("cuda")
    items, rows, mm, mm_name = load(cfg)
    cards = [int(max(r.context[:, j].max() for r in rows.values())) + 1 for j in range(2)]
    print(f"{len(rows['train'])} train rows, {len(items)} items, history {rows['train'].hist.shape[1]}, "
          f"multimodal {mm_name} {None if mm is None else mm.shape}, {torch.cuda.get_device_name(device)}",
          flush=True)  # fmt: skip
    d = {k: DeviceRows.of(r, device) for k, r in rows.items() if k != "test"}
    archs = {
        "qin": {"emb_dim": 128, "attention_len": 64, "layers": 4, "dropout": 0.1},  # the QIN reference
        "din": {"emb_dim": 64, "attention_units": [512, 256], "dnn_units": [1024, 512, 256], "dropout": 0.0},
    }
    table = []
    for variant in a.variants.split(","):
        name, compiled = variant.removesuffix("+compile"), variant.endswith("+compile")
        torch.manual_seed(a.seed)
        model = build_model(name, items, mm, cards, archs[name], device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        s = TrainSettings(epochs=a.epochs, patience=a.epochs, lr=2e-3 if name == "qin" else 1e-3,
                          batch_size=8192, progress=False, desc=variant, compile=compiled)  # fmt: skip
        res = fit(model, d["train"], d["valid"], s)
        sps = [r["samples_per_s"] for r in res.curve]
        row = {"model": variant, "epochs": len(sps), "first_epoch_samples_per_s": sps[0],
               "steady_samples_per_s": float(np.median(sps[1:] if len(sps) > 1 else sps)),
               "best_valid_auc": res.best_auc, "train_peak_gib": max(r["train_peak_gib"] for r in res.curve),
               "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30}  # fmt: skip
        print(json.dumps(row | {"curve": res.curve}), flush=True)
        table.append(row)
        del model
        torch.cuda.empty_cache()
    print(
        "\n| model (bf16, batch 8192) | steady samples/s | first epoch samples/s | train peak GiB "
        "| peak GiB (with eval) | valid AUC |"
    )
    print("|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['model']} | {r['steady_samples_per_s']:,.0f} | {r['first_epoch_samples_per_s']:,.0f} "
              f"| {r['train_peak_gib']:.2f} | {r['peak_gpu_gib']:.2f} | {r['best_valid_auc']:.4f} |")  # fmt: skip


def main() -> None:
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
    p.add_argument("--gpu", action="store_true", help="QIN speed at MicroLens-1M size (CUDA)")
    p.add_argument("--variants", default="qin,qin+compile,din", help="--gpu: models to time")
    p.add_argument("overrides", nargs="*", help="config overrides (key=value), e.g. output_root=...")
    a = p.parse_args()
    if a.gpu:
        return gpu_mode(a)
    cfg = load_config(a.config, a.overrides)
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
