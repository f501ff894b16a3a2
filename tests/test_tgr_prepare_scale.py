"""The TencentGR platform readers' fast paths (issue #15) give what the plain paths gave, and prepare logs its
steps: candidates with sparse features, item_feat_dict a block at a time, event batches, embedding stores."""

import logging

import numpy as np
import pytest

from recstack.data.raw import tencentgr_platform as tp
from recstack.data.raw.progress import Heartbeat, Steps
from recstack.data.raw.tencentgr import ITEM_SPARSE, EmbeddingSink
from recstack.data.raw.tencentgr_platform import (
    SeqParser,
    _Counts,
    _RowBatch,
    read_candidates,
    read_item_feat_dict,
    read_platform,
    write_platform,
)
from recstack.errors import DataError

from tgr_helpers import tiny_tgr


# ---- candidates ---------------------------------------------------------------------------------------
def test_candidates_features_sparse_in_first_seen_order(tmp_path):
    path = tmp_path / "predict_set.jsonl"
    path.write_bytes(
        b'{"creative_id": 10, "retrieval_id": 5, "features": {"112": 3}}\n'
        b'{"creative_id": "11", "features": {"100": 7, "112": 4}}\n'
        b'{"creative_id": 12, "retrieval_id": 9}\n'
        b'{"creative_id": 13, "retrieval_id": 1, "features": {"100": 2}}\n'
    )
    cid, rid, feats = read_candidates(path, True, _Counts())
    assert cid.tolist() == [10, 11, 12, 13] and rid.tolist() == [5, 1, 9, 1]  # default: the row number
    assert list(feats) == ["112", "100"]
    assert feats["112"].tolist() == [3, 4, 0, 0] and feats["100"].tolist() == [0, 7, 0, 2]
    assert all(v.dtype == np.int64 for v in feats.values())


def test_candidate_feature_not_an_integer(tmp_path):
    path = tmp_path / "predict_set.jsonl"
    path.write_bytes(
        b'{"creative_id": 10, "features": {"112": 3}}\n{"creative_id": 11, "features": {"100": 1.5}}\n'
    )
    with pytest.raises(
        DataError, match=r"predict_set\.jsonl line 2 feature 100: expected an integer, got 1\.5"
    ):
        read_candidates(path, True, _Counts())


def test_a_creative_listed_twice_is_folded_when_identical_and_refused_when_not(tmp_path, caplog):
    path = tmp_path / "predict_set.jsonl"
    path.write_bytes(
        b'{"creative_id": 10, "features": {"112": 3}}\n{"creative_id": 11}\n'
        b'{"creative_id": 10, "retrieval_id": 7, "features": {"112": 3}}\n'
    )
    counts = _Counts()
    cid, rid, feats = read_candidates(path, True, counts)  # the same candidate twice: one row, counted
    assert cid.tolist() == [10, 11] and rid.tolist() == [0, 1] and feats["112"].tolist() == [3, 0]
    assert counts["candidates_duplicate_folded"] == 1 and "folded" in caplog.text
    path.write_bytes(
        b'{"creative_id": 10, "features": {"112": 3}}\n{"creative_id": 10, "features": {"112": 4}}\n'
    )
    with pytest.raises(
        DataError, match=r"line 2: creative_id 10 is listed again \(first at line 1\) with other"
    ):
        read_candidates(path, True, _Counts())


# ---- item_feat_dict.json --------------------------------------------------------------------------------
FEATS = (
    b'{"1": {"100": 4, "112": 9, "999": 1}, "2": {}, "3": {"101": 6},\n'
    b' "0": {"100": 1}, "77": {"100": 5}, "4": {"100": 8, "102": 2}, "5": {"117": 3},\n'
    b' "4": {"101": 1}, "006": {"100": 2}}'
)  # "0" and "77" are outside 1..n_rows-1; item 4 twice: the second keeps the first's 100 and 102; "006" is 6


def _feats(path, chunk):
    counts = _Counts()
    return read_item_feat_dict(path, 8, True, counts, chunk=chunk), counts


@pytest.mark.parametrize("chunk", [7, 40, 90, 1 << 24])
def test_item_feat_dict_same_values_whatever_the_blocks(tmp_path, chunk):
    path = tmp_path / "item_feat_dict.json"
    path.write_bytes(FEATS)
    feats, counts = _feats(path, chunk)
    assert set(feats) == set(ITEM_SPARSE) and counts["item_feat_unknown_item"] == 2
    assert feats["100"].tolist() == [0, 4, 0, 0, 8, 0, 2, 0]
    assert feats["101"].tolist() == [0, 0, 0, 6, 1, 0, 0, 0]
    assert feats["102"].tolist() == [0, 0, 0, 0, 2, 0, 0, 0]
    assert feats["112"][1] == 9 and feats["117"][5] == 3
    assert sum(int(v.sum()) for v in feats.values()) == 4 + 8 + 2 + 6 + 1 + 2 + 9 + 3


def test_item_feat_dict_bad_value_named_whatever_the_blocks(tmp_path):
    path = tmp_path / "item_feat_dict.json"
    path.write_bytes(b'{"1": {"100": 4}, "2": {"100": "big"}}')
    for chunk in (5, 1 << 24):
        with pytest.raises(DataError, match=r"item_feat_dict\.json: item 2 feature 100: expected an integer"):
            _feats(path, chunk)
    path.write_bytes(b'{"1": {"100": 4}, "2": {"100": 3')
    with pytest.raises(DataError, match=r"truncated or malformed after the last complete item"):
        _feats(path, 1 << 24)


# ---- event batches ----------------------------------------------------------------------------------------
def test_take_keeps_line_order_and_sorts_time_within_a_line_stably(tmp_path):
    parser = SeqParser(tmp_path / "seq.jsonl", 5, 9, _Counts())
    parser.line(1, [[3, 1, None, {}, 0, 50], [3, 2, None, {}, 1, 40], [3, 3, None, {}, 0, 40]])
    parser.line(2, [[1, 4, None, {}, 0, 10], [1, None, {"103": 2}, None, None, 11], [1, 12, None, {}, 2, 30]])
    parser.line(3, [[2, 5, None, {}, 0, 60]])
    ev = parser.take()
    assert ev.user.tolist() == [3, 3, 3, 1, 1, 2]  # lines in file order, not by user
    assert ev.item.tolist() == [2, 3, 1, 4, 0, 5]  # 40, 40 (ties keep file order), 50; item 12 > 9 -> 0
    assert ev.ts.tolist() == [40, 40, 50, 10, 30, 60]
    assert parser.counts["events_unknown_item"] == 1 and parser.profiles == {1: {"103": 2}}
    parser.line(4, [[4, 7, None, {}, 0, 5]])
    assert parser.take().item.tolist() == [7] and len(parser.take()) == 0


def test_a_line_that_fails_adds_no_events(tmp_path):
    parser = SeqParser(tmp_path / "seq.jsonl", 5, 9, _Counts())
    parser.line(1, [[2, 5, None, {}, 0, 60], [2, 6, None, {}, 1, 50]])
    with pytest.raises(
        DataError, match=r"line 2 record 1: unknown action_type True"
    ):  # the record-by-record path
        parser.line(2, [[3, 5, None, {}, 0, 60], [3, 6, None, {}, True, 50]])
    parser.line(3, [[1, 8, None, {}, 2, 5]])
    ev = parser.take()
    assert ev.user.tolist() == [2, 2, 1] and ev.item.tolist() == [6, 5, 8] and parser.line_users == [2, 1]


# ---- embedding stores --------------------------------------------------------------------------------------
def test_row_batch_keeps_the_last_vector_of_a_row(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "MM_BLOCK", 3)
    sink = EmbeddingSink(tmp_path, "81", 6, 2)
    rows = _RowBatch(sink)
    for row, x in [(1, 1.0), (4, 2.0), (1, 3.0), (2, 4.0), (2, 5.0), (5, 6.0), (5, 7.0)]:
        rows.add(row, np.array([x, -x], np.float32))
    rows.flush()
    assert sink.matrix[:, 0].tolist() == [0, 3, 5, 0, 2, 7]  # blocks of 3: (1, 4, 1), (2, 2, 5), (5,)
    assert sink.mask.tolist() == [False, True, True, False, True, True]
    sink.close()
    monkeypatch.setattr(
        tp, "MM_BLOCK_BYTES", 64
    )  # a wide feature: blocks bounded in bytes (64 B = 2 x 8 floats)
    wide = EmbeddingSink(tmp_path, "82", 6, 8)
    assert _RowBatch(wide).block == 2
    wide.abort()


# ---- progress lines ----------------------------------------------------------------------------------------
def test_steps_and_heartbeat_lines(caplog):
    log = logging.getLogger("recstack.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        steps = Steps(log, "prepare")
        assert steps.done("read seq.jsonl", users=1_000_000, layout="platform") >= 0
        beat = Heartbeat(log, "reading seq.jsonl", every=3600)
        assert not beat.beat(users=5)
        beat.every = 0
        assert beat.beat(users=12_345)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("[prepare] read seq.jsonl: users=1,000,000, layout=platform (")
    assert lines[0].endswith("s in all)") and len(lines) == 2
    assert lines[1].startswith("reading seq.jsonl: users=12,345 so far (")


def test_read_platform_logs_each_step(tmp_path, caplog):
    write_platform(tiny_tgr(), tmp_path / "raw", {"82": 8})
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.INFO):
        read_platform(tmp_path / "raw", tmp_path / "out", mm_feats=("81",))
    text = "\n".join(r.getMessage() for r in caplog.records)
    for step in ("read indexer.pkl: users=6", "read candidates predict_set.jsonl: candidates=12, cold=1",
                 "read seq.jsonl: users=6", "read predict_seq.jsonl: users=2", "wrote the user tables",
                 "read the item features", "wrote the item and candidate tables", "read emb_81 (32-d)"):  # fmt: skip
        assert f"[prepare] {step}" in text, step


def test_an_indexer_whose_item_map_does_not_fit_the_candidates_is_refused(tmp_path):
    """A shuffled 'i' map passes every per-file check (each creative id maps to some re-id), but the
    candidates' own features then disagree with item_feat_dict.json's for the re-ids it gives them."""
    import pickle

    from recstack.data.builders.synthetic_tgr import build_and_write
    from recstack.data.raw.tencentgr import FEATURE_AGREEMENT_MIN
    from test_synthetic_tgr import CFG

    root = tmp_path / "raw"
    build_and_write(CFG, root)
    fig = read_platform(root, tmp_path / "ok", True, mm_feats=tuple(CFG.mm_feats), emb_dims=dict(CFG.mm_dims))
    assert fig["candidates_feature_agreement"] == 1.0  # the builder's own indexer: every candidate agrees
    idx = pickle.loads((root / "indexer.pkl").read_bytes())
    cids = list(idx["i"])
    reids = np.random.default_rng(0).permutation([idx["i"][c] for c in cids]).tolist()
    idx["i"] = dict(zip(cids, reids, strict=True))
    (root / "indexer.pkl").write_bytes(pickle.dumps(idx))
    with pytest.raises(DataError, match=r"predict_set\.jsonl: only \d+ of \d+ candidates \(\d+\.\d%\) have the "
                                        r"features item_feat_dict\.json gives their item through .*indexer\.pkl"):  # fmt: skip
        read_platform(root, tmp_path / "bad", True, mm_feats=tuple(CFG.mm_feats), emb_dims=dict(CFG.mm_dims))
    assert not (tmp_path / "bad" / "items.parquet").exists() and FEATURE_AGREEMENT_MIN == 0.5
