"""Shared test helpers: tiny configs writing under tmp_path, and tiny raw mmctr datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recstack.config import load_config
from recstack.data.raw.mmctr import MmctrItems, MmctrRaw, MmctrSplit

ROOT = Path(__file__).resolve().parents[1]


def _fixtures() -> Path:
    """The real competition files of ../shared/fixtures/ (see its SOURCES.md): next to the project root,
    or where RECSTACK_FIXTURES points (a clone elsewhere; when set, it alone decides)."""
    if os.environ.get("RECSTACK_FIXTURES"):
        return Path(os.environ["RECSTACK_FIXTURES"])
    for cand in (
        ROOT.parent / "shared" / "fixtures",
        "/work/shared/fixtures",
    ):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return ROOT.parent / "shared" / "fixtures"


FIXTURES = _fixtures()
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture
def _real_fixtures() -> Path:
    """The real files, or: a failure in CI (a skipped test there would hide that nothing was checked), a skip
    with the reason on a machine without them."""
    if not FIXTURES.is_dir():
        msg = (
            f"real fixtures not found at {FIXTURES}: put the shared fixtures next to the project "
            "(../shared/fixtures) or point RECSTACK_FIXTURES at a copy"
        )
        if IN_CI:
            pytest.fail(f"{msg} (CI=true: tests that need them fail instead of skipping)", pytrace=False)
        pytest.skip(msg)
    return FIXTURES


# tests that read the real files: skipped (with the reason) only outside CI when no copy is reachable
needs_fixtures = pytest.mark.usefixtures("_real_fixtures")


def tiny_raw(n_items: int = 30, users: int = 12, width: int = 8, seed: int = 0) -> MmctrRaw:
    """A small, valid mmctr dataset with every optional part (titles, three provided embeddings)."""
    rng = np.random.default_rng(seed)

    def split(n: int, test: bool = False) -> MmctrSplit:
        seq = rng.integers(1, n_items, (n, width))
        seq[:, : width // 2] *= rng.random((n, 1)) < 0.5  # some rows left-padded with 0
        seq = np.where(np.cumsum(seq != 0, axis=1) == 0, 0, seq)  # zeros only on the left
        s = MmctrSplit(
            user_id=rng.integers(1, users + 1, n),
            item_seq=seq,
            likes_level=rng.integers(0, 10, n),
            views_level=rng.integers(0, 10, n),
            item_id=rng.integers(1, n_items, n),
        )
        if test:
            s.ids = np.arange(n, dtype=np.int64)
        else:
            s.label = (rng.random(n) < 0.3).astype(np.float32)
            s.label[:2] = [0, 1]
        return s

    tags = np.zeros((n_items, 5), np.int64)
    tags[1:, 3:] = rng.integers(1, 9, (n_items - 1, 2))
    title = np.array([""] + [f"item {i} title" for i in range(1, n_items)], dtype=object)
    items = MmctrItems(
        tags=tags,
        title=title,
        likes_level=np.r_[0, rng.integers(0, 10, n_items - 1)],
        views_level=np.r_[0, rng.integers(0, 10, n_items - 1)],
    )
    for name, dim in (("item_emb_d128", 128), ("txt_emb_BERT", 12), ("img_emb_CLIPRN50", 16)):
        m = rng.normal(size=(n_items, dim)).astype(np.float32)
        m[0] = 0
        mask = np.ones(n_items, bool)
        if name == "img_emb_CLIPRN50":
            mask[[0, 3]] = False  # partial coverage
            m[~mask] = 0
        if name == "item_emb_d128":
            mask[0] = True  # item_info has an all-zero padding row
        else:
            mask[0] = False
        items.emb[name], items.emb_mask[name] = m, mask
    return MmctrRaw(train=split(60), valid=split(20), test=split(20, test=True), items=items)


@pytest.fixture
def tmp_cfg(tmp_path):
    """load_config with input/output roots under tmp_path, plus overrides."""

    def make(config: str | None = None, *overrides: str):
        base = [f"input_root={tmp_path / 'input'}", f"output_root={tmp_path / 'outputs'}", *TINY_SEQREC]
        path = ROOT / "configs" / config if config else None
        return load_config(path, [*base, *overrides])

    return make


# the tencentgr sequence model in seconds wherever a test runs that track's pipeline (tests override)
TINY_SEQREC = (
    "seqrec.dim=8", "seqrec.heads=2", "seqrec.layers=1", "seqrec.min_steps=6", "seqrec.batch_size=4",
    "seqrec.eval_every=3", "seqrec.negatives=8", "seqrec.inbatch=8", "seqrec.progress=false",
)  # fmt: skip

SMALL_SYNTH = (
    "data.synthetic.users=150",
    "data.synthetic.items=200",
    "data.synthetic.samples_per_user=8",
    "data.synthetic.hist_len=16",
    "data.synthetic.topics=6",
    "data.synthetic.txt_dim=24",
    "data.synthetic.img_dim=32",
    "data.synthetic.image_size=16",
    "data.max_hist=16",
    "baseline.folds=3",
    "rank.epochs=2",
    "rank.progress=false",
    "rank.din.emb_dim=8",
    "rank.din.attention_units=[16]",
    "rank.din.dnn_units=[16]",
    "rank.din.batch_size=256",
    "rank.qin.emb_dim=8",
    "rank.qin.layers=2",
    "rank.qin.batch_size=256",
    "rank.transformer_dcn.emb_dim=8",
    "rank.transformer_dcn.ffn=16",
    "rank.transformer_dcn.max_len=8",
    "rank.transformer_dcn.summary_last=2",
    "rank.transformer_dcn.dnn_units=[16]",
    "rank.transformer_dcn.batch_size=256",
    "embed.text.enabled=false",  # MiniLM costs seconds a run; tests/test_embed.py turns it on where needed
)
