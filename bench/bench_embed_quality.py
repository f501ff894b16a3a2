"""Quality probe of item-embedding variants: next-item HR@10 of content kNN on valid (recstack.embed.probe).

For each variant (each provided embedding alone, provided only, our text encoder alone, an image encoder
alone when --image-model is given, everything fused, fused + behaviour alignment) the same PCA / alignment
code as the `embed` stage builds a (n_items + 1, dim) matrix; the probe queries with the mean of the user's
last 5 history items and counts the clicked valid target in the top 10 (history items excluded).

    .venv/bin/python bench/bench_embed_quality.py --config configs/mmctr_movielens.yaml
    .venv/bin/python bench/bench_embed_quality.py --config configs/mmctr_synthetic.yaml

Runs `prepare` first if needed (skipped when done). Prints a table; bench/README.md records it.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from recstack.config import load_config
from recstack.data.prepared import read_hist, read_items, read_samples
from recstack.embed.align import AlignSettings, align, consecutive_pairs
from recstack.embed.fuse import Modality, behaviour_weights, fuse, provided_modality
from recstack.embed.image import ImageEncoder, encode_image_files
from recstack.embed.probe import knn_hit_rate
from recstack.embed.text import TextEncoder, encode_texts
from recstack.paths import Paths, Prepared
from recstack.pipeline import run_until


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/mmctr_movielens.yaml")
    ap.add_argument("--image-model", default="", help="a local CLIP / ViT folder (adds image variants)")
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
    settings = AlignSettings(**{k: ec.align[k] for k in ec.align if k != "enabled"})

    provided = [m for k, m in mods.items() if k not in ("text", "image")]
    variants: list[tuple[str, list[Modality]]] = [(f"{k} only", [m]) for k, m in mods.items()]
    if len(provided) > 1:
        variants.append(("provided only (fused)", provided))
    variants.append(("fused (all)", list(mods.values())))
    print(f"{cfg.dataset}: {n - 1} items, {len(target)} clicked valid rows, {len(pairs)} train pairs; "
          f"text encoder {enc.name} {t_text:.1f}s")  # fmt: skip
    print(f"{'variant':<28} {'HR@10':>7}  {'PCA var':>7}  {'HR@10 aligned':>13}")
    weights = behaviour_weights(list(mods.values()), pairs, rows, cfg.seed) if ec.auto_weights else {}
    print("behaviour weights:", weights)
    for label, ms in variants:
        for m in ms:
            m.weight = weights.get(m.name, 1.0) if len(ms) > 1 else 1.0
        f = fuse(ms, ec.dim, ec.whiten, rows, cfg.seed)
        hr = knn_hit_rate(f.matrix, hist, target)
        out, _ = align(f.features, f.mean, f.components, pairs, f.rows, settings, cfg.seed)
        aligned = f"{knn_hit_rate(out, hist, target):.4f}"
        print(f"{label:<28} {hr:>7.4f}  {f.figures['explained_variance']:>7.3f}  {aligned:>13}", flush=True)


if __name__ == "__main__":
    main()
