"""`rank_<name>` for each ranker of models/rankers.RANKERS (din, qin, ...): neural rankers over (history,
target, context) rows, one stage folder per model so each is an ensemble / stacker source of its own
(`ensemble.sources: [baseline, rank_din, rank_qin]`).

Writes (names in paths.Ranked / paths.Predictions):
    predictions.parquet   keyed by (split, row_id): OOF train rows (rank.folds > 0), valid, test
    metrics.json          valid (and, where local labels exist, test: here only) AUC, logloss, gAUC; per-fold figures
    curve.csv             per (fold, epoch): train loss, valid AUC / logloss, lr, seconds, samples/s
    model.pt              best weights (model_fold<k>.pt per fold in OOF mode)
Runs unchanged under `torchrun --nproc_per_node=N -m recstack rank_qin ...` (DDP; rank 0 writes).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from recstack.artifacts import atomic_path, stable_hash, write_json, write_table, write_text
from recstack.config import TRAINER_KEYS
from recstack.data.tables.predictions import predictions_table
from recstack.data.tables.ranking import RankItems, RankRows, read_matrix, read_rank_items, read_rank_rows
from recstack.errors import DataError
from recstack.metrics import auc, gauc, logloss
from recstack.models.item_encoder import ItemColumns, ItemEncoder
from recstack.models.rankers import EMB_INIT_STD, RANKERS
from recstack.paths import MANIFEST, Embedded, Predictions, Prepared, Ranked, Reports
from recstack.report.plots import learning_curves, save_png
from recstack.stages.context import StageContext
from recstack.train import dist
from recstack.train.oof import OofResult, train_oof
from recstack.train.trainer import TrainSettings

log = logging.getLogger(__name__)


def multimodal_matrix(ctx: StageContext, n_items: int) -> tuple[np.ndarray | None, str]:
    """The frozen item matrix for the encoder, and where it came from (rank.multimodal)."""
    rc = ctx.cfg.rank
    embed_dir = ctx.input_dir("embed")
    embed_done = (embed_dir / MANIFEST).is_file()
    provided = ctx.input_dir("prepare") / Prepared.embedding(rc.provided)
    if rc.multimodal == "embed" or (rc.multimodal == "auto" and embed_done):
        if not embed_done:
            raise DataError(
                "rank.multimodal=embed but the embed stage has not finished: run `./run.sh embed`"
            )
        return read_matrix(embed_dir / Embedded.ITEMS, n_items), "embed"
    if rc.multimodal == "provided" or (rc.multimodal == "auto" and provided.is_file()):
        if not provided.is_file():
            found = sorted(p.name for p in provided.parent.glob(Prepared.embedding("*")))
            raise DataError(f"{provided}: not found (rank.provided={rc.provided}); prepare wrote: {found}")
        return read_matrix(provided, n_items), f"provided:{rc.provided}"
    return None, "none"


def item_columns(items: RankItems, mm: np.ndarray | None, side: bool = True) -> ItemColumns:
    """The mmctr item side as encoder columns: tags (a list column), the levels (sparse; an unknown level
    keeps a learned vector, as it always had), the frozen matrix. side=False: id (+ matrix) only, as a peer
    DIN sees items (bench/)."""
    levels = (
        {f"level{j}": torch.tensor(items.levels[:, j]) for j in range(items.levels.shape[1])} if side else {}
    )
    return ItemColumns(
        torch.tensor(items.id_index),
        sparse=levels,
        lists={"tags": torch.tensor(items.tags)} if side else {},
        multimodal={} if mm is None else {"multimodal": torch.tensor(mm)},
        learned_zero=tuple(levels),
    )


def build_model(
    name: str,
    items: RankItems,
    mm: np.ndarray | None,
    context_cards: list[int],
    arch: dict[str, Any],
    device: torch.device,
    side: bool = True,
) -> torch.nn.Module:
    if name not in RANKERS:
        raise DataError(f"unknown ranker {name!r}; rankers: {', '.join(RANKERS)}")
    encoder = ItemEncoder(item_columns(items, mm, side), arch["emb_dim"], "concat", EMB_INIT_STD[name])
    return RANKERS[name](encoder, context_cards, **arch).to(device)


def _content(stage_dir) -> str:
    manifest = json.loads((stage_dir / MANIFEST).read_text())
    return manifest.get("content") or manifest["key"]


def _scores(y: np.ndarray, p: np.ndarray, users: np.ndarray, split: str) -> dict[str, float]:
    out = {f"{split}_auc": round(auc(y, p), 5), f"{split}_logloss": round(logloss(y, p), 5)}
    g = gauc(users, y, p)  # nan when no user has both classes (one valid row per user in MovieLens)
    if not np.isnan(g):
        out[f"{split}_gauc"] = round(g, 5)
    return out


def _fit_figures(result: OofResult, train: RankRows) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if "train" in result.preds:
        figures["train_oof_auc"] = round(auc(train.label, result.preds["train"]), 5)
    figures["best_epoch"] = result.folds[0]["best_epoch"]
    figures["epochs"] = len(result.curve)
    figures["train_samples_per_s"] = round(float(np.mean([r["samples_per_s"] for r in result.curve])), 1)
    figures["params"] = sum(v.numel() for v in result.states[next(iter(result.states))].values())
    return figures


def _local_test(ctx: StageContext, test: RankRows, p_test: np.ndarray) -> dict[str, Any]:
    """Test scores against the hidden labels our dataset builders keep: metrics.json only, never the
    manifest figures the run log and summary print, so nobody tunes on test by accident (`./run.sh
    evaluate`). Empty where the labels are not all there."""
    truth_path = ctx.paths.raw_mmctr.test_truth
    if not truth_path.is_file():
        return {}
    y_test = pd.read_parquet(truth_path).set_index("ID")["label"].reindex(test.row_id).to_numpy()
    return {} if np.isnan(y_test).any() else _scores(y_test, p_test, test.user, "test")


def run_mmctr(ctx: StageContext, name: str) -> dict[str, Any]:
    cfg, rc = ctx.cfg, ctx.cfg.rank
    prep = ctx.input_dir("prepare")
    items = read_rank_items(prep)
    train, valid, test = (read_rank_rows(prep, s, len(items)) for s in ("train", "valid", "test"))
    mm, mm_source = multimodal_matrix(ctx, len(items))
    context_cards = [
        int(max(r.context[:, j].max() for r in (train, valid, test))) + 1
        for j in range(train.context.shape[1])
    ]
    arch = {k: v for k, v in OmegaConf.to_container(rc[name], resolve=True).items() if k not in TRAINER_KEYS}
    device = dist.resolve_device(cfg.device)
    # what the run trains on: a checkpoint trained on other item vectors (an embed rerun) is not resumed
    upstream = {
        s: _content(ctx.input_dir(s)) for s in ("prepare", "embed") if s == "prepare" or mm_source == "embed"
    }
    settings = TrainSettings(
        rank=OmegaConf.to_object(rc),
        model=OmegaConf.to_object(rc[name]),
        seed=cfg.seed,
        desc=name,
        resume_key=stable_hash(
            {
                "model": name,
                "rank": OmegaConf.to_container(rc),
                "seed": cfg.seed,
                "upstream": upstream,
                "multimodal": mm_source,
                "world": dist.world(),
            }
        ),
    )
    log.info(
        "%s on %s (%d processes): %d train / %d valid / %d test rows, multimodal=%s, folds=%d",
        name,
        device,
        dist.world(),
        len(train),
        len(valid),
        len(test),
        mm_source,
        rc.folds,
    )
    resume_dir = ctx.paths.resume_dir(f"rank_{name}")
    result = train_oof(
        lambda: build_model(name, items, mm, context_cards, arch, device),
        train,
        valid,
        test,
        rc.folds,
        settings,
        device,
        resume_dir,
    )

    figures: dict[str, Any] = {"multimodal": mm_source, "device": str(device), "processes": dist.world()}
    figures |= _scores(valid.label, result.preds["valid"], valid.user, "valid") | _fit_figures(result, train)
    local_test = _local_test(ctx, test, result.preds["test"])
    if not dist.is_main():
        return figures  # rank 0 writes; the others trained alongside it
    parts = {s: (r.row_id, result.preds[s], r.target) for s, r in (("valid", valid), ("test", test))}
    if "train" in result.preds:
        parts = {"train": (train.row_id, result.preds["train"], train.target), **parts}
    write_table(ctx.out / Predictions.FILE, predictions_table(parts))
    write_json(ctx.out / Ranked.METRICS, {**figures, **local_test, "folds": result.folds})
    write_text(ctx.out / Ranked.CURVE, pd.DataFrame(result.curve).to_csv(index=False))
    save_png(
        learning_curves(pd.DataFrame(result.curve), f"rank_{name}"),
        ctx.out / Reports.DIR / Reports.LEARNING_CURVE,
    )
    for fold, state in result.states.items():
        with atomic_path(ctx.out / Ranked.checkpoint(fold)) as tmp:
            torch.save(state, tmp)
    shutil.rmtree(resume_dir, ignore_errors=True)  # finished: nothing left to resume
    log.info("%s valid AUC %.4f (logloss %.4f)", name, figures["valid_auc"], figures["valid_logloss"])
    return figures


def stage_body(name: str) -> Callable[[StageContext], dict[str, Any]]:
    """The `rank_<name>` stage of a registered ranker (the pipeline builds one per RANKERS entry)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        return run_mmctr(ctx, name)

    run.__name__ = f"rank_{name}"
    return run
