"""One model, one training run: data as tensors on the device, batches sliced by index (no DataLoader and
no per-sample Python in the hot loop), bf16 autocast on CUDA, Adam, early stopping on valid AUC with the LR
halved on every non-improving epoch (QIN's schedule), best weights restored at the end, and a checkpoint
after every epoch from which an interrupted run resumes.

Under torchrun each rank holds all rows and trains on its share (`rank::world`) of every global batch of
`batch_size` rows; the loss is scaled so that DDP's gradient mean equals the single-process gradient of the
same global batch, hence the same curve within float error.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from recstack.artifacts import atomic_path
from recstack.config import RankConfig, RankerBlock
from recstack.data.tables.ranking import RankRows
from recstack.metrics import auc, logloss
from recstack.train import dist, hooks

log = logging.getLogger(__name__)


@dataclass
class DeviceRows:
    """A split as tensors on the training device."""

    hist: torch.Tensor  # (N, L) int32
    target: torch.Tensor  # (N,) long
    context: torch.Tensor  # (N, C) long
    label: torch.Tensor | None  # (N,) float32

    @classmethod
    def of(cls, rows: RankRows, device: torch.device) -> DeviceRows:
        def put(a: np.ndarray) -> torch.Tensor:  # a writable C-contiguous array (copied only if needed)
            return torch.from_numpy(np.require(a, requirements=["C", "W"])).to(device)

        label = None if rows.label is None else put(rows.label.astype(np.float32))
        return cls(put(rows.hist.astype(np.int32)), put(rows.target), put(rows.context), label)

    def __len__(self) -> int:
        return len(self.target)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # index_select: one contiguous row gather (advanced indexing costs more per call on CPU)
        return self.hist.index_select(0, idx).long(), self.target[idx], self.context.index_select(0, idx)


@dataclass(frozen=True)
class TrainSettings:
    """One fit: the schema's blocks as the config gives them (config.RankConfig and this ranker's
    config.RankerBlock, defaults and all) and what names this run; no settings or defaults of its own."""

    rank: RankConfig  # epochs, patience, lr_decay, eval_batch_size, progress, compile
    model: RankerBlock  # lr, batch_size, micro_batch
    seed: int
    desc: str = "train"  # log and progress-bar label
    resume: Path | None = None  # checkpoint file written after every epoch
    resume_key: str = ""  # what the checkpoint must match to be resumed (config + data fingerprint)


@dataclass
class FitResult:
    best_auc: float
    best_epoch: int
    curve: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # best weights, on CPU


def _autocast(device: torch.device):
    # bf16 on CUDA: the tensor cores' fast path with fp32's range (no loss scaling needed)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict(model: nn.Module, rows: DeviceRows, batch_size: int = 16384) -> np.ndarray:
    """P(click) for every row, in row order (float64 on CPU)."""
    model.eval()
    device, out = _device(model), []
    for i in range(0, len(rows), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(rows)), device=device)
        with _autocast(device):
            out.append(torch.sigmoid(model(*rows.batch(idx)).float()))
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(
    model: nn.Module,
    train: DeviceRows,
    valid: DeviceRows,
    s: TrainSettings,
    train_idx: torch.Tensor | None = None,  # rows of `train` to train on (a fold); None = all
) -> FitResult:
    device, rank, world = _device(model), dist.rank(), dist.world()
    if train_idx is None:
        train_idx = torch.arange(len(train), device=device)
    y_valid = valid.label.cpu().numpy()
    net: nn.Module = model
    if world > 1:
        if device.type == "cuda":  # per-rank batch statistics would differ from one process's
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # fused: one kernel for every parameter's update (CUDA and CPU) instead of a loop of small ones
    opt = torch.optim.Adam(model.parameters(), lr=s.model.lr, fused=True)
    if s.rank.compile:  # fuses the elementwise tails (BatchNorm, PReLU, dropout, masks); first steps compile
        net = torch.compile(net)
    best = FitResult(best_auc=-1.0, best_epoch=-1)
    bad, start = 0, 0
    if s.resume is not None and s.resume.is_file():
        ck = torch.load(s.resume, map_location="cpu")
        if ck.get("key") == s.resume_key:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            best = FitResult(ck["best_auc"], ck["best_epoch"], ck["curve"], ck["best_state"])
            bad, start = ck["bad"], ck["epoch"] + 1
            torch.set_rng_state(ck["rng"])
            log.info("%s: resumed after epoch %d from %s", s.desc, ck["epoch"] + 1, s.resume)
        else:
            log.info("%s: %s was written for other inputs or settings; starting afresh", s.desc, s.resume)
    n, bsz = len(train_idx), s.model.batch_size
    steps = max(n // bsz + (n % bsz >= 2 * world), 1)  # a last batch too small for BatchNorm is dropped
    for epoch in range(start, s.rank.epochs):
        if bad >= s.rank.patience:
            break
        model.train()
        g = torch.Generator().manual_seed(s.seed * 1009 + epoch)
        perm = train_idx[torch.randperm(n, generator=g).to(device)]
        loss_sum = torch.zeros((), device=device)
        recent: list[tuple[torch.Tensor, torch.Tensor]] = []
        show = s.rank.progress and rank == 0
        bar = tqdm(
            range(steps),
            desc=f"{s.desc} epoch {epoch + 1}/{s.rank.epochs}",
            disable=not show,
            leave=False,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for step in bar:
            idx = perm[step * bsz : (step + 1) * bsz]
            mine = idx[rank::world]  # this rank's share of the global batch
            parts = mine.split(s.model.micro_batch) if 0 < s.model.micro_batch < len(mine) else (mine,)
            opt.zero_grad(set_to_none=True)
            for j, part in enumerate(parts):  # gradients add up: one step for the whole batch
                last = j == len(parts) - 1
                with contextlib.nullcontext() if last or world == 1 else net.no_sync():  # one all-reduce
                    with _autocast(device):
                        logits = net(*train.batch(part)).float()
                    y = train.label[part]
                    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") * (world / len(idx))
                    loss.backward()
                loss_sum += loss.detach()
                if show:
                    recent = [*recent[-49:], (logits.detach(), y)]
            opt.step()
            if show and (step % 50 == 49 or step == steps - 1):  # one host sync per 50 steps, not per step
                p, t = (torch.cat(z).cpu().numpy() for z in zip(*recent, strict=True))
                bar.set_postfix(
                    loss=f"{loss_sum.item() / (step + 1) / world:.4f}",
                    auc=f"{auc(t, p) if 0 < t.sum() < len(t) else float('nan'):.4f}",
                )
        peak = 0.0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) / 2**30  # training only, evaluation excluded
        seconds = time.perf_counter() - t0
        bar.close()
        p_valid = predict(model, valid, s.rank.eval_batch_size)
        v_auc = dist.broadcast_float(auc(y_valid, p_valid))
        lr = opt.param_groups[0]["lr"]
        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum.item() / steps / world, 6),
            "valid_auc": round(v_auc, 6),
            "valid_logloss": round(logloss(y_valid, p_valid), 6),
            "lr": lr,
            "seconds": round(seconds, 3),
            "samples_per_s": round(min(n, steps * bsz) / seconds, 1),
        }
        if device.type == "cuda":
            row["train_peak_gib"] = round(peak, 3)
        best.curve.append(row)
        if v_auc > best.best_auc:
            best.best_auc, best.best_epoch, best.state, bad = v_auc, epoch + 1, _cpu_state(model), 0
        else:
            bad += 1
            for group in opt.param_groups:  # halve the LR on every epoch that does not improve
                group["lr"] = lr * s.rank.lr_decay
        log.info(
            "%s epoch %d: loss %.4f valid AUC %.4f logloss %.4f lr %.2g %.0f samples/s%s",
            s.desc,
            epoch + 1,
            row["train_loss"],
            v_auc,
            row["valid_logloss"],
            lr,
            row["samples_per_s"],
            "" if bad else " (best)",
        )
        hooks.report(epoch + 1, v_auc)  # a sweep's pruner may stop here (train/hooks.py)
        if s.resume is not None and rank == 0:
            ck = {
                "key": s.resume_key,
                "epoch": epoch,
                "model": _cpu_state(model),
                "opt": opt.state_dict(),
                "best_auc": best.best_auc,
                "best_epoch": best.best_epoch,
                "curve": best.curve,
                "best_state": best.state,
                "bad": bad,
                "rng": torch.get_rng_state(),
            }
            with atomic_path(s.resume) as tmp:
                torch.save(ck, tmp)
        dist.barrier()
    model.load_state_dict(best.state)  # the best epoch's weights, not the last
    return best
