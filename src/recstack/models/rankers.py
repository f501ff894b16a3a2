"""The registry of rankers: every model the `rank_<name>` stages can train (STYLE.md section 3)."""

from __future__ import annotations

from recstack.models.din import DIN
from recstack.models.qin import QIN

RANKERS = {"din": DIN, "qin": QIN}

# Embedding init per model, measured on MovieLens-100K (100k train rows, 2 epochs, bench/bench_rankers.py):
# DIN's un-normalised weighted sum over 64 items needs small vectors (id-only valid AUC 0.53 with N(0, 1),
# 0.71 with N(0, 0.01); FuxiCTR uses N(0, 1e-4): 0.69); QIN normalises its input (BatchNorm) and learns
# faster from N(0, 1) (0.67 vs 0.57 with N(0, 0.01)).
EMB_INIT_STD = {"din": 0.01, "qin": 1.0}
