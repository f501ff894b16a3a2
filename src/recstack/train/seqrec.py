"""Training and inference of the sequence retriever (models/seqrec.py), by optimizer steps.

Data stays on the device as flat event arrays (item, action, gap bucket); a training sample is a window of
up to `max_len` events of one user and a batch is gathered from window bounds by index (no per-sample
Python). Every event after a window's first is the next-item target of the event before it; targets count
by the metric's action weights (click 1, conversion 2.5, exposure 0). Losses:
  - infonce: cosine / temperature against the positive, the batch's other positives and a shared set of
    items sampled by popularity (mixed with uniform), each logit minus log of its sampling rate (logQ,
    Yi et al. 2019), accidental hits of the positive masked; when the drawable items number at most
    `full_softmax_items` (MovieLens: 1,682), the exact softmax over all of them instead (SASRec with
    cross-entropy over the whole catalogue beats its sampled BCE by a wide margin: Klenitskiy & Vasilev
    2023, "Turning Dross Into Gold Loss"); with `exclude_seen` the items a position has already seen in its
    window are no negatives there (they are filtered out at inference too);
  - bce: the official TencentGR baseline: dot product, one uniformly random negative per position.
Schedule: max(min_steps, epochs x batches) steps, AdamW, linear warmup then cosine decay to 0 over the steps
after the warmup, evaluation on the
valid queries every `eval_every` steps (0: about EVALS_PER_RUN times over the run) with early stopping on the
best one; every step draws from generators seeded by
(seed, step), so a run resumed from its last evaluation's checkpoint repeats the uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recstack.artifacts import atomic_path
from recstack.config import SeqrecConfig
from recstack.metrics import tencentgr_score
from recstack.models.seqrec import SeqRec, gap_buckets
from recstack.tasks import ACTION_WEIGHTS, TGR_K
from recstack.train import hooks

log = logging.getLogger(__name__)
EVALS_PER_RUN = 10  # valid evaluations over a run when eval_every is 0

LOSSES = ("infonce", "bce")


@dataclass
class EventStore:
    """Flat event arrays of one table (grouped by user, time-ordered), on the device."""

    item: torch.Tensor  # (E,) int32
    action: torch.Tensor  # (E,) int8
    gap: torch.Tensor  # (E,) int8 bucket of the gap to the user's previous event

    @classmethod
    def of(
        cls, user: np.ndarray, item: np.ndarray, action: np.ndarray, ts: np.ndarray, device: torch.device
    ) -> EventStore:
        first = np.r_[True, user[1:] != user[:-1]] if len(user) else np.zeros(0, bool)
        gap = gap_buckets(torch.from_numpy(ts.astype(np.int64)), torch.from_numpy(first))
        return cls(
            torch.from_numpy(item.astype(np.int32)).to(device),
            torch.from_numpy(action.astype(np.int8)).to(device),
            gap.to(torch.int8).to(device),
        )

    @classmethod
    def cat(cls, a: EventStore, b: EventStore) -> EventStore:
        """b's events after a's (each keeps its own gap buckets: b's first event is no gap from a's last)."""
        return cls(torch.cat([a.item, b.item]), torch.cat([a.action, b.action]), torch.cat([a.gap, b.gap]))


@dataclass
class Windows:
    """Samples as event ranges: inputs are events [max(start, end - L), end) of one user."""

    start: torch.Tensor  # (N,) long: the user's first event (inputs never reach before it)
    end: torch.Tensor  # (N,) long, exclusive
    user: torch.Tensor  # (N,) long profile row (0 = no profile)

    def __len__(self) -> int:
        return len(self.end)

    @classmethod
    def cat(cls, a: Windows, b: Windows) -> Windows:
        return cls(torch.cat([a.start, b.start]), torch.cat([a.end, b.end]), torch.cat([a.user, b.user]))


def train_windows(
    start: np.ndarray, end: np.ndarray, user: np.ndarray, max_len: int, device: torch.device
) -> Windows:
    """Tile each user's training events [start, end) from the end into windows of `max_len` inputs whose
    targets are the next events: each event after the user's first is a target exactly once."""
    count = np.where(end - start >= 2, (end - start - 1 + max_len - 1) // max_len, 0)
    g = np.repeat(np.arange(len(start)), count)
    k = np.arange(len(g)) - np.repeat(np.cumsum(count) - count, count)  # window number from the end
    e = end[g] - 1 - k * max_len  # the last input is event e - 1; its target is event e
    return Windows(*(torch.from_numpy(a.astype(np.int64)).to(device) for a in (start[g], e, user[g])))


def query_windows(start: np.ndarray, cut: np.ndarray, user: np.ndarray, device: torch.device) -> Windows:
    """One query per user: the history [start, cut) before a held-out target (or the whole history)."""
    return Windows(*(torch.from_numpy(np.array(a, np.int64)).to(device) for a in (start, cut, user)))


def gather(store: EventStore, w: Windows, idx: torch.Tensor, max_len: int) -> dict[str, torch.Tensor]:
    """Model inputs of windows `idx`, left-padded to (B, L), plus each position's next event row."""
    s, e = w.start[idx], w.end[idx]  # (B,)
    pos = e[:, None] - max_len + torch.arange(max_len, device=e.device)  # (B, L) event rows
    valid = pos >= s[:, None]  # (B, L)
    p = torch.where(valid, pos, 0)
    return {
        "user": w.user[idx],
        "item": torch.where(valid, store.item[p].long(), 0),
        "action": torch.where(valid, store.action[p].long(), 0),
        "gap": torch.where(valid, store.gap[p].long(), 0),
        "valid": valid,
        "next": p + 1,
    }


def infonce_loss(
    q: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    pos_id: torch.Tensor,
    neg_id: torch.Tensor,
    logq_pos: torch.Tensor | None,
    logq_neg: torch.Tensor | None,
    weight: torch.Tensor,
    temperature: float,
    skip: torch.Tensor | None = None,
) -> torch.Tensor:
    """q (N, d) queries, pos (N, d) their targets, neg (M, d) shared negatives; ids to mask accidental hits;
    logq_* the log sampling rate of each target / negative (None: no correction); weight (N,); skip (N, M)
    bool: negatives left out of a row (items that query has already seen)."""
    q, pos, neg = F.normalize(q, dim=-1), F.normalize(pos, dim=-1), F.normalize(neg, dim=-1)
    lp = (q * pos).sum(-1, keepdim=True) / temperature  # (N, 1)
    ln = q @ neg.T / temperature  # (N, M)
    if logq_pos is not None and logq_neg is not None:
        lp, ln = lp - logq_pos[:, None], ln - logq_neg[None, :]
    ln = ln.masked_fill(neg_id[None, :] == pos_id[:, None], float("-inf"))  # the positive is no negative
    if skip is not None:
        ln = ln.masked_fill(skip, float("-inf"))
    nll = torch.logsumexp(torch.cat([lp, ln], 1), 1) - lp[:, 0]  # (N,)
    return (nll * weight).sum() / weight.sum()


def bce_loss(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """q, pos, neg (N, d): one negative per position, dot-product logits (the official baseline)."""
    lp, ln = (q * pos).sum(-1), (q * neg).sum(-1)  # (N,)
    nll = F.softplus(-lp) + F.softplus(ln)  # -log sigmoid(lp) - log(1 - sigmoid(ln))
    return (nll * weight).sum() / weight.sum()


@dataclass(frozen=True)
class SeqTrainSettings:
    """One training run: the schema's seqrec block as the config gives it (config.SeqrecConfig, every knob
    with its default) and what the stage decides for this run; no settings or defaults of its own."""

    cfg: SeqrecConfig
    exclude_seen: bool  # seqrec.exclude_seen resolved (auto: decided by tgr_prepared.seen_policy)
    seed: int  # seed + seqrec.seed_offset
    resume: Path | None = None  # checkpoint written at every evaluation
    resume_key: str = ""  # what the checkpoint must match to be resumed (config + data fingerprint)


@dataclass
class FitResult:
    best_score: float
    best_step: int
    steps: int
    curve: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def sampling_rates(counts: np.ndarray, eligible: np.ndarray, mix: float) -> np.ndarray:
    """(I,) probability of drawing each item as a shared negative: popularity (weighted target counts)
    mixed with uniform over `eligible` items (so never-clicked and cold pool items are pushed away too)."""
    pop = counts / max(counts.sum(), 1e-12)
    uni = eligible / max(eligible.sum(), 1)
    return (1 - mix) * pop + mix * uni


@torch.no_grad()
def encode_queries(
    model: SeqRec, store: EventStore, w: Windows, max_len: int, batch: int = 1024
) -> torch.Tensor:
    """(Q, d) the query vector after each window's last event, told the next event is a click."""
    model.eval()
    out = []
    for i in range(0, len(w), batch):
        b = gather(store, w, torch.arange(i, min(i + batch, len(w)), device=w.end.device), max_len)
        with _autocast(w.end.device):
            h = model(b["user"], b["item"], b["action"], b["gap"], b["valid"])
        out.append(h[:, -1].float())
    return torch.cat(out) if out else torch.zeros(0, model.ln_f.normalized_shape[0])


@torch.no_grad()
def encode_items(model: SeqRec, ids: torch.Tensor, batch: int = 65536) -> torch.Tensor:
    model.eval()
    with _autocast(ids.device):
        return torch.cat([model.item_vectors(ids[i : i + batch]).float() for i in range(0, len(ids), batch)])


def seen_lists(store: EventStore, w: Windows) -> list[np.ndarray]:
    item = store.item.cpu().numpy()
    return [item[s:e] for s, e in zip(w.start.tolist(), w.end.tolist(), strict=True)]


@torch.no_grad()
def brute_topk(
    q: torch.Tensor,
    vecs: torch.Tensor,
    ids: torch.Tensor,
    k: int,
    seen: list[np.ndarray] | None,
    chunk: int = 1024,
) -> np.ndarray:
    """Exact top-k `ids` per query by inner product, each query's seen ids left out: (Q, k)."""
    col = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long, device=ids.device)
    col[ids] = torch.arange(len(ids), device=ids.device)  # item -> column of `vecs`
    out = []
    for i in range(0, len(q), chunk):
        s = q[i : i + chunk] @ vecs.T  # (c, P)
        if seen is not None:
            for r, items in enumerate(seen[i : i + chunk]):
                c = col[torch.from_numpy(items[items <= int(ids.max())].astype(np.int64)).to(ids.device)]
                s[r, c[c >= 0]] = float("-inf")
        out.append(ids[torch.topk(s, min(k, len(ids)), 1).indices].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def user_vectors(model: SeqRec, store: EventStore, w: Windows, s: SeqTrainSettings) -> torch.Tensor:
    q = encode_queries(model, store, w, s.cfg.max_len)
    return F.normalize(q, dim=-1) if s.cfg.loss == "infonce" else q  # cosine for infonce, dot for bce


def item_vectors(model: SeqRec, ids: torch.Tensor, s: SeqTrainSettings) -> torch.Tensor:
    v = encode_items(model, ids)
    return F.normalize(v, dim=-1) if s.cfg.loss == "infonce" else v


def evaluate(
    model: SeqRec,
    store: EventStore,
    w: Windows,
    target: np.ndarray,
    action: np.ndarray,
    pool: torch.Tensor,
    s: SeqTrainSettings,
    seen: list[np.ndarray] | None,
) -> dict[str, float]:
    top = brute_topk(user_vectors(model, store, w, s), item_vectors(model, pool, s), pool, TGR_K, seen)
    return tencentgr_score(top, target, k=TGR_K, action=action, action_weights=ACTION_WEIGHTS)


def seen_in_window(item: torch.Tensor, valid: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """item, valid (B, L); cand (M,) item ids -> (B, L, M) bool: candidate m is among the window's events up
    to and including position t (what the query after event t has seen). Through each candidate's first
    position in the window (one scatter-min, then a broadcast compare): a running max over the (B, L, M)
    tensor took ~25x longer on CPU and a quarter of a MovieLens step."""
    b, n = item.shape
    col = torch.full(
        (int(torch.maximum(item.max(), cand.max())) + 1,), -1, dtype=torch.long, device=item.device
    )
    col[cand] = torch.arange(len(cand), device=item.device)  # item -> candidate column (-1: none)
    c = torch.where(valid, col[item], -1)  # (B, L)
    first = torch.full((b, len(cand) + 1), n, dtype=torch.long, device=item.device)  # last column: none
    pos = torch.arange(n, device=item.device).expand(b, n)  # (B, L)
    first.scatter_reduce_(1, torch.where(c >= 0, c, len(cand)), pos, "amin")  # (B, M + 1)
    return first[:, None, :-1] <= torch.arange(n, device=item.device)[None, :, None]  # (B, L, M)


def batch_loss(
    model: SeqRec,
    store: EventStore,
    b: dict[str, torch.Tensor],
    weights: torch.Tensor,
    pop: torch.Tensor,
    rate: torch.Tensor,
    drawable: torch.Tensor,
    g: torch.Generator,
    s: SeqTrainSettings,
) -> torch.Tensor | None:
    """The weighted next-item loss of one gathered batch (None when it holds no click target)."""
    device = store.item.device
    nxt = torch.where(b["valid"], b["next"], 0)  # (B, L) row of each position's next event
    nxt_action = store.action[nxt].long()
    w = weights[nxt_action] * b["valid"]  # (B, L) metric weight of each target
    sel = w > 0
    if not sel.any():
        return None
    tgt = store.item[nxt][sel].long()  # (N,) target items
    full = s.cfg.loss == "infonce" and len(drawable) <= s.cfg.full_softmax_items
    if s.cfg.loss == "bce":
        neg_id = drawable[torch.randint(len(drawable), (len(tgt),), generator=g, device=device)]
    elif full:  # a catalogue no larger than the negatives one would draw: exact softmax over all of it
        neg_id = drawable
    else:
        m = min(s.cfg.inbatch, len(tgt))
        inb = tgt[torch.randperm(len(tgt), generator=g, device=device)[:m]]  # (m,) in-batch positives
        smp = torch.multinomial(rate.float(), s.cfg.negatives, replacement=True, generator=g)  # (K,) shared
        neg_id = torch.cat([inb, smp])
    out_ids = torch.cat([tgt, neg_id])
    with _autocast(device):
        table = model.item_table() if model.items.use_table(b["item"], out_ids) else None
        h = model(b["user"], b["item"], b["action"], b["gap"], b["valid"], nxt_action, table)  # (B, L, d)
        q = h[sel].float()  # (N, d)
        vec = (model.item_vectors(out_ids) if table is None else table[out_ids]).float()
        if s.cfg.loss == "bce":
            return bce_loss(q, vec[: len(tgt)], vec[len(tgt) :], w[sel])
        lq_pos = lq_neg = None
        if (
            s.cfg.logq and not full
        ):  # expected count of an item among the negatives: m x target popularity + K x rate
            logq = torch.log((m * pop + s.cfg.negatives * rate).clamp(min=1e-12)).float()
            lq_pos, lq_neg = logq[tgt], logq[neg_id]
        skip = (
            seen_in_window(b["item"], b["valid"], neg_id)[sel]
            if full and s.exclude_seen and s.cfg.mask_seen
            else None
        )
        return infonce_loss(
            q, vec[: len(tgt)], vec[len(tgt) :], tgt, neg_id, lq_pos, lq_neg, w[sel], s.cfg.temperature, skip
        )


def lr_factor(t: int, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total` (the decay starts after the
    warmup: a warmup that is a large share of a short schedule would otherwise never reach the peak)."""
    if t < warmup:
        return (t + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min((t - warmup) / max(total - warmup, 1), 1.0)))


def fit(
    model: SeqRec,
    store: EventStore,
    train: Windows,
    valid: Windows,
    valid_target: np.ndarray,
    valid_action: np.ndarray,
    pool: torch.Tensor,
    popularity: np.ndarray,
    rates: np.ndarray,
    s: SeqTrainSettings,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train by steps; returns the best valid score's weights (loaded into `model`) and the curve."""
    device = store.item.device
    per_epoch = max(math.ceil(len(train) / s.cfg.batch_size), 1)
    total = max(s.cfg.min_steps, s.cfg.epochs * per_epoch)
    # 0: ~10 evaluations whatever the size: once per epoch was one evaluation at the end of a 1,000-step floor
    # on a small download (MovieLens read through tencentgr_real.yaml: 0.1611 there vs 0.1862 kept at the best
    # of every 100 steps, step 300), and 7,800 steps apart at 1M users
    every = s.cfg.eval_every or max(1, math.ceil(total / EVALS_PER_RUN))
    weights = torch.tensor([ACTION_WEIGHTS[a] for a in sorted(ACTION_WEIGHTS)], device=device)
    rate = torch.from_numpy(rates.astype(np.float64)).to(device)  # (I,) shared negatives' distribution
    pop = torch.from_numpy(popularity.astype(np.float64)).to(device)  # (I,) the targets' (in-batch) one
    drawable = torch.nonzero(rate > 0).squeeze(1)  # bce: uniform over items that can be drawn
    seen = seen_lists(store, valid) if s.exclude_seen else None
    # fused on CUDA: one kernel for the whole update (the 4.78M-row id table of TencentGR is most of the
    # parameters, updated densely every step)
    opt = torch.optim.AdamW(
        model.parameters(), lr=s.cfg.lr, weight_decay=s.cfg.weight_decay, fused=device.type == "cuda"
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, s.cfg.warmup, total))
    best, bad, start = FitResult(-1.0, -1, total), 0, 0
    if s.resume is not None and s.resume.is_file():
        ck = torch.load(s.resume, map_location="cpu", weights_only=False)
        if ck.get("key") == s.resume_key:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            best = FitResult(ck["best_score"], ck["best_step"], total, ck["curve"], ck["best_state"])
            bad, start = ck["bad"], ck["step"] + 1
            log.info("seqrec: resumed after step %d from %s", start, s.resume)
    bar = tqdm(
        range(start, total),
        desc=f"seqrec {s.cfg.loss}",
        disable=not s.cfg.progress,
        mininterval=1.0,
        leave=False,
        dynamic_ncols=True,
    )
    # the running loss stays on the device (float64, summed in step order: the same figure as a Python sum of
    # each step's value) so a GPU step never waits for the host; it is read at each evaluation
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_loss, samples, t0 = 0, 0, time.perf_counter()
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.long)
    for step in bar:
        if bad >= s.cfg.patience:
            break
        model.train()
        torch.manual_seed(s.seed * 1_000_003 + step)  # dropout: the same draws after a resume
        g = torch.Generator(device=device).manual_seed(s.seed * 7919 + step)
        epoch, j = divmod(step, per_epoch)
        if epoch != perm_epoch:  # one shuffle per epoch (a CPU randperm of 1M windows: 9.5 ms a step here)
            gen = torch.Generator().manual_seed(s.seed * 1009 + epoch)
            perm_epoch, perm = epoch, torch.randperm(len(train), generator=gen).to(device)
        idx = perm[j * s.cfg.batch_size : (j + 1) * s.cfg.batch_size]
        loss = batch_loss(
            model, store, gather(store, train, idx, s.cfg.max_len), weights, pop, rate, drawable, g, s
        )
        if loss is not None:  # None: no click in these windows (tiny data): nothing to learn from
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum, n_loss = loss_sum + loss.detach().double(), n_loss + 1
        sched.step()
        samples += len(idx)
        if on_step is not None:
            on_step(step)
        if (step + 1) % every == 0 or step == total - 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the queued steps belong to this interval's time
            seconds = time.perf_counter() - t0
            m_ = evaluate(model, store, valid, valid_target, valid_action, pool, s, seen)
            row = {
                "step": step + 1,
                "epoch": round((step + 1) / per_epoch, 2),
                "train_loss": round(float(loss_sum) / max(n_loss, 1), 5),
                "lr": opt.param_groups[0]["lr"],
                **{f"valid_{k}": round(v, 5) for k, v in m_.items()},
                "samples_per_s": round(samples / seconds, 1),
                "seconds": round(seconds, 2),
            }
            best.curve.append(row)
            if m_["score"] > best.best_score:
                best.best_score, best.best_step, bad = m_["score"], step + 1, 0
                best.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                bad += 1
            log.info(
                "seqrec step %d: loss %.4f valid score %.4f (HR@10 %.4f)%s",
                step + 1,
                row["train_loss"],
                m_["score"],
                m_["hr@10"],
                "" if bad else " (best)",
            )
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", score=f"{m_['score']:.4f}")
            hooks.report(step + 1, m_["score"])  # a sweep's pruner may stop here (train/hooks.py)
            if s.resume is not None:
                ck = {
                    "key": s.resume_key,
                    "step": step,
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "best_score": best.best_score,
                    "best_step": best.best_step,
                    "curve": best.curve,
                    "best_state": best.state,
                    "bad": bad,
                }
                with atomic_path(s.resume) as tmp:
                    torch.save(ck, tmp)
            loss_sum, n_loss, samples, t0 = loss_sum.zero_(), 0, 0, time.perf_counter()
    bar.close()
    if best.state:
        model.load_state_dict(best.state)
    return best
