"""A new ranker is one model, one settings dataclass and one `register` call: it gets its config block,
its `rank_<name>` stage and its predictions without touching any other file."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from torch import nn

from recstack.config import RANK_MODELS, ConfigError, RankerBlock
from recstack.metrics import auc
from recstack.models import rankers
from recstack.paths import Paths, Predictions
from recstack.pipeline import pipeline_of, run_until

from conftest import SMALL_SYNTH


@dataclass
class LogRegSettings(RankerBlock):
    emb_dim: int = 4
    lr: float = 0.05
    batch_size: int = 128


class LogReg(nn.Module):
    """Logistic regression on [mean history vector, target vector] from the shared item encoder."""

    def __init__(self, items, context_cards: list[int], emb_dim: int = 4):
        super().__init__()
        self.items = items
        self.out = nn.Linear(2 * items.dim, 1)

    def forward(self, hist, target, context):  # hist (B, L), target (B,), context (B, C) -> (B,)
        h, t = self.items(hist, target)  # (B, L, D), (B, D)
        mask = (hist != 0).unsqueeze(-1)  # (B, L, 1)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, D)
        return self.out(torch.cat([pooled, t], -1)).squeeze(-1)


@pytest.fixture
def logreg():
    rankers.register("logreg", LogReg, LogRegSettings)
    yield
    for registry in (rankers.RANKERS, rankers.EMB_INIT_STD, RANK_MODELS):
        registry.pop("logreg")


def test_registered_ranker_gets_block_stage_and_predictions(logreg, tmp_cfg):
    cfg = tmp_cfg(
        "mmctr_synthetic.yaml", *SMALL_SYNTH, "rank.multimodal=none", "rank.epochs=1", "rank.logreg.lr=0.1"
    )
    assert cfg.rank.logreg.lr == 0.1 and cfg.rank.logreg.batch_size == 128
    stages = list(pipeline_of("mmctr"))
    assert stages.index("rank_logreg") < stages.index("ensemble")
    out = run_until(cfg, "rank_logreg")
    paths = Paths(cfg)
    preds = pd.read_parquet(paths.stage_dir("rank_logreg") / Predictions.FILE)
    assert set(preds["split"]) == {"valid", "test"}
    valid = pd.read_parquet(paths.stage_dir("prepare") / "samples_valid.parquet")
    p = preds[preds["split"] == "valid"].set_index("query")["score"].reindex(valid["row_id"]).to_numpy()
    assert out["rank_logreg"]["figures"]["valid_auc"] == pytest.approx(auc(valid["label"], p), abs=1e-4)
    with pytest.raises(ConfigError, match="rank.logreg.nope"):
        tmp_cfg("mmctr_synthetic.yaml", "rank.logreg.nope=1")


def test_unregistered_ranker_block_is_unknown(tmp_cfg):
    with pytest.raises(ConfigError, match="rank.logreg"):
        tmp_cfg("mmctr_synthetic.yaml", "rank.logreg.lr=0.1")
