from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recstack.config import SyntheticTGRConfig
from recstack.data.builders.synthetic_tgr import MAX_EVENTS, build_and_write, build_tgr_synthetic
from recstack.data.raw.tencentgr import ITEM_SPARSE
from recstack.data.raw.tencentgr_platform import read_platform
from recstack.paths import PreparedTGR, RawTencentGR

CFG = SyntheticTGRConfig(
    users=300, items=400, events_per_user=30, topics=8, candidates=100, predict_users=40,
    mm_dims={"81": 8, "82": 16}, seed=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def built():
    latent: dict = {}
    raw, truth = build_tgr_synthetic(CFG, latent)
    return raw, truth, latent


def _arrays(raw, truth) -> dict[str, np.ndarray]:
    out = {f"truth.{c}": truth[c].to_numpy() for c in truth.columns}
    for name in ("events", "predict_events"):
        out |= {f"{name}.{k}": v for k, v in vars(getattr(raw, name)).items()}
    out |= {f"item.{k}": v for k, v in raw.item_sparse.items()} | {
        f"user.{k}": v for k, v in raw.user_sparse.items()
    }
    out |= {f"mm.{k}": np.concatenate([c.astype(np.float32), m.ravel()]) for k, (c, m) in raw.mm.items()}
    out |= {"user_raw": raw.user_raw, "creative_id": raw.creative_id, "cand": raw.cand_creative_id}
    out |= {"predict_users": raw.predict_users, "profile_ts": raw.profile_ts}
    out["u106"] = np.array([len(x) for x in raw.user_array["106"]] + sum(raw.user_array["106"], []))
    return out


def test_deterministic_for_a_seed(built):
    a = _arrays(*built[:2])
    b = _arrays(*build_tgr_synthetic(CFG))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = _arrays(*build_tgr_synthetic(replace(CFG, seed=CFG.seed + 1)))
    assert not np.array_equal(a["events.item"][:1000], c["events.item"][:1000])
    assert not np.array_equal(a["mm.82"], c["mm.82"])


def test_shapes_and_conventions(built):
    raw, truth, _ = built
    n_users = CFG.users + CFG.predict_users
    assert raw.n_users == n_users and raw.n_items == CFG.items and raw.user_raw[0] == ""
    assert len(set(raw.user_raw[1:])) == n_users and len(set(raw.creative_id[1:])) == CFG.items
    n_pred = len(raw.predict_users)  # those with a click of a candidate after an event (most of them)
    assert 0.7 * CFG.predict_users < n_pred <= CFG.predict_users
    for ev, users in ((raw.events, CFG.users), (raw.predict_events, n_pred)):
        for col in (ev.user, ev.item, ev.action, ev.ts):
            assert col.dtype == np.int64 and col.shape == (len(ev),)
        assert (np.diff(ev.user) >= 0).all()  # grouped by user
        same = np.diff(ev.user) == 0
        assert (np.diff(ev.ts)[same] > 0).all()  # time order within a user
        counts = np.bincount(ev.user)[np.unique(ev.user)]
        assert len(counts) == users and counts.max() <= MAX_EVENTS and counts.min() >= 1
        assert ev.item.min() >= 1 and ev.item.max() <= CFG.items and set(np.unique(ev.action)) == {0, 1, 2}
        assert ev.ts.max() - ev.ts.min() <= CFG.days * 86400
    assert raw.events.user.min() >= 1 and raw.events.user.max() <= n_users
    assert not set(raw.events.user.tolist()) & set(raw.predict_users.tolist())
    assert set(raw.predict_events.user.tolist()) == set(raw.predict_users.tolist())
    assert abs(len(raw.events) / CFG.users - CFG.events_per_user) < 3
    clicks = (raw.events.action >= 1).mean()
    assert abs(clicks - CFG.click_rate) < 0.02
    assert 0.03 < (raw.events.action == 2).sum() / (raw.events.action >= 1).sum() < 0.2
    assert sorted(raw.item_sparse) == sorted(ITEM_SPARSE)
    for v in raw.item_sparse.values():
        assert v.shape == (CFG.items + 1,) and v[0] == 0 and v.min() >= 0
    assert raw.item_sparse["119"][1:].astype(bool).mean() < 0.8  # partly missing
    for f in ("103", "104", "105", "109"):
        assert raw.user_sparse[f].shape == (n_users + 1,)
    assert len(raw.user_array["106"]) == n_users + 1 and raw.user_array["106"][0] == []
    assert (raw.profile_ts[1:] > 0).all()
    # pool: unique ids, a share never in training (cold), features for every candidate
    pool = raw.cand_creative_id
    assert len(pool) == CFG.candidates == len(np.unique(pool))
    cold = ~np.isin(pool, raw.creative_id[1:])
    assert cold.sum() == round(CFG.candidates * CFG.cold_share)
    assert all(len(v) == len(pool) for v in raw.cand_features.values())
    for feat, dim in CFG.mm_dims.items():
        cids, mat = raw.mm[feat]
        assert mat.shape == (len(cids), dim) and mat.dtype == np.float32
        assert 0.7 < len(cids) / (CFG.items + cold.sum()) < 0.9
        assert np.isin(cids, np.r_[raw.creative_id[1:], pool]).all()
    # truth: one row per predict user, in answer order; the last click of a candidate in the user's sequence
    # (as a valid user's target): the history holds no later click of a candidate
    assert list(truth.columns) == ["user_id", "creative_id", "action"]
    assert truth.user_id.tolist() == raw.user_raw[raw.predict_users].tolist()
    assert truth.creative_id.isin(pool).all() and set(truth.action) <= {1, 2}
    assert not np.isin(truth.creative_id, pool[cold]).any()  # cold candidates are never in a sequence


def test_clicks_follow_topic_preferences(built):
    raw, truth, latent = built
    topics = latent["user_topics"]
    ev = raw.events
    preferred = (topics[ev.user] == latent["item_topic"][ev.item][:, None]).any(1)
    chance = (topics[ev.user] >= 0).sum(1).mean() / CFG.topics
    click = ev.action >= 1
    assert preferred[click].mean() > 2.5 * chance
    assert preferred[click].mean() > preferred[~click].mean() + 0.15
    # the hidden targets too
    cand_topic = dict(zip(raw.cand_creative_id.tolist(), latent["cand_topic"].tolist(), strict=True))
    t_topic = np.array([cand_topic[c] for c in truth.creative_id.tolist()])
    assert (topics[raw.predict_users] == t_topic[:, None]).any(1).mean() > 2.5 * chance
    # the topic-driven feature 101 shows the topic far above chance
    same = pd.crosstab(latent["item_topic"][1:], raw.item_sparse["101"][1:]).max(axis=1).sum() / CFG.items
    assert same > 0.8


def test_latent_event_topics_and_the_oracle_click_law(built):
    """`latent` holds each training event's topic run and the click model's terms (bench/oracle_tgr.py bounds
    the valid score with them): exposures come from their run's topic (TOPIC_EXPOSURE, plus popular draws that
    land in it), and the oracle's law of a clicked item gives the real clicks a higher likelihood than the same
    law told shuffled topic runs or than popularity alone."""
    import importlib.util
    from pathlib import Path

    from recstack.data.builders.synthetic_tgr import TOPIC_EXPOSURE

    raw, _, latent = built
    ev, t = raw.events, latent["event_topic"]
    assert len(t) == len(ev.user) and latent["item_pop"].shape == latent["item_creative"].shape
    same = (latent["item_topic"][ev.item] == t).mean()
    assert same > TOPIC_EXPOSURE
    shuffled = np.random.default_rng(0).permutation(t)
    assert (latent["item_topic"][ev.item] == shuffled).mean() < same - 0.3
    spec = importlib.util.spec_from_file_location(
        "oracle", Path(__file__).parents[1] / "bench" / "oracle_tgr.py"
    )
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    click = np.flatnonzero(ev.action >= 1)
    rows = np.arange(len(click))

    def loglik(topics):
        p = oracle.click_law(latent, CFG.items, CFG.topics, topics[click].astype(np.int64), ev.user[click])
        assert np.allclose(p.sum(1), 1.0)
        return np.log(p[rows, ev.item[click] - 1]).mean()

    pop = latent["item_pop"][: CFG.items]
    assert loglik(t) > loglik(shuffled) + 0.2  # 0.40 nats a click at this seed (8 topics)
    assert loglik(t) > np.log(pop[ev.item[click] - 1] / pop.sum()).mean() + 1.0  # 2.03 nats here


def test_platform_round_trip(tmp_path, built):
    raw, truth, _ = built
    figures = build_and_write(CFG, tmp_path / "raw")
    assert figures["events"] == len(raw.events) and figures["predict_users"] == len(raw.predict_users)
    got = pd.read_parquet(RawTencentGR(tmp_path / "raw").truth)
    pd.testing.assert_frame_equal(got, truth)
    out = tmp_path / "prepared"
    fig = read_platform(tmp_path / "raw", out, True, mm_feats=tuple(CFG.mm_feats), emb_dims=dict(CFG.mm_dims))
    n_cold = round(CFG.candidates * CFG.cold_share)
    assert (fig["users"], fig["items"], fig["candidates"]) == (raw.n_users, CFG.items, CFG.candidates)
    assert (fig["events"], fig["predict_events"]) == (len(raw.events), len(raw.predict_events))
    assert (fig["training_users"], fig["predict_users"], fig["candidates_cold"]) == (
        CFG.users,
        len(raw.predict_users),
        n_cold,
    )
    assert fig["items_with_pool"] == CFG.items + n_cold and fig["predict_users_unknown"] == 0
    events = pd.read_parquet(out / PreparedTGR.EVENTS)
    for col, want in (("user", raw.events.user), ("item", raw.events.item), ("ts", raw.events.ts)):
        np.testing.assert_array_equal(events[col].to_numpy(np.int64), want, err_msg=col)
    pu = pd.read_parquet(out / PreparedTGR.PREDICT_USERS)
    assert pu.raw_user_id.tolist() == truth.user_id.tolist()
    cand = pd.read_parquet(out / PreparedTGR.CANDIDATES)
    assert set(truth.creative_id) <= set(cand.creative_id)
    cids, mat = raw.mm["82"]
    emb = np.load(out / PreparedTGR.mm_emb("82"))
    items = pd.read_parquet(out / PreparedTGR.ITEMS)
    row = dict(zip(items.creative_id.tolist(), items.item.tolist(), strict=True))
    rows = np.array([row[c] for c in cids.tolist()])
    np.testing.assert_allclose(emb[rows], mat, atol=2e-3)
    assert abs(fig["coverage_mm_82"] - len(cids) / (CFG.items + n_cold)) < 1e-9


def test_writer_fragments_match_orjson_across_blocks(tmp_path, built, monkeypatch):
    """The hand-formatted item feature fragments are orjson's bytes (zeros left out), and item_feat_dict.json
    written block by block (blocks of 7 items here, so many boundaries) reads back the same features."""
    import json

    import orjson

    from recstack.data.raw import tencentgr_platform as tp

    raw, _, _ = built
    monkeypatch.setattr(tp, "FRAGMENT_BLOCK", 7)
    sparse = dict(raw.item_sparse)
    sparse["118"] = np.where(np.arange(len(sparse["118"])) % 3 == 0, 0, sparse["118"])  # zeros dropped
    frags = tp._feature_fragments(sparse, raw.n_items + 1)
    keys = [k for k in ITEM_SPARSE if k in sparse]
    want = [
        orjson.dumps({k: int(sparse[k][i]) for k in keys if sparse[k][i]}) for i in range(raw.n_items + 1)
    ]
    assert frags == want
    assert tp._feature_fragments({}, 3) == [b"{}"] * 3
    tp.write_platform(raw, tmp_path, {"81": 8, "82": 16})
    text = RawTencentGR(tmp_path).item_feat_dict.read_bytes()
    got = json.loads(text)
    assert list(got) == [str(i) for i in range(1, raw.n_items + 1)]
    for i in (1, 7, 8, raw.n_items):
        assert got[str(i)] == {k: int(v[i]) for k, v in raw.item_sparse.items() if v[i]}
    assert text.count(b"}, ") == raw.n_items - 1  # ", " between every pair of entries, none doubled
