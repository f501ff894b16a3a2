"""The competitions' task facts, each defined once; every reader, metric, stage and model imports them here.

TencentGR (Tencent TAAC 2025 all-modality generative recommendation; organisers' paper, arXiv 2604.04976):
events carry an action type, a submission ranks 10 items per user, and the final round's score weighs the
held-out target by its action. MMCTR (WWW 2025 MicroLens): the provided multimodal vectors' names and widths
are the prepare stage's, the Task 1 export is 128-d (config `embed.dim`).
"""

from __future__ import annotations

import numpy as np

# ---- TencentGR actions (the platform's `action_type`; DESIGN.md) -----------------------------------------
EXPOSURE, CLICK, CONVERSION = 0, 1, 2
ACTIONS = (EXPOSURE, CLICK, CONVERSION)
N_ACTIONS = len(ACTIONS)
# the final-round metric's weight of a held-out target by its action: conversions 2.5, clicks 1, exposures 0
ACTION_WEIGHTS = {EXPOSURE: 0.0, CLICK: 1.0, CONVERSION: 2.5}

# ---- TencentGR metric: score = 0.31 HR@10 + 0.69 NDCG@10 ---------------------------------------------------
TGR_K = 10  # items per user in a submission, and the metric's cut-off
HR_WEIGHT, NDCG_WEIGHT = 0.31, 0.69


def rank_gains(rank: np.ndarray, k: int = TGR_K) -> np.ndarray:
    """Each query's share of the score from the 0-based rank of its target (-1: not ranked): 0.31 + 0.69 /
    log2(rank + 2) inside the top k, else 0. Its mean is the score; weighted by ACTION_WEIGHTS, the final
    round's."""
    rank = np.asarray(rank)
    hit = (rank >= 0) & (rank < k)
    return np.where(hit, HR_WEIGHT + NDCG_WEIGHT / np.log2(np.maximum(rank, 0) + 2.0), 0.0)


# ---- MMCTR: Task 1 asks for one 128-d vector per item (item_emb_d128) ----------------------------------------
MMCTR_TASK1_DIM = 128

# ---- TencentGR provided multimodal embeddings: feature id -> width (81-83 text, 84-86 image) -------------
MM_DIMS = {"81": 32, "82": 1024, "83": 3584, "84": 4096, "85": 3584, "86": 3584}

# ---- reciprocal-rank fusion (Cormack et al., SIGIR 2009): sum_s w_s / (RRF_K + rank_s + 1) -------------
RRF_K = 60.0  # the paper's constant: robust to the sources' score scales


def mm_widths(overrides=None) -> dict[str, int]:
    """Feature id -> width: MM_DIMS with a config's overrides (`data.emb_dims`, the synthetic builder's)."""
    return {**MM_DIMS, **dict(overrides or {})}
