"""Text-encoder throughput: the embed stage's TextEncoder (length-bucketed batches) against a plain
transformers loop (same model, texts, batch size, threads, max length), in the same run.

    .venv/bin/python bench/bench_embed.py                       # MovieLens-100K titles + MicroLens titles
    .venv/bin/python bench/bench_embed.py --texts 4000 --batch-size 64 --threads 2

Texts: the real MicroLens titles in ../shared/fixtures/ (lengths vary like a real catalogue) and the
MovieLens-100K item texts when prepared, shuffled and cycled to --texts. Prints texts/s for both, the
ratio (target >= 1.3x) and the max abs difference of the vectors (must be < 1e-4).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from recstack.embed.hf import inference
from recstack.embed.text import TextEncoder, pool

ROOT = Path(__file__).resolve().parents[1]
# the real MicroLens titles: ../shared/fixtures next to the clone, or where RECSTACK_FIXTURES points
FIXTURES = Path(os.environ.get("RECSTACK_FIXTURES") or ROOT.parent / "shared" / "fixtures")
TITLES = FIXTURES / "microlens_100k" / "MicroLens-100k_title_en.csv"
MOVIELENS_ITEMS = ROOT / "outputs" / "mmctr" / "movielens" / "mmctr_movielens" / "prepare" / "items.parquet"


def corpus(n: int, seed: int) -> list[str]:
    texts: list[str] = []
    if TITLES.is_file():
        for line in TITLES.read_text(encoding="utf-8").splitlines()[1:]:
            _, _, t = line.partition(",")
            if t.strip():
                texts.append(t.strip())
    if MOVIELENS_ITEMS.is_file():
        import pandas as pd

        texts += [t for t in pd.read_parquet(MOVIELENS_ITEMS, columns=["title"])["title"] if t]
    if not texts:
        raise SystemExit("no texts: neither the MicroLens fixtures nor a prepared MovieLens run found")
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.permutation(np.resize(np.arange(len(texts)), n))]


def plain_loop(enc: TextEncoder, texts: list[str], autocast: bool = True) -> np.ndarray:
    """What most notebooks do: batches in input order, padded by the tokenizer to the batch's longest.
    autocast: the same precision as ours (bf16 on CUDA; nothing changes on CPU)."""
    out = []
    for s in range(0, len(texts), enc.batch_size):
        b = enc.tokenizer(texts[s : s + enc.batch_size], padding=True, truncation=True,
                          max_length=enc.max_length, return_tensors="pt").to(enc.device)  # fmt: skip
        with inference(enc.device) if autocast else torch.inference_mode():
            h = enc.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            out.append(pool(h, b["attention_mask"], enc.pooling).float().cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="local checkpoint folder (default: the shipped MiniLM)")
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings for each side")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = TextEncoder(args.model, "mean", args.max_length, args.batch_size, args.device)
    texts = corpus(args.texts, 0)
    lengths = [len(x) for x in enc.tokenize(texts)[0]]
    print(f"model {enc.name} on {enc.device}, {len(texts)} texts (tokens mean {np.mean(lengths):.1f}, "
          f"max {max(lengths)}), batch {args.batch_size}, threads {args.threads}")  # fmt: skip
    enc.encode(texts[: args.batch_size], progress=False)  # warm-up

    def timed(fn) -> tuple[float, np.ndarray]:
        best, out = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    if enc.device.type == "cuda":  # both sides under the same bf16 autocast; a float32 plain loop for scale
        t32, v32 = timed(lambda: plain_loop(enc, texts, autocast=False))
        print(f"plain loop, float32     : {len(texts) / t32:8.1f} texts/s ({t32:.2f}s)")
    t_plain, v_plain = timed(lambda: plain_loop(enc, texts))
    t_ours, v_ours = timed(lambda: enc.encode(texts, progress=False))  # tokenising included
    diff = float(np.abs(v_plain - v_ours).max())
    print(f"plain transformers loop : {len(texts) / t_plain:8.1f} texts/s ({t_plain:.2f}s)")
    print(f"recstack TextEncoder    : {len(texts) / t_ours:8.1f} texts/s ({t_ours:.2f}s)")
    print(f"speed-up {t_plain / t_ours:.2f}x (target >= 1.3x); max abs diff {diff:.2e} (must be < 1e-4)")
    if enc.device.type == "cuda":  # bf16 rounds differently with other padding: compare with float32 too
        print(f"bf16 vs float32 plain loop: max abs diff {float(np.abs(v32 - v_ours).max()):.2e}, min cosine "
              f"{float(np.min(np.sum(v32 * v_ours, 1) / np.linalg.norm(v32, axis=1) / np.linalg.norm(v_ours, axis=1))):.5f}")  # fmt: skip


if __name__ == "__main__":
    main()
