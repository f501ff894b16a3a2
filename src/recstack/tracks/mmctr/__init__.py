"""The mmctr track (WWW 2025 EReL@MIR Multimodal CTR, MicroLens-1M): predict P(click) per test row, scored
by AUC. Its stages, in run order; one `rank_<name>` stage per entry of models/rankers.RANKERS, before the
stacker; its submission is `prediction.csv` / `.zip` (`ID,Task2`), checked by
ensemble/submission.validate_mmctr before it is written and before it is scored here.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from recstack.data.tables.predictions import read_predictions
from recstack.ensemble.submission import MMCTR_COLUMNS, read_mmctr, validate_mmctr
from recstack.metrics import auc, gauc, logloss
from recstack.models.rankers import RANKERS
from recstack.paths import Paths
from recstack.stages import rank
from recstack.tracks.base import (
    DATA_KEYS,
    SHARED_KEYS,
    Stage,
    Track,
    build_stage,
    ensemble_sources,
    no_truth,
    present,
)
from recstack.tracks.mmctr import baseline, build, embed, ensemble, prepare, retrieve, stack

RANK_KEYS = (
    "rank.multimodal",
    "rank.provided",
    "rank.folds",
    "rank.epochs",
    "rank.patience",
    "rank.lr_decay",
)
RANKS_BEFORE = ("stack", "ensemble")  # the generated rank stages run before the first of these


def ranker_stage(name: str) -> Stage:
    """`rank_<name>` for a ranker of models/rankers.RANKERS: one registry line gives a model its stage."""
    return Stage(
        f"rank_{name}",
        rank.stage_body(name),
        ("prepare",),
        (*SHARED_KEYS, *RANK_KEYS, f"rank.{name}"),
        f"{name.upper()} ranker over the shared item encoder: OOF/valid/test predictions, checkpoint",
        distributed=True,
        reads=_ranker_reads,
    )


def _ranker_reads(cfg: DictConfig, stages: Collection[str]) -> tuple[str, ...]:
    """The item encoder projects the embed stage's matrix (rank.multimodal auto / embed)."""
    return ("embed",) if cfg.rank.multimodal in ("auto", "embed") and "embed" in stages else ()


def _stack_reads(cfg: DictConfig, stages: Collection[str]) -> tuple[str, ...]:
    """The level-1 models it stacks, and retrieval's features where the track has them."""
    return (*cfg.stack.sources, *present("retrieve")(cfg, stages))


class Mmctr(Track):
    name = "mmctr"

    def __init__(self) -> None:
        self.stages = {
            "build": build_stage(
                build.run,
                "build the raw mmctr layout for data.source=movielens|synthetic under input/<dataset>/",
            ),
            "prepare": Stage(
                "prepare",
                prepare.run,
                ("build",),
                (*DATA_KEYS, "data.max_hist"),
                "read and check the raw layout; write canonical item and sample tables",
                reads_raw=True,
            ),
            "embed": Stage(
                "embed",
                embed.run,
                ("prepare",),
                (*SHARED_KEYS, "device", "embed"),
                "text / image encoders + provided embeddings -> fused, behaviour-aligned item vectors; Task 1 export",
            ),
            "baseline": Stage(
                "baseline",
                baseline.run,
                ("prepare",),
                (*SHARED_KEYS, "baseline"),
                "CTR priors + history co-clicks, logistic regression: OOF/valid/test predictions",
            ),
            "retrieve": Stage(
                "retrieve",
                retrieve.run,
                ("prepare",),
                (*SHARED_KEYS, "retrieve"),
                "stacker features: target-to-history similarity (embed space), co-visitation, content-ANN rank",
                reads=present("embed"),
            ),
            "stack": Stage(
                "stack",
                stack.run,
                ("prepare",),
                (
                    *SHARED_KEYS,
                    "stack.sources",
                    "stack.folds",
                    "stack.inner_valid",
                    "stack.features",
                    "stack.user_relative",
                    "stack.lgbm",
                ),
                "LightGBM stacker on the level-1 predictions + cheap features, user-grouped CV on valid",
                reads=_stack_reads,
            ),
            "ensemble": Stage(
                "ensemble",
                ensemble.run,
                ("prepare",),
                (*SHARED_KEYS, "ensemble"),
                "blend model predictions; write the validated submission (prediction.csv / .zip)",
                reads=ensemble_sources,
            ),
        }

    def pipeline(self) -> dict[str, Stage]:
        names = list(self.stages)
        at = min((names.index(n) for n in RANKS_BEFORE if n in self.stages), default=len(names))
        ranks = {f"rank_{n}": ranker_stage(n) for n in RANKERS}
        items = list(self.stages.items())
        return {**dict(items[:at]), **ranks, **dict(items[at:])}

    def evaluate(self, cfg: DictConfig, submission: str) -> dict[str, float]:
        truth_path = Paths(cfg).raw_mmctr.test_truth
        if not truth_path.is_file():
            raise no_truth(truth_path)
        truth = pd.read_parquet(truth_path)
        sub = read_mmctr(submission)
        column = sub.columns[1] if len(sub.columns) == 2 else "?"
        if column not in MMCTR_COLUMNS:
            column = "Task2"  # let the validator report the header
        validate_mmctr(sub, truth["ID"].to_numpy(), column, source=str(submission))
        merged = truth.merge(sub, on="ID", how="left")
        y, p = merged["label"].to_numpy(), merged[column].to_numpy(np.float64)
        return {
            "test_auc": auc(y, p),
            "test_logloss": logloss(y, p),
            "test_gauc": gauc(merged["user_id"].to_numpy(), y, p),
            "rows": float(len(merged)),
        }

    def test_metric(self, cfg: DictConfig, folder: Path) -> float | None:
        truth_path = Paths(cfg).raw_mmctr.test_truth
        if not truth_path.is_file():
            return None
        truth = pd.read_parquet(truth_path, columns=["ID", "label"])
        p = read_predictions(folder, "test", truth["ID"].to_numpy())
        return round(auc(truth["label"].to_numpy(), p), 5)


MMCTR = Mmctr()
