"""The seen-item policy (exclude_seen: auto), the history source and the reranker's history features, by hand
on tiny data; the policy never reads the valid users' targets; bad settings are rejected."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recstack.config import ConfigError, HistorySourceConfig
from recstack.data.raw.tencentgr_platform import write_platform
from recstack.data.tables.tgr_prepared import (
    REPEAT_SHARE_KEEP,
    read_events,
    repeat_shares,
    seen_policy,
    seen_setting,
    stack_queries,
)
from recstack.paths import Paths, PreparedTGR, Retrieved
from recstack.pipeline import run_stage
from recstack.retrieve.base import Events, query_histories
from recstack.retrieve.history import History
from recstack.stack.features import history_features
from recstack.tracks import TRACKS

from tgr_helpers import tiny_tgr

DAY = 86400


def _events(repeat_train: bool, repeat_valid: bool, n_users: int = 40, valid_users=range(1, 11)):
    """n_users users of 6 events, all clicks, each on fresh items except where a repeat is planted: the last
    event (every user's last click: the held-out target) then repeats the user's first item. Users 1..10 are
    the valid users (their targets), the others the stacker's training users."""
    user, item, action, ts = [], [], [], []
    for u in range(1, n_users + 1):
        items = [1000 * u + j for j in range(6)]
        repeat = repeat_valid if u in valid_users else repeat_train
        if repeat:
            items[-1] = items[0]
        user += [u] * 6
        item += items
        action += [1] * 6
        ts += [j * DAY for j in range(6)]
    ev = {k: np.array(v, np.int64) for k, v in zip(("user", "item", "action", "ts"), (user, item, action, ts),
                                                   strict=True)}  # fmt: skip
    valid = pd.DataFrame({"user": np.array(valid_users, np.int64), "item": 0, "action": 1, "n_hist": 5,
                          "event_index": (np.array(valid_users) - 1) * 6 + 5})  # fmt: skip
    valid["item"] = ev["item"][valid["event_index"].to_numpy()]
    return ev, valid


def _decide(ev, valid, setting="auto", n=20):
    return seen_policy(setting, ev, stack_queries(ev, valid, n, seed=3))


def test_policy_keeps_seen_items_where_targets_repeat_and_leaves_them_out_where_none_do():
    ev, valid = _events(repeat_train=True, repeat_valid=False)
    keep = _decide(ev, valid)
    assert not keep.exclude and keep.figures["repeat_share"] == 1.0 and keep.figures["queries"] == 20
    assert keep.figures["repeat_click_share"] == 1.0 and keep.figures["repeat_last10_share"] == 1.0
    ev, valid = _events(repeat_train=False, repeat_valid=False)
    out = _decide(ev, valid)
    assert out.exclude and out.figures["repeat_share"] == 0.0
    # explicit settings win whatever the data; YAML booleans arrive as "True" / "False"
    assert _decide(ev, valid, "True").exclude and not _decide(ev, valid, False).exclude
    assert _decide(ev, valid, "false").figures["setting"] == "false"
    # no training query to decide from: seen items left out (the old default)
    none = _decide(ev, valid, n=0)
    assert none.exclude and none.figures["queries"] == 0


def test_policy_threshold_on_a_mixed_share():
    """Exactly the share of training targets that repeat decides, against REPEAT_SHARE_KEEP."""
    ev, valid = _events(repeat_train=False, repeat_valid=False, n_users=30)
    q = stack_queries(ev, valid, 20, seed=3)
    # make 1 of the 20 queries (5%) and then 3 of them (15%) repeat their user's first item
    for n_rep, exclude in ((1, True), (3, False)):
        e = {k: v.copy() for k, v in ev.items()}
        for r in q["event_index"].to_numpy()[:n_rep]:
            e["item"][r] = e["item"][r - 5]
        qs = stack_queries(e, valid, 20, seed=3)
        shares = repeat_shares(e, qs)
        assert shares["repeat_share"] == n_rep / 20
        assert seen_policy("auto", e, qs).exclude is exclude
    assert 0.05 < REPEAT_SHARE_KEEP <= 0.15


def test_policy_never_reads_valid_targets():
    """A repeat pattern planted only in the valid users' targets moves neither the decision nor a figure."""
    plain = _decide(*_events(repeat_train=False, repeat_valid=False))
    planted = _decide(*_events(repeat_train=False, repeat_valid=True))
    assert plain.exclude and planted.exclude and plain.figures == planted.figures
    plain = _decide(*_events(repeat_train=True, repeat_valid=False))
    planted = _decide(*_events(repeat_train=True, repeat_valid=True))
    assert not plain.exclude and plain.figures == planted.figures


def test_history_scores_by_hand():
    # one query: events (item, action, age) oldest first: 5 exposed, 7 clicked, 5 clicked, 9 converted, 3 (not
    # in the pool) clicked; a second query with no events; a third with one exposure of 7
    ev = Events(np.array([1, 1, 1, 1, 1, 3]), np.array([5, 7, 5, 9, 3, 7]), np.array([0, 1, 1, 2, 1, 0]),
                np.array([0, 1, 2, 3, 4, 5]) * 3600)  # fmt: skip
    q = query_histories(ev, np.array([1, 2, 3]), "valid")
    pool = np.array([5, 7, 9])
    st = HistorySourceConfig(history=100, recency=0.5, half_life_hours=0.0, exposure_weight=0.5)
    src = History(st, 10, pool)
    r = src.recommend(q, 4, exclude_seen=False)
    # ages: 3 -> 0, 9 -> 1, 5 -> 2, 7 -> 3, 5 -> 4
    want = {9: 2.5 * 0.5, 5: 1.0 * 0.5**2 + 0.5 * 0.5**4, 7: 1.0 * 0.5**3}
    assert r.items[0, :3].tolist() == [9, 5, 7] and r.items[0, 3] == -1
    assert np.allclose(r.scores[0, :3], [want[i] for i in (9, 5, 7)])
    assert (r.items[1] == -1).all()
    assert r.items[2, 0] == 7 and np.isclose(r.scores[2, 0], 0.5)
    # a window of 2 events sees only the latest two (item 3 is outside the pool)
    assert History(HistorySourceConfig(history=2, recency=0.5), 10, pool).recommend(q, 4, False).items[0, :2].tolist() == [9, -1]  # fmt: skip
    # time decay: a half-life of 1 hour halves the vote per hour before the last event (t = 4 h)
    td = History(
        HistorySourceConfig(
            history=100, recency=1.0, half_life_hours=1.0, exposure_weight=1.0, conversion_weight=1.0
        ),
        10,
        pool,
    ).recommend(q, 4, False)
    got = dict(zip(td.items[0, :3].tolist(), td.scores[0, :3].tolist(), strict=True))
    assert np.isclose(got[9], 0.5) and np.isclose(got[5], 2**-4 + 2**-2) and np.isclose(got[7], 2**-3)
    # with seen items excluded it has nothing to propose
    assert (src.recommend(q, 4, exclude_seen=True).items == -1).all()


def test_history_features_by_hand():
    hist = [np.array([5, 3, 5, 7]), np.array([], np.int64), np.array([3])]
    act = [np.array([0, 1, 1, 0]), np.array([], np.int64), np.array([2])]
    ts = [np.array([0, 1, 2, 4]) * DAY, np.array([], np.int64), np.array([10])]
    query, cand = np.array([0, 0, 0, 0, 1, 2, 2]), np.array([5, 3, 7, 9, 5, 3, 5])
    f = history_features(hist, act, ts, query, cand)
    nan = np.nan
    assert np.array_equal(f["hist_clicks"], [1, 1, 0, 0, 0, 1, 0])
    assert np.array_equal(f["hist_last_action"], [1, 1, 0, nan, nan, 2, nan], equal_nan=True)
    assert np.array_equal(f["hist_last_age"], [1, 2, 0, nan, nan, 0, nan], equal_nan=True)
    assert np.array_equal(f["hist_last_days"], [2, 3, 0, nan, nan, 0, nan], equal_nan=True)
    assert all(v.dtype == np.float32 and len(v) == 7 for v in f.values())


@pytest.mark.parametrize("value", ["maybe", "1", "keep"])
def test_bad_exclude_seen_is_rejected(tmp_cfg, value):
    for key in ("retrieve", "seqrec", "baseline"):
        with pytest.raises(ConfigError, match=f"'{key}.exclude_seen' is '{value}'; expected one of auto"):
            tmp_cfg("tencentgr_real.yaml", f"{key}.exclude_seen={value}")
    with pytest.raises(ValueError, match="expected one of auto, true, false"):
        seen_setting(value)


def test_retrieve_stage_keeps_seen_items_with_the_history_source(tmp_cfg, monkeypatch):
    """The stage through the pipeline: kept seen items bring the history source, whose candidates are the
    queries' own history items; the decision and its figures are in retrieval.json and the manifest."""
    stages = {k: v for k, v in TRACKS["tencentgr"].stages.items() if k in ("build", "prepare", "retrieve")}
    monkeypatch.setattr(TRACKS["tencentgr"], "stages", stages)  # no embed / seqrec stage: seconds
    base = ("data.mm_feats=['81','82']", "data.emb_dims={'82': 8}", "data.valid_users=2", "data.stack_users=2",
            "retrieve.covisit.window=3", "retrieve.content.enabled=false", "retrieve.seqrec.enabled=false")  # fmt: skip
    cfg = tmp_cfg("tencentgr_real.yaml", *base, "retrieve.exclude_seen=false")
    write_platform(tiny_tgr(), Paths(cfg).raw_dir, {"82": 8})
    run_stage(cfg, "prepare")
    figures = run_stage(cfg, "retrieve")["figures"]
    out = Paths(cfg).stage_dir("retrieve")
    report = json.loads((out / Retrieved.REPORT).read_text())
    assert report["exclude_seen"] is False and report["seen_policy"]["setting"] == "false"
    assert "history" in report["sources"] and figures["exclude_seen"] is False
    cand = pd.read_parquet(out / Retrieved.CANDIDATES)
    h = cand[cand["history_rank"] >= 0]
    assert len(h) and set(h["split"]) == {"train", "valid", "test"}
    ev = read_events(Paths(cfg).stage_dir("prepare"))
    train = pd.read_parquet(Paths(cfg).stage_dir("prepare") / PreparedTGR.STACK_QUERIES)
    for row, (user, cut) in enumerate(zip(train["user"], train["event_index"], strict=True)):
        own = set(ev["item"][(ev["user"] == user) & (np.arange(len(ev["item"])) < cut)].tolist())
        assert set(h.loc[(h.split == "train") & (h.user_row == row), "item"]) <= own
    # auto on this data: decided from the 2 training queries, figures in the report
    cfg = tmp_cfg("tencentgr_real.yaml", *base)
    run_stage(cfg, "retrieve")
    report = json.loads((out / Retrieved.REPORT).read_text())
    pol = report["seen_policy"]
    assert pol["setting"] == "auto" and pol["queries"] == 2 and report["exclude_seen"] is pol["exclude_seen"]
    assert report["exclude_seen"] == (pol["repeat_share"] < REPEAT_SHARE_KEEP)
    assert ("history" in report["sources"]) is not report["exclude_seen"]
