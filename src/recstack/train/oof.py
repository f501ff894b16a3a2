"""Out-of-fold training: K folds grouped by user over train, each fold's model predicting its held-out
train rows (OOF), valid and test; valid/test predictions are the mean over folds. K = 0 trains once on all
of train and predicts valid and test only (no train predictions: in-sample scores would mislead a stacker).

Every fold checkpoints after each epoch and, once finished, keeps its predictions in the resume folder, so
an interrupted run redoes at most one epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recstack.artifacts import atomic_path
from recstack.data.tables.ranking import RankRows
from recstack.train import dist
from recstack.train.trainer import DeviceRows, TrainSettings, fit, predict

log = logging.getLogger(__name__)


def user_folds(users: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold of each row; all rows of a user share a fold (no user leaks across folds)."""
    uniq, inv = np.unique(users, return_inverse=True)
    fold_of_user = np.random.default_rng(seed).permutation(len(uniq)) % k
    return fold_of_user[inv]


@dataclass
class OofResult:
    preds: dict[str, np.ndarray]  # "train" (OOF, K > 0 only), "valid", "test"; P(click) in row order
    folds: list[dict[str, Any]]  # per fold: best valid AUC, best epoch, OOF AUC
    curve: list[dict[str, Any]]  # per (fold, epoch)
    states: dict[int | None, dict[str, torch.Tensor]] = field(default_factory=dict)  # best weights


def train_oof(
    build: Callable[[], nn.Module],  # a fresh model on `device`
    train: RankRows,
    valid: RankRows,
    test: RankRows,
    folds: int,
    s: TrainSettings,
    device: torch.device,
    resume_dir: Path | None = None,
) -> OofResult:
    d_train, d_valid, d_test = (DeviceRows.of(r, device) for r in (train, valid, test))
    fold_of = user_folds(train.user, folds, s.seed) if folds > 0 else None
    plan: list[int | None] = list(range(folds)) if folds > 0 else [None]
    oof = np.full(len(train), np.nan) if folds > 0 else None
    out: dict[str, list[np.ndarray]] = {"valid": [], "test": []}
    result = OofResult({}, [], [])
    for k in plan:
        tag = "all" if k is None else f"fold{k}"
        done_file = resume_dir / f"{tag}.done.pt" if resume_dir else None
        if done_file is not None and done_file.is_file():
            done = torch.load(done_file, map_location="cpu", weights_only=False)
            if done["key"] == s.resume_key:
                log.info("%s %s: finished before the interruption, reusing %s", s.desc, tag, done_file)
                fold_rows = np.flatnonzero(fold_of == k) if k is not None else None
                _collect(result, out, oof, k, fold_rows, done)
                continue
        torch.manual_seed(s.seed + (0 if k is None else k + 1))  # each fold's initial weights from the seed
        model = build()
        held = np.flatnonzero(fold_of == k) if k is not None else None
        train_idx = None
        if k is not None:
            train_idx = torch.from_numpy(np.flatnonzero(fold_of != k)).to(device)
        fs = replace(s, desc=f"{s.desc} {tag}", resume=resume_dir / f"{tag}.pt" if resume_dir else None)
        fitted = fit(model, d_train, d_valid, fs, train_idx)
        done = {
            "key": s.resume_key,
            "valid": predict(model, d_valid, s.rank.eval_batch_size),
            "test": predict(model, d_test, s.rank.eval_batch_size),
            "held": None
            if held is None
            else predict(model, _take(d_train, held, device), s.rank.eval_batch_size),
            "best_auc": fitted.best_auc,
            "best_epoch": fitted.best_epoch,
            "curve": fitted.curve,
            "state": fitted.state,
        }
        if done_file is not None and dist.is_main():
            with atomic_path(done_file) as tmp:
                torch.save(done, tmp)
        _collect(result, out, oof, k, held, done)
    result.preds = {split: np.mean(p, 0) for split, p in out.items()}
    if oof is not None:
        result.preds["train"] = oof
    return result


def _take(rows: DeviceRows, idx: np.ndarray, device: torch.device) -> DeviceRows:
    i = torch.from_numpy(idx).to(device)
    return DeviceRows(rows.hist[i], rows.target[i], rows.context[i], None)


def _collect(result: OofResult, out, oof, k: int | None, held, done: dict[str, Any]) -> None:
    out["valid"].append(done["valid"])
    out["test"].append(done["test"])
    fold = {
        "fold": "all" if k is None else k,
        "best_valid_auc": round(done["best_auc"], 6),
        "best_epoch": done["best_epoch"],
        "epochs": len(done["curve"]),
    }
    if oof is not None and held is not None:
        oof[held] = done["held"]
        fold["rows"] = len(held)
    result.folds.append(fold)
    result.curve += [{"fold": fold["fold"], **row} for row in done["curve"]]
    result.states[k] = done["state"]
