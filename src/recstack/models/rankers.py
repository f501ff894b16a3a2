"""The registry of rankers: every model the `rank_<name>` stages train (STYLE.md section 3).

A new ranker is one model file, one `register(...)` line here and its settings dataclass: the pipeline
generates its `rank_<name>` stage and the config its `rank.<name>` block from this registry.
A ranker is `Model(encoder: ItemEncoder, context_cards: list[int], **sizes)` whose forward takes
(hist (B, L), target (B,), context (B, C)) and returns logits (B,).
"""

from __future__ import annotations

from torch import nn

from recstack.config import DinConfig, QinConfig, TransformerDcnConfig, register_rank_model
from recstack.models.din import DIN
from recstack.models.qin import QIN
from recstack.models.transformer_dcn import TransformerDCN

RANKERS: dict[str, type[nn.Module]] = {}
# Embedding init per model, measured on MovieLens-100K (100k train rows, 2 epochs, bench/bench_rankers.py):
# DIN's un-normalised weighted sum over 64 items needs small vectors (id-only valid AUC 0.53 with N(0, 1),
# 0.71 with N(0, 0.01); FuxiCTR uses N(0, 1e-4): 0.69); QIN normalises its input (BatchNorm) and learns
# faster from N(0, 1) (0.67 vs 0.57 with N(0, 0.01)).
EMB_INIT_STD: dict[str, float] = {}


def register(name: str, model: type[nn.Module], settings: type, init_std: float = 0.01) -> None:
    """Add a ranker: its model class, its settings dataclass (`rank.<name>`) and its embedding init."""
    RANKERS[name] = model
    EMB_INIT_STD[name] = init_std
    register_rank_model(name, settings)


register("din", DIN, DinConfig, init_std=0.01)
register("qin", QIN, QinConfig, init_std=1.0)
# LayerNorm after every residual: the N(0, 0.01) of DIN (the winner's FuxiCTR default is N(0, 1e-4))
register("transformer_dcn", TransformerDCN, TransformerDcnConfig, init_std=0.01)
