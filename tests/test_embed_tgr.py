"""The embed stage on the tencentgr track: the tiny hand-made TencentGR set (tests/tgr_helpers.py) in the
platform layout, with item texts for some items; provided emb_81 / emb_82 with partial coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.data.raw.tencentgr_platform import write_platform
from recstack.data.tables.tgr_prepared import read_events, stack_queries
from recstack.errors import DataError
from recstack.paths import Embedded, Paths, PreparedTGR
from recstack.pipeline import run_stage, run_until
from recstack.stages.context import StageContext
from recstack.tracks.tencentgr.embed import tencentgr_side

from tgr_helpers import tiny_tgr

BASE = ("data.mm_feats=['81','82']", "data.emb_dims={'82': 8}", "data.valid_users=3", "embed.dim=16")


def _config(tmp_cfg, *overrides: str, texts: bool = True):
    cfg = tmp_cfg("tencentgr_real.yaml", *BASE, *overrides)
    raw = tiny_tgr()
    root = Paths(cfg).raw_dir
    write_platform(raw, root, {"82": 8})
    if texts:  # titles for items 1..10 only (the recstack extension the MovieLens builder writes)
        cids = raw.creative_id[1:11]
        text = pd.DataFrame({"creative_id": cids, "text": [f"movie {c % 97} drama" for c in cids]})
        text.to_parquet(root / "item_text.parquet", index=False)
    return cfg, raw


def test_tencentgr_embed_writes_id_aligned_matrix_and_coverage(tmp_cfg):
    cfg, raw = _config(tmp_cfg, "embed.align.epochs=2")
    manifests = run_until(cfg, "embed")
    assert list(manifests) == ["prepare", "embed"]
    paths = Paths(cfg)
    prep, out = paths.stage_dir("prepare"), paths.stage_dir("embed")
    n = len(pd.read_parquet(prep / PreparedTGR.ITEMS))  # 20 items + the cold candidate + row 0
    emb = np.load(out / Embedded.ITEMS)
    assert emb.shape == (n, 16) and n == raw.n_items + 2 and emb.dtype == np.float32
    assert np.isfinite(emb).all() and (emb[0] == 0).all()
    assert sorted(p.name for p in out.iterdir()) == [Embedded.ITEMS, "manifest.json"]  # no Task 1 export
    masks = {f: np.load(prep / PreparedTGR.mm_mask(f)) for f in ("81", "82")}
    has_text = np.zeros(n, bool)
    has_text[1:11] = True
    covered = masks["81"] | masks["82"] | has_text
    assert (np.abs(emb[covered]).sum(1) > 0).all() and (emb[~covered] == 0).all()
    assert masks["82"][-1] and not masks["81"][-1]  # the cold candidate has emb_82 only: it gets a vector
    figs = manifests["embed"]["figures"]
    assert set(figs["modalities"]) == {"emb_81", "emb_82", "text"}
    for f in ("81", "82"):
        assert figs["modalities"][f"emb_{f}"]["coverage"] == round(masks[f][1:].mean(), 4)
        assert figs["modalities"][f"emb_{f}"]["dim"] == {"81": 32, "82": 8}[f]
    assert figs["modalities"]["text"]["coverage"] == round(10 / (n - 1), 4)
    assert figs["modalities"]["text"]["dim"] == 384 and figs["text"]["encoded"] == 10
    assert figs["coverage_any"] == round(covered[1:].mean(), 4)
    assert 0 < figs["explained_variance"] <= 1 and figs["align"]["pairs_train"] > 0
    assert 0 <= figs["valid_knn_hr10"] <= 1 and figs["valid_probe_rows"] == 3


@pytest.mark.parametrize("histories", [False, True])
def test_tencentgr_alignment_pairs_leave_out_the_valid_targets(tmp_cfg, histories):
    cfg, _ = _config(tmp_cfg, f"embed.fit_histories={str(histories).lower()}", texts=False)
    run_until(cfg, "prepare")
    paths = Paths(cfg)
    prep = paths.stage_dir("prepare")
    side = tencentgr_side(StageContext(cfg, paths, paths.stage_dir("embed")))
    ev = pd.read_parquet(prep / PreparedTGR.EVENTS)
    valid = pd.read_parquet(prep / PreparedTGR.VALID)
    stack = stack_queries(
        read_events(prep), valid, int(cfg.data.stack_users), int(cfg.seed), int(cfg.data.stack_cuts)
    )
    cut = stack.groupby("user")["event_index"].min().to_dict()  # a stacker query's user: up to its first cut
    v_cut = dict(zip(valid["user"], valid["event_index"], strict=True))
    runs = []
    for u, g in ev.groupby("user", sort=False):  # the obvious version: walk each user's training events
        if u in v_cut:  # a valid user is held out whole, its history an input like a predict user's
            if histories:
                runs.append(g["item"].tolist()[: v_cut[u] - g.index[0]])
            continue
        runs.append(g["item"].tolist()[: cut[u] - g.index[0]] if u in cut else g["item"].tolist())
    if histories:  # embed.fit_histories: the predict users' histories too
        pe = pd.read_parquet(prep / PreparedTGR.PREDICT_EVENTS)
        runs += [g["item"].tolist() for _, g in pe.groupby("user", sort=False)]
    expected = {(a, b) for items in runs for a, b in zip(items[:-1], items[1:], strict=True) if a != b}
    assert expected
    assert set(map(tuple, side.pairs.tolist())) == expected and len(side.pairs) == len(expected)
    assert side.texts is None and side.image_paths is None and side.export is None
    hist, target = side.probe
    assert target.tolist() == valid["item"].tolist()
    for h, u, k in zip(hist, valid["user"], valid["n_hist"], strict=True):  # history before the target
        g = ev[ev["user"] == u]
        assert h[h > 0].tolist() == g["item"].tolist()[:k] and (h[: len(h) - k] == 0).all()


def test_tencentgr_embed_rows_follow_item_re_ids(tmp_cfg):
    """One modality, no alignment, PCA keeping every component: a rotation of the balanced provided vectors,
    so distances between output rows equal those between the raw vectors looked up by creative id."""
    cfg, raw = _config(tmp_cfg, "data.mm_feats=['81']", "embed.align.enabled=false",
                       "embed.text.enabled=false", texts=False)  # fmt: skip
    run_until(cfg, "embed")
    paths = Paths(cfg)
    items = pd.read_parquet(paths.stage_dir("prepare") / PreparedTGR.ITEMS)
    emb = np.load(paths.stage_dir("embed") / Embedded.ITEMS)
    cids, vectors = raw.mm["81"]
    row = items.set_index("creative_id").loc[cids, "item"].to_numpy()
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    x = x - x.mean(0)
    x /= np.sqrt((x**2).sum(1).mean())
    dist = lambda m: np.linalg.norm(m[:, None] - m[None], axis=-1)  # noqa: E731
    assert np.abs(dist(emb[row]) - dist(x)).max() < 1e-3  # float16 storage in prepare
    assert (emb[np.setdiff1d(np.arange(len(emb)), row)] == 0).all()


def test_tencentgr_embed_names_a_matrix_of_the_wrong_width(tmp_cfg):
    cfg, _ = _config(tmp_cfg, "embed.text.enabled=false", texts=False)
    run_until(cfg, "prepare")
    path = Paths(cfg).stage_dir("prepare") / PreparedTGR.mm_emb("82")
    n = len(np.load(path, mmap_mode="r"))
    np.save(path, np.zeros((n, 7), np.float16))
    with pytest.raises(DataError, match=rf"mm_82\.npy: emb_82 has shape \({n}, 7\).*expected \({n}, 8\)"):
        run_stage(cfg, "embed")
    assert not (Paths(cfg).stage_dir("embed") / "manifest.json").exists()  # nothing half-written
