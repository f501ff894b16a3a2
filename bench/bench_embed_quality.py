"""Quality probes of item-embedding variants: next-item HR@10 of content kNN on valid (recstack.embed.probe)
and the valid AUC of a fixed, small DIN that reads the embedding frozen (MMCTR Task 1's protocol).

For each variant (each provided embedding alone, provided only, our text encoder alone, an image encoder
alone when --image-model is given, everything fused, fused + behaviour alignment) the same PCA / alignment
code as the `embed` stage builds a (n_items + 1, dim) matrix, and both probes read it:
- kNN: the query is the mean of the user's last 5 history items; a hit is the clicked valid target in the
  top 10 (history items excluded). No training.
- DIN: the project's DIN (`recstack.stages.rank.build_model`) over item id + a trainable Linear projection
  of the frozen matrix (no tags / levels, so only the embedding differs between rows), fixed sizes (emb 16,
  attention [64, 32], DNN [128, 64], Adam lr 2e-3, batch 1024, --din-epochs, seed from the config or
  --din-seed, best valid epoch kept), on the same train rows for every variant (--din-train-rows caps them).
  Prints valid / test AUC (test from the builders' hidden labels, when present). Reference row: id only.

    .venv/bin/python -m recstack prepare --config configs/mmctr_movielens.yaml
    .venv/bin/python bench/bench_embed_quality.py --config configs/mmctr_movielens.yaml
    .venv/bin/python bench/bench_embed_quality.py --config configs/mmctr_synthetic.yaml [--no-din]

(--no-din: kNN only, seconds.) One modality alone (MovieLens: text) is also the fused matrix: one row.

Runs `prepare` first if needed (skipped when done). Prints a table; bench/README.md "Embeddings" records it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import pandas as pd
import torch

from recstack.config import DinConfig, RankConfig, load_config
from recstack.data.tables.prepared import read_hist, read_items, read_samples
from recstack.data.tables.ranking import read_rank_items, read_rank_rows
from recstack.embed.align import align, consecutive_pairs
from recstack.embed.fuse import Modality, behaviour_weights, fuse, provided_modality
from recstack.embed.image import ImageEncoder, encode_image_files
from recstack.embed.probe import knn_hit_rate
from recstack.embed.text import TextEncoder, encode_texts
from recstack.metrics import auc
from recstack.paths import Paths, Prepared
from recstack.pipeline import run_until
from recstack.stages.rank import build_model
from recstack.train import dist
from recstack.train.trainer import DeviceRows, TrainSettings, fit, predict

DIN_EMB = 16  # fixed downstream sizes: the probe compares embeddings, not DIN settings
DIN_ARCH = {"emb_dim": DIN_EMB, "attention_units": [4 * DIN_EMB, 2 * DIN_EMB],
            "dnn_units": [8 * DIN_EMB, 4 * DIN_EMB], "dropout": 0.0}  # fmt: skip
DIN_LR, DIN_BATCH = 2e-3, 1024


class DinProbe:
    """Valid (and test) AUC of the fixed DIN with a given frozen item matrix (None = id only)."""

    def __init__(self, paths: Paths, epochs: int, train_rows: int, seed: int, device: str):
        prep = paths.stage_dir("prepare")
        self.items = read_rank_items(prep)
        rows = {s: read_rank_rows(prep, s, len(self.items)) for s in ("train", "valid", "test")}
        if paths.raw_mmctr.test_truth.is_file():
            truth = pd.read_parquet(paths.raw_mmctr.test_truth).set_index("ID")["label"]
            rows["test"].label = truth.reindex(rows["test"].row_id).to_numpy(np.float32)
        if rows["test"].label is None or np.isnan(rows["test"].label).any():
            del rows["test"]
        if train_rows and train_rows < len(rows["train"]):  # the same subsample for every variant
            keep = np.sort(np.random.default_rng(seed).choice(len(rows["train"]), train_rows, replace=False))
            rows["train"] = rows["train"].take(keep)
        self.n_train = len(rows["train"])
        self.cards = [int(max(r.context[:, j].max() for r in rows.values())) + 1 for j in range(2)]
        self.device = dist.resolve_device(device)
        self.rows = {k: DeviceRows.of(r, self.device) for k, r in rows.items()}
        self.labels = {k: r.label for k, r in rows.items()}
        self.settings = TrainSettings(RankConfig(epochs=epochs, patience=epochs, progress=False),
                                      DinConfig(lr=DIN_LR, batch_size=DIN_BATCH), seed=seed,
                                      desc="din-probe")  # fmt: skip
        self.seed = seed

    def __call__(self, matrix: np.ndarray | None) -> dict:
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        model = build_model("din", self.items, matrix, self.cards, DIN_ARCH, self.device, side=False)
        res = fit(model, self.rows["train"], self.rows["valid"], self.settings)
        out = {"valid_auc": res.best_auc, "best_epoch": res.best_epoch}
        if "test" in self.rows:
            out["test_auc"] = auc(self.labels["test"], predict(model, self.rows["test"]))
        if matrix is not None:
            out["mean_row_norm"] = float(np.linalg.norm(matrix[1:], axis=1).mean())
        out["seconds"] = round(time.perf_counter() - t0, 1)
        return out


def cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{r['valid_auc']:.4f}" + (f" / {r['test_auc']:.4f}" if "test_auc" in r else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/mmctr_movielens.yaml")
    ap.add_argument("--image-model", default="", help="a local CLIP / ViT folder (adds image variants)")
    ap.add_argument("--no-din", action="store_true", help="kNN probe only (no DIN training)")
    ap.add_argument("--din-epochs", type=int, default=3)
    ap.add_argument("--din-train-rows", type=int, default=100_000, help="train rows for DIN; 0 = all")
    ap.add_argument(
        "--din-seed", type=int, default=None, help="DIN init / batch order (default: config seed)"
    )
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, args.overrides)
    ec, paths = cfg.embed, Paths(cfg)
    run_until(cfg, "prepare")
    prep = paths.stage_dir("prepare")
    items = read_items(prep)
    n, rows = len(items), items["item_id"].to_numpy() > 0

    mods: dict[str, Modality] = {}
    for name in ec.provided:
        if (prep / Prepared.embedding(name)).is_file():
            matrix = np.load(prep / Prepared.embedding(name))
            mods[name] = provided_modality(name, matrix, n, items[f"has_{name}"].to_numpy())
    t0 = time.perf_counter()
    enc = TextEncoder(ec.text.model, ec.text.pooling, ec.text.max_length, ec.text.batch_size, cfg.device)
    vec, mask, _ = encode_texts(enc, items["title"].tolist(), paths.embed_cache_dir)
    mods["text"] = Modality("text", vec, mask & rows, source=str(enc.path))
    t_text = time.perf_counter() - t0
    if args.image_model:
        img = ImageEncoder(args.image_model, device=cfg.device)
        cover = [p or None for p in items["image_path"].tolist()]
        vec, mask, _ = encode_image_files(img, cover, paths.embed_cache_dir)
        mods["image"] = Modality("image", vec, mask & rows, source=args.image_model)

    train, valid = read_samples(prep, "train"), read_samples(prep, "valid")
    clicked = valid["label"].to_numpy() > 0
    hist, target = read_hist(prep, "valid")[clicked], valid["item_id"].to_numpy()[clicked]
    pairs = consecutive_pairs(
        read_hist(prep, "train"), train["item_id"].to_numpy(), train["label"].to_numpy()
    )
    settings = ec.align

    provided = [m for k, m in mods.items() if k not in ("text", "image")]
    variants: list[tuple[str, list[Modality]]] = [(f"{k} only", [m]) for k, m in mods.items()]
    if len(provided) > 1:
        variants.append(("provided only (fused)", provided))
    if len(mods) > 1:
        variants.append(("fused (all)", list(mods.values())))
    else:  # one modality: it is the fused matrix (no second row trained for the same matrix)
        variants[0] = (f"{variants[0][0]} (= fused)", variants[0][1])
    print(f"{cfg.dataset}: {n - 1} items, {len(target)} clicked valid rows, {len(pairs)} train pairs; "
          f"text encoder {enc.name} {t_text:.1f}s")  # fmt: skip
    din = None
    if not args.no_din:
        seed = cfg.seed if args.din_seed is None else args.din_seed
        din = DinProbe(paths, args.din_epochs, args.din_train_rows, seed, cfg.device)
        print(f"DIN probe: {din.n_train} train rows, emb {DIN_EMB}, attention {DIN_ARCH['attention_units']}, "
              f"DNN {DIN_ARCH['dnn_units']}, batch {DIN_BATCH}, lr {DIN_LR}, {args.din_epochs} epochs, "
              f"seed {seed}, {din.device}, torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    weights = behaviour_weights(list(mods.values()), pairs, rows, cfg.seed) if ec.auto_weights else {}
    print("behaviour weights:", weights, flush=True)
    table = []
    if din is not None:
        ref = din(None)
        print(json.dumps({"variant": "id only", "din": ref}), flush=True)
        table.append(("id only (no matrix)", None, None, None, ref, None))
    for label, ms in variants:
        for m in ms:
            m.weight = weights.get(m.name, 1.0) if len(ms) > 1 else 1.0
        f = fuse(ms, ec.dim, ec.whiten, rows, cfg.seed)
        hr = knn_hit_rate(f.matrix, hist, target)
        out, _ = align(f.features, f.mean, f.components, pairs, f.rows, settings, cfg.seed)
        hr_aligned = knn_hit_rate(out, hist, target)
        d, d_aligned = (din(f.matrix), din(out)) if din is not None else (None, None)
        var = f.figures["explained_variance"]
        print(json.dumps({"variant": label, "hr10": hr, "pca_var": var, "hr10_aligned": hr_aligned,
                          "din": d, "din_aligned": d_aligned}), flush=True)  # fmt: skip
        table.append((label, hr, var, hr_aligned, d, d_aligned))

    what = "valid / test AUC" if din is not None and "test" in din.rows else "valid AUC"
    print(f"\n| variant | HR@10 | PCA variance kept | HR@10 aligned | DIN {what} | DIN {what}, aligned |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, hr, var, hr_a, d, d_a in table:
        nums = "| - | - | -" if hr is None else f"| {hr:.4f} | {var:.3f} | {hr_a:.4f}"
        print(f"| {label} {nums} | {cell(d)} | {cell(d_a)} |")


if __name__ == "__main__":
    main()
