"""The tencentgr local validation is built like the predict users (tgr_prepared.fit_events / query_inputs):
a valid user's target and later events never reach a model, its earlier events reach one only as the predict
users' histories do. A planted-leak run spies on every statistic each stage learns."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.artifacts import sha256_file, write_json, write_table
from recstack.data.tables.tgr_prepared import (
    HeldOut,
    fit_events,
    group_bounds,
    query_inputs,
    read_events,
    read_held_out,
    read_table,
    repeat_shares,
    training_mask,
    valid_histories,
)
from recstack.paths import Paths, PreparedTGR
from recstack.pipeline import run_stage, run_until

from conftest import ROOT
from test_movielens import fake_wheel


def _events() -> dict[str, np.ndarray]:
    # users 1..4, grouped and time-ordered; items 10+ so that a planted item is easy to spot
    user = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4])
    item = np.array([11, 12, 13, 14, 21, 22, 23, 31, 32, 33, 34, 41, 42])
    action = np.array([0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1])
    return {"user": user, "item": item, "action": action, "ts": np.arange(len(user)) * 10}


def _held() -> HeldOut:
    valid = pd.DataFrame({"user": [1], "item": [13], "action": [1], "n_hist": [2], "event_index": [2]})
    stack = pd.DataFrame({"user": [3], "item": [34], "action": [1], "n_hist": [3], "event_index": [10]})
    return HeldOut(valid, stack)


PREDICT = {
    "user": np.array([7, 7]),
    "item": np.array([71, 72]),
    "action": np.array([1, 1]),
    "ts": np.array([5, 6]),
}


def test_a_valid_user_is_held_out_whole_and_its_history_is_an_input_like_a_predict_users():
    ev, held = _events(), _held()
    assert training_mask(ev["user"], held).tolist() == [False] * 4 + [True] * 6 + [False] + [True] * 2
    fold = fit_events(ev, PREDICT, held, "valid", with_histories=False)
    assert not np.isin(fold["item"], [11, 12, 13, 14, 34, 71, 72]).any()  # valid user, stack target, predict
    fold = fit_events(ev, PREDICT, held, "valid", with_histories=True)  # histories as the predict users'
    assert np.isin([11, 12, 71, 72], fold["item"]).all() and not np.isin([13, 14, 34], fold["item"]).any()
    test = fit_events(ev, PREDICT, held, "test", with_histories=False)
    assert not np.isin([13, 14, 71, 72], test["item"]).any() and np.isin([11, 12, 34], test["item"]).all()
    test = fit_events(ev, PREDICT, held, "test", with_histories=True)
    assert np.isin([71, 72], test["item"]).all() and not np.isin([13, 14], test["item"]).any()
    for f in (fold, test):  # runs of one user stay contiguous: the fitters read them as sequences
        users, _, _ = group_bounds(f["user"])
        assert len(users) == len(np.unique(f["user"]))
    # the valid users' inputs take the predict users' form (same columns, grouped by user)
    v = query_inputs(ev, PREDICT, held, "valid")
    assert v.keys() == PREDICT.keys() and v["item"].tolist() == [11, 12] and v["user"].tolist() == [1, 1]
    assert query_inputs(ev, PREDICT, held, "test") is PREDICT
    with pytest.raises(ValueError, match="fold 'train'"):
        fit_events(ev, PREDICT, held, "train", with_histories=False)


def test_valid_histories_are_each_users_events_before_its_target():
    ev = _events()
    valid = pd.DataFrame({"user": [1, 3], "item": [13, 33], "event_index": [2, 9]})
    h = valid_histories(ev, valid)
    assert h["item"].tolist() == [11, 12, 31, 32] and h["ts"].tolist() == [0, 10, 70, 80]


# ---- planted leak: every stage of the pipeline, spied -----------------------------------------------------
P, Q, R, S = "valid target and later", "valid history", "predict history", "stacker target"


def _plant(cfg) -> dict[str, int]:
    """Give the first valid user's target and later events, its history, one predict user's history and one
    stacker query's target items of their own (found nowhere else). Returns {what: item row}."""
    prep = Paths(cfg).stage_dir("prepare")
    ev, pe = read_events(prep), read_events(prep, predict=True)
    valid = read_table(prep, PreparedTGR.VALID)
    held = read_held_out(prep)  # the stacker's queries as prepare drew them
    counts = np.bincount(np.r_[ev["item"], pe["item"]], minlength=61)
    rows = [int(i) for i in np.argsort(counts, kind="stable") if i > 0][:4]
    planted = dict(zip((P, Q, R, S), rows, strict=True))
    spare = next(i for i in range(1, 61) if i not in rows)
    for d in (ev, pe):
        d["item"] = np.where(np.isin(d["item"], rows), spare, d["item"])
    users, start, end = group_bounds(ev["user"])
    v, cut = int(valid["user"].iloc[0]), int(valid["event_index"].iloc[0])
    g = int(np.searchsorted(users, v))
    ev["item"][start[g] : cut] = planted[Q]
    ev["item"][cut : end[g]] = planted[P]
    s_cut = int(held.stack["event_index"].iloc[-1])
    gs = int(np.searchsorted(users, held.stack["user"].iloc[-1]))
    ev["item"][s_cut : end[gs]] = planted[S]
    pu = pe["user"][0]
    pe["item"][pe["user"] == pu] = planted[R]
    valid.loc[0, "item"] = planted[P]
    for name, d in ((PreparedTGR.EVENTS, ev), (PreparedTGR.PREDICT_EVENTS, pe)):
        schema = pq.read_schema(prep / name)
        write_table(prep / name, pa.table({c: pa.array(d[c], schema.field(c).type) for c in schema.names}))
    write_table(prep / PreparedTGR.VALID, pa.Table.from_pandas(valid, preserve_index=False))
    stack = held.stack.copy()  # the planted stacker target, and the seen-item shares of the planted events
    stack.loc[stack.index[-1], "item"] = planted[S]
    write_table(prep / PreparedTGR.STACK_QUERIES, pa.Table.from_pandas(stack, preserve_index=False))
    write_json(prep / PreparedTGR.SEEN, repeat_shares(ev, stack))
    return planted


def test_planted_valid_targets_never_reach_a_model_and_histories_only_as_predict_histories(
    tmp_path, tmp_cfg, monkeypatch
):
    from recstack.retrieve import popular
    from recstack.tracks.tencentgr import baseline, embed, retrieve, seqrec, stack

    (tmp_path / "input" / "_cache").mkdir(parents=True)
    wheel = fake_wheel(tmp_path / "input" / "_cache" / "recbole-1.2.1-py3-none-any.whl", users=30, items=60,
                       per_user=12)  # fmt: skip
    cfg = tmp_cfg("tencentgr_movielens.yaml", f"data.movielens.wheel_sha256={sha256_file(wheel)}",
                  "data.valid_users=8", "data.stack_cuts=1", "seqrec.train_predict=false")  # fmt: skip
    run_stage(cfg, "build")
    run_stage(cfg, "prepare")
    planted = _plant(cfg)

    seen: list[tuple[str, set[int]]] = []  # (who learned, the item rows it learned from)

    def spy(module, name, items_of):
        real = getattr(module, name)

        def wrapped(*a, **k):
            seen.append((f"{module.__name__}.{name}", set(np.asarray(items_of(*a, **k)).ravel().tolist())))
            return real(*a, **k)

        monkeypatch.setattr(module, name, wrapped)

    spy(retrieve, "fit_covisit", lambda fit, *a, **k: fit.item)
    spy(popular, "decayed_popularity", lambda item, *a, **k: item)
    spy(baseline, "decayed_popularity", lambda item, *a, **k: item)
    spy(stack, "item_stats", lambda item, *a, **k: item)
    spy(stack, "_contexts", lambda ctx, fit, *a, **k: fit["item"])
    spy(embed, "sequence_pairs", lambda user, item: item)
    spy(seqrec, "item_side", lambda ctx, trained: trained)
    spy(seqrec, "negative_rates", lambda trained, *a, **k: trained)

    def windows(model, store, train, *a, **k):  # every input and target event of the training windows
        s, e, it = train.start.numpy(), train.end.numpy(), store.item.numpy()
        return np.concatenate([it[a_ : b_ + 1] for a_, b_ in zip(s, e, strict=True)]) if len(s) else []

    spy(seqrec, "fit", windows)
    run_until(cfg)  # the whole pipeline, the baseline too
    learners = {who for who, _ in seen}
    assert len(learners) == 9, " ".join(sorted(learners))  # every spied statistic was fitted
    for who, items in seen:
        assert planted[P] not in items, f"{who} learned from a valid target"
        # a valid user's history only where the predict users' histories are learned the same way, or in a
        # fit for the predict users (it then holds the stacker's targets too: every training event)
        if planted[Q] in items and planted[R] not in items:
            assert planted[S] in items, f"{who} learned a valid history as a training sequence"


def test_stages_ask_the_data_layer_which_events_they_may_learn_from():
    """No stage derives the held-out events itself (tgr_prepared.fit_events is the one rule), and only
    prepare draws the stacker's queries (the others read them: tgr_prepared.read_held_out)."""
    src = ROOT / "src" / "recstack"
    for path in sorted([*(src / "stages").glob("*.py"), *(src / "tracks").glob("*/*.py")]):
        text = path.read_text()
        assert "before_cuts" not in text, f"{path.name} derives the training events itself"
        if path.name != "prepare.py":
            assert "stack_queries(" not in text, f"{path.name} draws the stacker's queries itself"
            assert "HeldOut.of(" not in text and "seen_policy(" not in text.replace("read_seen_policy(", "")
    assert "stack_queries(" in (src / "tracks" / "tencentgr" / "prepare.py").read_text()
