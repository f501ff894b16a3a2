"""The tencentgr track (Tencent 2025 All-Modality Generative Recommendation): rank the candidate pool per
user, scored by 0.31*HR@10 + 0.69*NDCG@10 (clicks and conversions weighted as the final round). Its stages,
in run order; its submission is `submission.json` (+ `.csv`), the top 10 creative ids per predict user,
checked by ensemble/submission.validate_tgr before it is written and before it is scored here.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from omegaconf import DictConfig

from recstack.data.tables.predictions import read_ranking
from recstack.ensemble.submission import TGR_K, read_tgr, validate_tgr
from recstack.metrics import tencentgr_gains, tencentgr_score
from recstack.paths import Ensembled, Paths, Predictions, PreparedTGR, Retrieved
from recstack.retrieve.base import top_k_groups
from recstack.tasks import ACTION_WEIGHTS
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
from recstack.tracks.tencentgr import baseline, build, embed, ensemble, prepare, retrieve, seqrec, stack


def _seqrec_reads(cfg: DictConfig, stages: Collection[str]) -> tuple[str, ...]:
    """The item tower projects the embed stage's matrix (seqrec.multimodal auto / embed)."""
    return ("embed",) if cfg.seqrec.multimodal in ("auto", "embed") else ()


# which events each model may train on: prepare holds out the valid users and draws the stacker's queries
# (their content enters every later stage's cache key through prepare's)
HELD_OUT = ("data.valid_users", "data.stack_users", "data.stack_cuts")


class TencentGR(Track):
    name = "tencentgr"

    def __init__(self) -> None:
        self.stages = {
            "build": build_stage(
                build.run, "build the raw TencentGR platform layout for data.source=movielens|synthetic"
            ),
            "prepare": Stage(
                "prepare",
                prepare.run,
                ("build",),
                (
                    *DATA_KEYS,
                    "data.layout",
                    "data.strict",
                    "data.mm_feats",
                    "data.mm_required",
                    "data.emb_dims",
                    *HELD_OUT,
                    "data.eval_dir",
                    "data.max_unknown_item_share",
                ),
                "stream the platform / parquet layout into canonical events, users, items, embeddings, candidates",
                reads_raw=True,
            ),
            "embed": Stage(
                "embed",
                embed.run,
                ("prepare",),
                (*SHARED_KEYS, "device", "embed", "data.mm_feats", "data.emb_dims"),
                "item texts (where present) + provided emb_<id> (masked coverage) -> fused, behaviour-aligned vectors",
            ),
            "seqrec": Stage(
                "seqrec",
                seqrec.run,
                ("prepare",),
                (*SHARED_KEYS, "device", "data.mm_feats", "data.emb_dims", "seqrec"),
                "causal transformer over event sequences, InfoNCE + logQ: top-k of the pool per query, FAISS search",
                reads=_seqrec_reads,
            ),
            "baseline": Stage(
                "baseline",
                baseline.run,
                ("prepare",),
                (*SHARED_KEYS, "baseline"),
                "recent click popularity over the candidate pool (seen items per baseline.exclude_seen): top-k per user",
            ),
            "retrieve": Stage(
                "retrieve",
                retrieve.run,
                ("prepare",),
                (*SHARED_KEYS, "device", "retrieve"),
                "candidate sources (co-visitation, content ANN, popularity, seqrec, history) -> merged candidates, recall",
                reads=present("embed", "seqrec"),  # content ANN; the sequence model is a source of its own
            ),
            "stack": Stage(
                "stack",
                stack.run,
                ("prepare", "retrieve"),
                (*SHARED_KEYS, "stack.rerank"),
                "LightGBM lambdarank over the retrieve stage's candidates, trained on the stacker's queries",
                reads=present("embed"),  # history similarity in the embed space
            ),
            "ensemble": Stage(
                "ensemble",
                ensemble.run,
                ("prepare",),
                (*SHARED_KEYS, "ensemble"),
                "fuse the sources' rankings; write the validated top-10 submission (submission.json / .csv)",
                reads=ensemble_sources,
            ),
        }

    def _truth(self, cfg: DictConfig) -> pd.DataFrame:
        truth_path = Paths(cfg).raw_tencentgr.truth
        if not truth_path.is_file():
            raise no_truth(truth_path)
        return pd.read_parquet(truth_path)  # user_id, creative_id, action; in predict order

    def evaluate(self, cfg: DictConfig, submission: str) -> dict[str, float]:
        truth = self._truth(cfg)
        top10s, users = read_tgr(submission)
        pool = pd.read_parquet(
            Paths(cfg).stage_dir("prepare") / PreparedTGR.CANDIDATES, columns=["creative_id"]
        )
        validate_tgr(
            top10s,
            users,
            truth["user_id"].astype(str).tolist(),
            pool["creative_id"].to_numpy(),
            source=str(submission),
        )
        m = tencentgr_score(
            np.asarray(top10s, np.int64),
            truth["creative_id"].to_numpy(),
            k=TGR_K,
            action=truth["action"].to_numpy(),
            action_weights=ACTION_WEIGHTS,
        )
        return {f"test_{k}": float(v) for k, v in m.items()} | {"rows": float(len(truth))}

    def test_figures(self, cfg: DictConfig, folder: Path, figures: dict[str, Any]) -> dict[str, float]:
        """test_score of the stage's ranking, and per candidate where the stage keeps several: retrieve each
        source's (candidates.parquet, its own order), ensemble each source's and the blend's
        (Ensembled.RANKINGS). The names follow the valid figures: valid_score_<s> -> test_score_<s>."""
        kept = (Predictions.FILE, Retrieved.CANDIDATES, Ensembled.RANKINGS)
        if not Paths(cfg).raw_tencentgr.truth.is_file() or not any((folder / f).is_file() for f in kept):
            return {}
        truth = self._truth(cfg)
        target = truth["creative_id"].to_numpy()
        creative = pd.read_parquet(
            Paths(cfg).stage_dir("prepare") / PreparedTGR.ITEMS, columns=["creative_id"]
        )["creative_id"].to_numpy()

        def top(items: np.ndarray) -> np.ndarray:  # (U, >= 10) item rows, -1 = empty -> creative ids
            return np.where(items[:, :TGR_K] >= 0, creative[np.maximum(items[:, :TGR_K], 0)], -1)

        def score(items: np.ndarray) -> float:
            return round(tencentgr_score(top(items), target, k=TGR_K)["score"], 5)

        out: dict[str, float] = {}
        if (folder / Predictions.FILE).is_file():
            items = read_ranking(folder, "test", len(truth))[0]
            gains = tencentgr_gains(top(items), target, TGR_K)
            out["test_score"] = round(float(gains.mean()), 5)
            out["test_score_se"] = round(float(gains.std(ddof=1) / np.sqrt(max(len(gains), 1))), 5)
        cand = folder / Retrieved.CANDIDATES
        if (folder / Retrieved.REPORT).is_file() and cand.is_file():
            ranks = [c for c in pq.read_schema(cand).names if c.endswith("_rank")]
            t = pq.read_table(cand, columns=["user_row", "item", *ranks], filters=[("split", "=", "test")])
            t = t.to_pandas()
            for col in ranks:
                part = t[t[col] >= 0]
                r = part[col].to_numpy()
                items = top_k_groups(
                    part["user_row"].to_numpy(),
                    part["item"].to_numpy(),
                    -r.astype(np.float64),
                    len(truth),
                    TGR_K,
                ).items  # each source's own order (its rank column)
                out[f"test_score_{col[: -len('_rank')]}"] = score(items)
        cand = folder / Ensembled.RANKINGS
        if cand.is_file():
            t = pq.read_table(cand).to_pandas()
            for split in t["split"].unique():
                name, _, part = str(split).rpartition("/")
                if part == "test":
                    rows = t[t["split"] == split].sort_values(["query", "rank"])
                    out[f"test_score_{name}"] = score(rows["item"].to_numpy().reshape(len(truth), -1))
        return {
            k: v for k, v in out.items() if k in ("test_score", "test_score_se") or f"valid{k[4:]}" in figures
        }

    def test_metric(self, cfg: DictConfig, folder: Path) -> float | None:
        if not Paths(cfg).raw_tencentgr.truth.is_file():
            return None
        truth = self._truth(cfg)
        creative = pd.read_parquet(
            Paths(cfg).stage_dir("prepare") / PreparedTGR.ITEMS, columns=["creative_id"]
        )
        items, _ = read_ranking(folder, "test", len(truth))
        top = creative["creative_id"].to_numpy()[items[:, :TGR_K]]
        return round(tencentgr_score(top, truth["creative_id"].to_numpy(), k=TGR_K)["score"], 5)


TENCENTGR = TencentGR()
