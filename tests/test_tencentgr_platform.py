"""TencentGR platform layout: the real demo files, restricted unpickling, round trip, and bad input."""

import pickle

import numpy as np
import orjson
import pandas as pd
import pytest

from recstack.data.raw import safe_pickle
from recstack.data.raw.tencentgr_platform import (
    SeqParser,
    _Counts,
    iter_json_lines,
    load_indexer,
    read_platform,
    write_platform,
)
from recstack.errors import DataError
from recstack.paths import PreparedTGR

from conftest import FIXTURES, needs_fixtures
from tgr_helpers import tiny_tgr

DEMO = FIXTURES / "tencentgr_demo"
EMB_DIMS = {"82": 8}


# ---- the real demo files -------------------------------------------------------------------------------
@needs_fixtures
def test_real_indexer_loads_through_the_restricted_unpickler():
    idx = load_indexer(DEMO / "indexer.pkl")
    assert len(idx["u"]) == 865 and len(idx["i"]) == 58_734 and len(idx["f"]) == 22
    assert type(idx["f"]).__name__ == "defaultdict"
    assert len(safe_pickle.load(DEMO / "seq_offsets.pkl")) == 865


def _parse(strict: bool):
    counts = _Counts()
    parser = SeqParser(DEMO / "seq.txt", 865, 58_734, counts)
    for no, recs in iter_json_lines(DEMO / "seq.txt", strict, counts):
        parser.line(no, recs)
    return parser, counts


@needs_fixtures
def test_real_seq_first_line_and_truncated_second_line():
    with pytest.raises(DataError, match=r"seq\.txt line 2: truncated record"):
        _parse(strict=True)
    parser, counts = _parse(strict=False)
    ev = parser.take()
    assert len(ev) == 97 and (ev.action == 0).sum() == 91 and (ev.action == 1).sum() == 6
    assert np.all(np.diff(ev.ts) >= 0)
    ((user, profile),) = parser.profiles.items()
    assert user == 640 and profile["106"] == [4]
    assert counts["skipped_truncated_lines"] == 1


# ---- pickles are never trusted ----------------------------------------------------------------------------
class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))  # would create a file when unpickled


def test_pickle_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    bad = tmp_path / "indexer.pkl"
    bad.write_bytes(pickle.dumps({"u": {}, "i": {}, "f": _Evil(str(target))}))
    with pytest.raises(DataError, match=r"indexer\.pkl: refused to load global (builtins|io)\.open"):
        safe_pickle.load(bad)
    assert not target.exists()


# ---- round trip ---------------------------------------------------------------------------------------
def read(tmp_path, raw=None, **kw):
    raw = raw or tiny_tgr()
    root, out = tmp_path / "raw", tmp_path / "out"
    if not root.exists():
        write_platform(raw, root, EMB_DIMS)
    out.mkdir(exist_ok=True)
    return raw, out, read_platform(root, out, mm_feats=("81", "82"), emb_dims=EMB_DIMS, **kw)


def test_round_trip(tmp_path):
    raw, out, figs = read(tmp_path)
    ev = pd.read_parquet(out / PreparedTGR.EVENTS)
    np.testing.assert_array_equal(ev["user"], raw.events.user)
    np.testing.assert_array_equal(ev["item"], raw.events.item)
    np.testing.assert_array_equal(ev["action"], raw.events.action)
    np.testing.assert_array_equal(ev["ts"], raw.events.ts)
    pe = pd.read_parquet(out / PreparedTGR.PREDICT_EVENTS)
    np.testing.assert_array_equal(pe["item"], raw.predict_events.item)
    pu = pd.read_parquet(out / PreparedTGR.PREDICT_USERS)
    assert pu["raw_user_id"].tolist() == ["user_002", "user_005"] and pu["known"].all()
    users = pd.read_parquet(out / PreparedTGR.USERS)
    np.testing.assert_array_equal(users["u103"], raw.user_sparse["103"])
    assert users["u106"].map(list).tolist()[1:] == raw.user_array["106"][1:]
    items = pd.read_parquet(out / PreparedTGR.ITEMS)
    assert len(items) == 22  # padding + 20 items + the cold candidate
    np.testing.assert_array_equal(items["creative_id"][:21], raw.creative_id)
    np.testing.assert_array_equal(items["i100"][:21], raw.item_sparse["100"])
    assert (
        items["i100"].iloc[21] == 3 and not items["in_training"].iloc[21]
    )  # pool features fill the cold item
    cand = pd.read_parquet(out / PreparedTGR.CANDIDATES)
    assert cand["item"].tolist()[-1] == 21 and cand["retrieval_id"].tolist() == list(range(12))
    assert figs["candidates_cold"] == 1 and figs["events"] == len(raw.events)
    m81 = np.load(out / PreparedTGR.mm_emb("81"))
    mask81 = np.load(out / PreparedTGR.mm_mask("81"))
    assert m81.dtype == np.float16 and m81.shape == (22, 32)
    assert mask81[1:15].all() and not mask81[15:].any()
    np.testing.assert_allclose(m81[1:15], raw.mm["81"][1][:14], atol=2e-2)
    mask82 = np.load(out / PreparedTGR.mm_mask("82"))
    assert mask82[21] and mask82[1:5].all() and figs["coverage_mm_81"] == pytest.approx(14 / 21)


# ---- bad input: file and line named, what was expected said ---------------------------------------------
def _edit_line(path, no, fn):
    lines = path.read_bytes().splitlines(keepends=True)
    lines[no - 1] = fn(lines[no - 1])
    path.write_bytes(b"".join(lines))


def _break_seq(tmp_path, fn, line=2):
    write_platform(tiny_tgr(), tmp_path / "raw", EMB_DIMS)
    _edit_line(tmp_path / "raw" / "seq.jsonl", line, fn)


def test_line_not_a_json_array(tmp_path):
    _break_seq(tmp_path, lambda b: b'{"user": 1}\n')
    with pytest.raises(DataError, match=r"seq\.jsonl line 2: expected a non-empty JSON array of records"):
        read(tmp_path)


def test_record_of_wrong_length(tmp_path):
    _break_seq(tmp_path, lambda b: b.replace(b",null,{", b",{", 1))
    with pytest.raises(DataError, match=r"seq\.jsonl line 2 record 0: expected \[user_id.*6 fields\), got 5"):
        read(tmp_path)


def test_unknown_action_type(tmp_path):
    def bad(b):
        recs = orjson.loads(b)
        recs[0][4] = 7
        return orjson.dumps(recs) + b"\n"

    _break_seq(tmp_path, bad)
    with pytest.raises(DataError, match=r"line 2 record 0: unknown action_type 7"):
        read(tmp_path)


def test_non_integer_feature_value(tmp_path):
    def bad(b):
        recs = orjson.loads(b)
        recs[-1][2]["103"] = "young"
        return orjson.dumps(recs) + b"\n"

    _break_seq(tmp_path, bad, line=3)
    with pytest.raises(DataError, match=r"line 3 record \d+ user_feature feature 103: expected an integer"):
        read(tmp_path)


def test_embedding_of_wrong_dimension(tmp_path):
    write_platform(tiny_tgr(), tmp_path / "raw", EMB_DIMS)
    part = tmp_path / "raw" / "creative_emb" / "emb_82_8" / "part-00000"
    _edit_line(part, 3, lambda b: orjson.dumps({"anonymous_cid": "20000000003", "emb": [0.5] * 7}) + b"\n")
    with pytest.raises(DataError, match=r"part-00000 line 3: embedding of length 7, expected 8"):
        read(tmp_path)


def test_candidate_without_creative_id(tmp_path):
    write_platform(tiny_tgr(), tmp_path / "raw", EMB_DIMS)
    _edit_line(tmp_path / "raw" / "predict_set.jsonl", 4, lambda b: b'{"retrieval_id": 3, "features": {}}\n')
    with pytest.raises(DataError, match=r"predict_set\.jsonl line 4: candidate without 'creative_id'"):
        read(tmp_path)


def test_predict_ids_missing_from_indexer_are_cold_not_errors(tmp_path):
    raw = tiny_tgr()
    raw.predict_events.item[0] = 999  # an item the indexer does not know
    write_platform(raw, tmp_path / "raw", EMB_DIMS)

    def unknown_user(b):
        recs = orjson.loads(b)
        for r in recs:
            r[0] = 77
        return orjson.dumps(recs) + b"\n"

    _edit_line(tmp_path / "raw" / "predict_seq.jsonl", 2, unknown_user)
    _, out, figs = read(tmp_path, raw, max_unknown_item_share=0.5)  # 1 of 3 events: tiny data
    assert figs["events_unknown_item"] == 1 and figs["predict_users_unknown"] == 1
    pu = pd.read_parquet(out / PreparedTGR.PREDICT_USERS)
    assert pu["known"].tolist() == [True, False] and pu["raw_user_id"].tolist()[1] == "77"


def test_empty_files(tmp_path):
    write_platform(tiny_tgr(), tmp_path / "raw", EMB_DIMS)
    (tmp_path / "raw" / "predict_set.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match=r"predict_set\.jsonl: no candidates \(empty file\)"):
        read(tmp_path)
    write_platform(tiny_tgr(), tmp_path / "raw", EMB_DIMS)
    (tmp_path / "raw" / "seq.jsonl").write_bytes(b"\n")
    with pytest.raises(DataError, match=r"seq\.jsonl: no records \(empty file\)"):
        read(tmp_path)


def test_lenient_mode_skips_and_counts_truncated_lines(tmp_path):
    write_platform(tiny_tgr(), tmp_path / "raw", EMB_DIMS)
    seq = tmp_path / "raw" / "seq.jsonl"
    seq.write_bytes(seq.read_bytes() + b'[[9,1,null,{"100": 1},0,17')  # a cut-off last line
    with pytest.raises(DataError, match=r"seq\.jsonl line 7: truncated record"):
        read(tmp_path)
    _, _, figs = read(tmp_path, strict=False)
    assert figs["skipped_truncated_lines"] == 1 and figs["training_users"] == 6
