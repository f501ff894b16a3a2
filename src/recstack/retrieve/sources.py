"""The registry of candidate sources: name -> builder. A builder returns None when its input is absent
(no embed stage for `content`, no finished seqrec stage for `seqrec`); the stage then runs without it.
`history` proposes only seen items: the stage leaves it out when the seen-item policy excludes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from recstack.retrieve.base import Source
from recstack.retrieve.content import Content
from recstack.retrieve.covisit import Covisit
from recstack.retrieve.history import History
from recstack.retrieve.index import IndexSettings
from recstack.retrieve.popular import Popular
from recstack.retrieve.seqrec import Seqrec


@dataclass(frozen=True)
class SourceInputs:
    n_rows: int  # item rows (re-ids 0..n_rows-1)
    pool: np.ndarray  # candidate pool item rows
    item_vecs: np.ndarray | None  # the embed stage's matrix, row = item
    seqrec_dir: Path | None  # a finished seqrec stage's folder
    index_cache: Path | None = None
    seed: int = 2025
    device: str = "auto"


def index_settings(rc: DictConfig, n_items: int, device: str = "auto") -> IndexSettings:
    """`retrieve.index.factory: auto`: exact Flat below `flat_below` items, `ann_factory` above, where
    `{nlist}` becomes 4 * sqrt(n) lists (the FAISS guideline; bench/README.md
    "Retrieval (FAISS index choice)" measured IVF1264 at 100k and IVF4000 at 1M items: recall@100 0.98 / 0.95
    at nprobe 64, 6.5x / 29x Flat's QPS)."""
    ix = rc.index
    factory = ix.factory
    if factory == "auto":
        nlist = max(1, int(round(4 * n_items**0.5)))
        factory = "Flat" if n_items < ix.flat_below else ix.ann_factory.replace("{nlist}", str(nlist))
    return IndexSettings(factory, int(ix.nprobe), int(ix.ef_search), ix.backend, device)


def _covisit(rc: DictConfig, inp: SourceInputs) -> Source:
    return Covisit(rc.covisit, inp.n_rows, inp.pool)


def _content(rc: DictConfig, inp: SourceInputs) -> Source | None:
    if inp.item_vecs is None:
        return None
    return Content(
        rc.content,
        inp.item_vecs,
        inp.pool,
        index_settings(rc, len(inp.pool), inp.device),
        inp.index_cache,
        inp.seed,
    )


def _popular(rc: DictConfig, inp: SourceInputs) -> Source:
    return Popular(rc.popular, inp.n_rows, inp.pool)


def _seqrec(rc: DictConfig, inp: SourceInputs) -> Source | None:
    return None if inp.seqrec_dir is None else Seqrec(inp.seqrec_dir, inp.pool)


def _history(rc: DictConfig, inp: SourceInputs) -> Source:
    return History(rc.history, inp.n_rows, inp.pool)


SOURCES: dict[str, Callable[[DictConfig, SourceInputs], Source | None]] = {
    "covisit": _covisit,
    "content": _content,
    "popular": _popular,
    "seqrec": _seqrec,
    "history": _history,  # only when seen items are kept (tracks/tencentgr/retrieve.py)
}
