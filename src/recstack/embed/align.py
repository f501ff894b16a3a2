"""Behaviour alignment: a contrastive projection so that items one user engaged consecutively are close.

Content vectors place items by what they look like; a recommender needs them placed by who engages with
them. Industrial systems align the two before use (Taobao / MIM-style pre-alignment with InfoNCE over
co-engaged pairs). Here: the balanced multimodal features x (N, F) are projected by W (F, dim),
initialised with the PCA components (so step 0 is the unaligned embedding), and trained with a symmetric
InfoNCE loss over in-batch negatives on consecutive pairs from the training sequences only. A share of the
pairs is held out and training stops when their loss stops improving. Track-agnostic: pairs are item rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recstack.config import AlignConfig

if TYPE_CHECKING:
    from recstack.embed.tune import TextTower

log = logging.getLogger(__name__)

SMALL_STEP = 1 << 28  # multiply-adds of one projection step below which the CPU uses a single thread


def consecutive_pairs(
    hist: np.ndarray, target: np.ndarray | None = None, label: np.ndarray | None = None, chunk: int = 1 << 18
) -> np.ndarray:
    """Unique (a, b) item pairs, b engaged right after a by the same user, from left-padded histories
    (N, L) (0 = padding, most recent last) plus (last history item, clicked target) where label == 1.
    Overlapping windows of one user's rows give the same pairs; they are counted once."""
    codes = []
    base = np.int64(
        max(int(hist.max(initial=0)), int(target.max(initial=0)) if target is not None else 0) + 1
    )
    for s in range(0, len(hist), chunk):
        h = hist[s : s + chunk].astype(np.int64)
        a, b = h[:, :-1].ravel(), h[:, 1:].ravel()
        if target is not None:
            t = target[s : s + chunk].astype(np.int64)
            pos = np.ones(len(t), bool) if label is None else label[s : s + chunk] > 0
            a, b = np.r_[a, h[pos, -1]], np.r_[b, t[pos]]
        keep = (a > 0) & (b > 0) & (a != b)
        codes.append(np.unique(a[keep] * base + b[keep]))
    code = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    return np.stack([code // base, code % base], 1)


def sequence_pairs(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Unique (a, b) item pairs, b the event right after a in one user's sequence, from event arrays grouped
    by user and time-ordered within a user (TencentGR events). Repeats and the padding id 0 are dropped."""
    same = user[1:] == user[:-1]
    a, b = item[:-1][same].astype(np.int64), item[1:][same].astype(np.int64)
    keep = (a > 0) & (b > 0) & (a != b)
    base = np.int64(int(item.max(initial=0)) + 1)
    code = np.unique(a[keep] * base + b[keep])
    return np.stack([code // base, code % base], 1)


def info_nce(
    za: torch.Tensor,
    zb: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    tau: float,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over in-batch negatives; za, zb (B, D) unit rows, a, b (B,) item ids.

    A negative that is the same item as the positive (popular items recur in a batch) is masked out.
    log_q (I,): log frequency of each item in the pairs; in-batch negatives are drawn by that frequency, so
    without the correction popular items are over-penalised (Yi et al. 2019, sampling-bias-corrected
    two-tower; TAAC 2025 top solutions used the same logQ term).
    """
    logits = za @ zb.T / tau  # (B, B)
    eye = torch.eye(len(a), dtype=torch.bool, device=za.device)
    logits_ab, logits_ba = logits, logits.T
    if log_q is not None:
        logits_ab, logits_ba = logits_ab - log_q[b][None, :], logits_ba - log_q[a][None, :]
    logits_ab = logits_ab.masked_fill((b[None, :] == b[:, None]) & ~eye, float("-inf"))
    logits_ba = logits_ba.masked_fill((a[None, :] == a[:, None]) & ~eye, float("-inf"))
    labels = torch.arange(len(a), device=za.device)
    return 0.5 * (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels))


@contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to `n` inside the block (None: left as they are), restored after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def align(
    features: np.ndarray,
    mean: np.ndarray,
    init: np.ndarray,
    pairs: np.ndarray,
    rows: np.ndarray,
    settings: AlignConfig,
    seed: int = 0,
    device: torch.device | str = "cpu",
    tower: TextTower | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, dim) aligned matrix (zeros outside `rows`) and figures. features (N, F), mean (F,), init (F, dim).
    tower: the text encoder's last blocks trained with the projection (its block of x recomputed)."""
    device = torch.device(device)
    small = settings.batch_size * features.shape[1] * init.shape[1] < SMALL_STEP
    # tiny steps on a CPU: OpenMP sync costs more than it saves (12x on a busy 2-core VM)
    with _cpu_threads(1 if device.type == "cpu" and small and tower is None else None):
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        pairs = pairs[rows[pairs[:, 0]] & rows[pairs[:, 1]]]
        if len(pairs) > settings.max_pairs:
            pairs = pairs[np.sort(rng.choice(len(pairs), settings.max_pairs, replace=False))]
        n_hold = int(len(pairs) * settings.holdout) if len(pairs) >= 100 else 0
        perm = rng.permutation(len(pairs))
        held, train = pairs[perm[:n_hold]], pairs[perm[n_hold:]]
        x = torch.from_numpy(features - mean).to(device)  # (N, F)
        w = torch.nn.Parameter(torch.from_numpy(init.copy()).to(device))  # (F, dim)
        groups = [{"params": [w]}]
        if tower is not None:
            groups.append({"params": tower.params, "lr": settings.text_lr, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
        tau, bs = settings.temperature, settings.batch_size
        log_q = None
        if settings.logq:
            freq = np.bincount(train.ravel(), minlength=len(features)).astype(np.float64) + 1.0
            log_q = torch.from_numpy(np.log(freq / freq.sum()).astype(np.float32)).to(device)

        def loss_of(p: torch.Tensor) -> torch.Tensor:
            if tower is None:
                za, zb = x[p[:, 0]] @ w, x[p[:, 1]] @ w
            else:  # the batch's unique items through the encoder once
                items, inv = torch.unique(p.ravel(), return_inverse=True)
                z = tower.features(x, items) @ w  # (n, dim)
                za, zb = z[inv[: len(p)]], z[inv[len(p) :]]
            return info_nce(F.normalize(za, dim=-1), F.normalize(zb, dim=-1), p[:, 0], p[:, 1], tau, log_q)

        def held_loss() -> float:
            if not n_hold:
                return float("nan")
            with torch.no_grad():
                h = torch.from_numpy(held).to(device)
                return float(np.mean([loss_of(h[s : s + bs]).item() for s in range(0, len(h), bs)]))

        t_pairs = torch.from_numpy(train).to(device)
        best_w, best, start, stale, history = w.detach().clone(), held_loss(), held_loss(), 0, []
        best_tower = tower.state() if tower is not None else None
        epochs_run = 0
        for _ in tqdm(range(settings.epochs), desc="align", unit="epoch", disable=len(train) < 50_000):
            order = torch.randperm(len(t_pairs), generator=gen).to(device)
            for s in range(0, len(order) - bs // 2, bs):  # drop a small last batch: too few negatives
                opt.zero_grad(set_to_none=True)
                loss_of(t_pairs[order[s : s + bs]]).backward()
                opt.step()
            epochs_run += 1
            cur = held_loss()
            history.append(round(cur, 4))
            if n_hold and not cur < best - 1e-4:
                stale += 1
                if stale >= settings.patience:
                    break
            else:
                best, best_w, stale = cur, w.detach().clone(), 0
                best_tower = tower.state() if tower is not None else None
        out = np.zeros((len(features), init.shape[1]), np.float32)
        if tower is not None:  # the best epoch's encoder gives every item's text block
            tower.load(best_tower)
            tower.refresh(x)
        with torch.no_grad():
            out[rows] = (x[torch.from_numpy(np.flatnonzero(rows)).to(device)] @ best_w).cpu().numpy()
        figures = {
            "pairs_train": len(train),
            "pairs_holdout": n_hold,
            "epochs": epochs_run,
            "holdout_loss_start": round(start, 4),
            "holdout_loss_best": round(best, 4),
            "holdout_loss_by_epoch": history,
            "temperature": tau,
        }
        if tower is not None:
            figures |= {"text_layers": tower.layers, "text_lr": settings.text_lr}
        log.info(
            "alignment: %d pairs, %d epochs, held-out InfoNCE %.4f -> %.4f",
            len(train),
            epochs_run,
            start,
            best,
        )
        return out, figures
